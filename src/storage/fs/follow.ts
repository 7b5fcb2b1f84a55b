// Reading a file while another process writes it (the zstd tool writing a
// backup straight into a file:// repository): from the page cache, through
// one reused buffer, until the writer has ended and the end is read.
import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

export interface FollowOptions {
  /** The read buffer, reused for every read (default 4 MiB). */
  bufferSize?: number;
  /** How long to wait when nothing new is there yet (default 20 ms; the writer's end wakes it at once). */
  pollMs?: number;
}

/**
 * Calls `onBytes` with every byte of `file` in order, as it grows, until
 * `ended` has settled and a read finds nothing more; the byte count. The
 * buffer `onBytes` gets is reused after it returns: copy what must be kept.
 */
export async function followFile(file: string, ended: Promise<unknown>, onBytes: (bytes: Buffer) => void, opts: FollowOptions = {}): Promise<number> {
  const writer = { done: false };
  const settled = ended.then(
    () => { writer.done = true; },
    () => { writer.done = true; },
  );
  const fh = await open(file, "r");
  const buf = Buffer.allocUnsafe(opts.bufferSize ?? 4 * 1024 * 1024);
  let pos = 0;
  try {
    for (;;) {
      // Seen before the read: a read after the writer's end that finds nothing is the end.
      const wasDone = writer.done;
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead > 0) {
        pos += bytesRead;
        onBytes(buf.subarray(0, bytesRead));
        continue;
      }
      if (wasDone) return pos;
      await Promise.race([sleep(opts.pollMs ?? 20), settled]);
    }
  } finally {
    await fh.close();
  }
}
