// Child processes for the mariabackup method, on lib/exec's spawnTool:
// stderr is read line by line as it arrives and only its last lines are
// kept (`mariabackup --backup` writes a line per copied file, megabytes on a
// server with many tables, and the position lines this method needs come at
// the very end); a failure is summarized from those lines. Password hashes
// (SHOW GRANTS, printed when a privilege is missing) never reach a log.
import type { Readable, Writable } from "node:stream";
import { redactPasswords, spawnTool } from "../../lib/exec.js";
import { lastErrorLine } from "./parse.js";

export interface Tool {
  stdout: Readable | null;
  stdin: Writable | null;
  /** Resolves when the tool exits 0 (after every stderr line was seen); rejects with CommandFailed otherwise. */
  done: Promise<void>;
  /** The last stderr lines seen so far. */
  tail(): string[];
  kill(): void;
}

const TAIL_LINES = 200;

export function runTool(
  command: string,
  args: string[],
  opts: {
    what: string;
    stdin?: "pipe" | "ignore";
    /** A Writable that wraps a pipe (another child's stdin) connects the two children directly. */
    stdout?: "pipe" | "ignore" | Writable;
    signal?: AbortSignal | undefined;
    onLine?: (line: string) => void;
    /** The one line that says why the tool failed (default: the last error-like line). */
    summarize?: (lines: string[]) => string;
  },
): Tool {
  const lines: string[] = [];
  const child = spawnTool(command, args, {
    what: opts.what,
    stdin: opts.stdin ?? "ignore",
    stdout: opts.stdout ?? "pipe",
    signal: opts.signal,
    // mariabackup prints SHOW GRANTS when a privilege is missing: no password hashes in logs.
    redact: (raw) => {
      const clean = redactPasswords(raw);
      return clean.length > 2000 ? `${clean.slice(0, 2000)}...` : clean;
    },
    onLine: (line) => {
      lines.push(line);
      if (lines.length > TAIL_LINES) lines.shift();
      opts.onLine?.(line);
    },
    // The one line of a failure comes from the last lines, read as mariabackup's log.
    summarize: () => (opts.summarize ?? lastErrorLine)(lines),
  });
  return {
    stdout: child.stdout,
    stdin: child.stdin,
    done: child.done,
    tail: () => [...lines],
    kill: () => { child.kill(); },
  };
}
