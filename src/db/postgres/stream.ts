// Stream plumbing shared by the PostgreSQL methods: a tool's stdout that
// ends only once the tool has exited 0 (so that a failed dump can never be
// stored as a complete-looking object), and a loader's stdin fed from a
// stream (so that a failed input stops the loader before it sees an EOF).
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { execa, type ResultPromise } from "execa";
import { failed, isReplicatorError, tail } from "../../lib/errors.js";
import { childEnvOptions, type StreamingChild } from "../../lib/exec.js";
import { errorLine } from "./client.js";

/**
 * The child's stdout as a stream that ends when the child exits 0 and fails
 * with the child's error otherwise. `done` settles with the child (its
 * error mapped by `mapError`) after the output has been handed on.
 */
export function outputOf(child: StreamingChild, mapError: (err: unknown) => unknown): { stream: PassThrough; done: Promise<void> } {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const stdout = child.stdout;
  if (!stdout) throw new Error("child has no stdout");
  const done = (async () => {
    const exited = child.done.catch((err: unknown) => {
      throw mapError(err);
    });
    try {
      await Promise.all([pipeline(stdout, out, { end: false }), exited]);
    } catch (err) {
      child.kill();
      // Prefer the tool's own error over the broken pipe it caused.
      const toolErr = await exited.then(() => undefined, (e: unknown) => e);
      const cause = toolErr ?? err;
      out.destroy(cause as Error);
      throw cause;
    }
    out.end();
  })();
  // The caller awaits `done`; avoid an unhandled rejection in the meantime.
  done.catch(() => undefined);
  return { stream: out, done };
}

/**
 * Feed `source` to the child's stdin and wait for both. The child is killed
 * (before its stdin is closed) when the source fails, so that a loader never
 * takes a cut-short input for a complete one. A CorruptBackup from the
 * source wins over the loader's complaint about what it was fed.
 */
export async function feedChild(child: StreamingChild, source: Readable | AsyncIterable<Buffer | string>): Promise<void> {
  const stdin = child.stdin;
  if (!stdin) throw new Error("child has no stdin");
  const input = source instanceof Readable ? source : Readable.from(source);
  // Kill first: pipeline destroys stdin on error, which the child would read as EOF.
  input.once("error", () => { child.kill(); });
  const feeding = pipeline(input, stdin).catch((err: unknown) => {
    child.kill();
    throw err;
  });
  const [feed, done] = await Promise.allSettled([feeding, child.done]);
  if (feed.status === "rejected" && isReplicatorError(feed.reason) && feed.reason.reason === "CorruptBackup") throw feed.reason;
  if (done.status === "rejected") throw betterLoaderError(done.reason);
  if (feed.status === "rejected") throw feed.reason;
}

/** A loader's CommandFailed names the line that says what went wrong (psql prints context lines after it). */
export function betterLoaderError(err: unknown): unknown {
  if (!isReplicatorError(err) || err.reason !== "CommandFailed" || !err.detail) return err;
  const line = errorLine(err.detail).replace(/^psql:<stdin>:\d+:\s*/, "");
  const head = err.message.replace(/\)(: .*)?$/, ")");
  return failed("CommandFailed", line ? `${head}: ${line}` : err.message, { detail: err.detail, cause: err });
}

/**
 * Like spawnStreaming, but `stderr` also resolves with the tool's stderr
 * when it succeeds: pg_basebackup -v reports the backup's WAL positions
 * there.
 */
export function spawnWithStderr(
  command: string,
  args: string[],
  opts: { env: Record<string, string>; signal?: AbortSignal; what: string },
): StreamingChild & { stderr: Promise<string> } {
  let child: ResultPromise;
  try {
    child = execa(command, args, {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      buffer: { stdout: false, stderr: true },
      maxBuffer: { stderr: 4 * 1024 * 1024 },
      reject: false,
      ...childEnvOptions(opts.env),
      encoding: "buffer",
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
    });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  const result = (async () => {
    const r = await child;
    const stderr = r.stderr instanceof Uint8Array ? Buffer.from(r.stderr).toString("utf8") : String(r.stderr ?? "");
    if (!r.failed) return stderr;
    if ((r as { code?: string }).code === "ENOENT") {
      throw failed("CommandNotFound", `${command} is not installed (needed to ${opts.what}); install the PostgreSQL client tools or put them on PATH`);
    }
    const why = r.isCanceled ? "cancelled" : r.signal ? `killed by ${r.signal}` : `exit code ${String(r.exitCode)}`;
    const line = errorLine(stderr).replace(/^[\w-]+: error: /, "");
    throw failed("CommandFailed", `${command} failed to ${opts.what} (${why})${line ? `: ${line}` : ""}`, { detail: tail(stderr, 1500) });
  })();
  const done = result.then(() => undefined);
  // Callers await one or both; neither may become an unhandled rejection.
  result.catch(() => undefined);
  done.catch(() => undefined);
  return {
    stdout: child.stdout,
    stdin: null,
    done,
    stderr: result,
    kill: () => child.kill("SIGTERM"),
  };
}
