// Child processes for the data path. A child failure becomes a
// CommandFailed error with the command (never its secrets: credentials go in
// files, not argv), the exit code and the tail of stderr.
import { execa, type ResultPromise } from "execa";
import type { Readable, Writable } from "node:stream";
import { failed, tail } from "./errors.js";

export interface StreamingChild {
  /** stdout, when the child was started with `stdout: "pipe"`. */
  stdout: Readable | null;
  stdin: Writable | null;
  /** Resolves when the child exits 0; rejects with CommandFailed otherwise. */
  done: Promise<void>;
  kill(): void;
}

export function spawnStreaming(
  command: string,
  args: string[],
  opts: { stdin?: "pipe" | "ignore"; stdout?: "pipe" | "ignore"; signal?: AbortSignal; env?: Record<string, string>; what: string },
): StreamingChild {
  let child: ResultPromise;
  try {
    child = execa(command, args, {
      stdin: opts.stdin ?? "ignore",
      stdout: opts.stdout ?? "pipe",
      stderr: "pipe",
      // stderr is not buffered by execa (its maxBuffer would kill a chatty
      // tool such as mariabackup, which logs a line per file); its tail is kept below.
      buffer: false,
      reject: false,
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
      env: opts.env,
      extendEnv: true,
      encoding: "buffer",
    });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  let stderrTail = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderrTail = (stderrTail + chunk.toString("utf8")).slice(-8192);
  });
  const done = (async () => {
    const r = await child;
    if (r.failed) {
      const errTail = tail(stderrTail, 1500);
      const code = (r as { code?: string }).code;
      if (code === "ENOENT") {
        throw failed("CommandNotFound", `${command} is not installed (needed to ${opts.what}); install it or put it on PATH`);
      }
      const lastLine = errTail.split("\n").filter((l) => l.trim()).pop() ?? "";
      const why = r.isCanceled ? "cancelled" : r.signal ? `killed by ${r.signal}` : `exit code ${String(r.exitCode)}`;
      throw failed("CommandFailed", `${command} failed to ${opts.what} (${why})${lastLine ? `: ${lastLine.trim()}` : ""}`, {
        detail: errTail,
      });
    }
  })();
  return {
    stdout: child.stdout,
    stdin: child.stdin,
    done,
    kill: () => child.kill("SIGTERM"),
  };
}
