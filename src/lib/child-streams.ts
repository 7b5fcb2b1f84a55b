// Stream helpers for tool children (lib/exec's spawnTool): a tool's stdout
// that ends only once the tool has exited 0 (so that a failed dump can never
// be stored as a complete-looking object), and a loader's stdin fed from a
// stream (so that a failed input stops the loader before it sees an EOF).
import { PassThrough, Readable, type Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { isReplicatorError } from "./errors.js";
import type { StreamingChild } from "./exec.js";

/**
 * The child's stdout (through `through`, e.g. a scanner, if given) as a
 * stream that ends when the child exits 0 and fails with the child's error
 * otherwise. `done` settles with the child (its error mapped by `mapError`)
 * after the output has been handed on; it is pre-caught.
 */
export function outputOf(
  child: Pick<StreamingChild, "stdout" | "done" | "kill">,
  mapError: (err: unknown) => unknown = (err) => err,
  through: Transform[] = [],
): { stream: PassThrough; done: Promise<void> } {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  const stdout = child.stdout;
  if (!stdout) throw new Error("child has no stdout");
  const done = (async () => {
    const exited = child.done.catch((err: unknown) => {
      throw mapError(err);
    });
    try {
      await Promise.all([pipeline([stdout, ...through, out], { end: false }), exited]);
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
 * source wins over the loader's complaint about what it was fed; otherwise
 * the child's error (mapped by `mapError`) wins over the broken pipe it caused.
 */
export async function feedChild(
  child: Pick<StreamingChild, "stdin" | "done" | "kill">,
  source: Readable | AsyncIterable<Buffer | string>,
  mapError: (err: unknown) => unknown = (err) => err,
): Promise<void> {
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
  if (done.status === "rejected") throw mapError(done.reason);
  if (feed.status === "rejected") throw feed.reason;
}
