// Child processes for the mariabackup method, on lib/exec's spawnTool:
// stderr is read line by line as it arrives and only its last lines are
// kept (`mariabackup --backup` writes a line per copied file, megabytes on a
// server with many tables, and the position lines this method needs come at
// the very end); a failure is summarized from those lines.
import type { Readable, Writable } from "node:stream";
import { failed } from "../../lib/errors.js";
import { spawnTool } from "../../lib/exec.js";
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
    onLine: (raw) => {
      // mariabackup prints SHOW GRANTS when a privilege is missing: no password hashes in logs.
      const clean = raw.replace(/\b(IDENTIFIED (?:BY|VIA|WITH)\b).*$/i, "$1 [redacted]");
      const line = clean.length > 2000 ? `${clean.slice(0, 2000)}...` : clean;
      lines.push(line);
      if (lines.length > TAIL_LINES) lines.shift();
      opts.onLine?.(line);
    },
  });
  const done = (async () => {
    const r = await child.exit;
    if (!r.notFound && r.exitCode === 0) return;
    if (r.notFound) {
      throw failed("CommandNotFound", `${command} is not installed (needed to ${opts.what}); install it or put it on PATH`);
    }
    const why = r.canceled ? "cancelled" : r.signal ? `killed by ${r.signal}` : `exit code ${String(r.exitCode)}`;
    const line = (opts.summarize ?? lastErrorLine)(lines);
    throw failed("CommandFailed", `${command} failed to ${opts.what} (${why})${line ? `: ${line}` : ""}`, {
      detail: lines.slice(-40).join("\n"),
    });
  })();
  // The caller may only look at `done` later; never an unhandled rejection.
  done.catch(() => undefined);
  return {
    stdout: child.stdout,
    stdin: child.stdin,
    done,
    tail: () => [...lines],
    kill: () => { child.kill(); },
  };
}
