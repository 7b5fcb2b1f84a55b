// Child processes for the mariabackup method. Unlike lib/exec's
// spawnStreaming, stderr is read line by line as it arrives and only its
// tail is kept: `mariabackup --backup` writes a line per copied file (a
// server with many tables writes megabytes), and the position lines this
// method needs come at the very end.
import { once } from "node:events";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { execa, type ResultPromise } from "execa";
import { failed } from "../../lib/errors.js";
import { childEnvOptions } from "../../lib/exec.js";
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
    stdout?: "pipe" | "ignore";
    signal?: AbortSignal | undefined;
    onLine?: (line: string) => void;
    /** The one line that says why the tool failed (default: the last error-like line). */
    summarize?: (lines: string[]) => string;
  },
): Tool {
  let child: ResultPromise;
  try {
    child = execa(command, args, {
      stdin: opts.stdin ?? "ignore",
      stdout: opts.stdout ?? "pipe",
      stderr: "pipe",
      buffer: false,
      reject: false,
      encoding: "buffer",
      ...childEnvOptions(),
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  const lines: string[] = [];
  const stderr = child.stderr;
  const linesDone = stderr
    ? (async () => {
        const rl = createInterface({ input: stderr, crlfDelay: Infinity });
        rl.on("line", (raw) => {
          // mariabackup prints SHOW GRANTS when a privilege is missing: no password hashes in logs.
          const clean = raw.replace(/\b(IDENTIFIED (?:BY|VIA|WITH)\b).*$/i, "$1 [redacted]");
          const line = clean.length > 2000 ? `${clean.slice(0, 2000)}...` : clean;
          lines.push(line);
          if (lines.length > TAIL_LINES) lines.shift();
          opts.onLine?.(line);
        });
        await once(rl, "close");
      })()
    : Promise.resolve();
  const done = (async () => {
    const r = await child;
    await linesDone.catch(() => undefined);
    if (!r.failed) return;
    if ((r as { code?: string }).code === "ENOENT") {
      throw failed("CommandNotFound", `${command} is not installed (needed to ${opts.what}); install it or put it on PATH`);
    }
    const why = r.isCanceled ? "cancelled" : r.signal ? `killed by ${r.signal}` : `exit code ${String(r.exitCode)}`;
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
    kill: () => child.kill("SIGTERM"),
  };
}
