// The input of one loading client, decoupled from the backup stream.
//
// A parallel backup's stream interleaves its parts in the order they were
// dumped, not the order the target can load them: a part whose rows are
// cheap to dump but dear to load (more indexes, smaller rows) comes faster
// than its client takes it. Written straight into the clients, the stream
// would wait on the slowest one and leave the others idle. So each client has
// a feed: a few MiB in memory, then the rest of its backlog in a spill file
// (a temporary directory, removed after the restore), drained in order by the
// feed's own pump. The reader waits only when all feeds' spilled backlog
// passes a limit (the budget), and then only until the feed it writes to has
// drained its own backlog.
import { open, rm, type FileHandle } from "node:fs/promises";
import { once } from "node:events";
import { join } from "node:path";
import type { Writable } from "node:stream";
import { failed } from "../../lib/errors.js";
import { formatBytes } from "../../storage/catalog.js";

/** In-memory backlog of one feed before it spills (at most). */
export const FEED_MEMORY_BYTES = 4 * 1024 * 1024;
/** In-memory backlog of all the feeds of one restore together (at most). */
export const FEEDS_MEMORY_BYTES = 64 * 1024 * 1024;
const READ_BYTES = 1024 * 1024;

/** The client exited before its input was written: its own exit says why. */
export class SinkGone extends Error {
  constructor() {
    super("the client exited before its part of the backup was loaded");
  }
}

/** The spill budget shared by the feeds of one restore. */
export class SpillBudget {
  pending = 0;
  /** Each feed's in-memory share: FEED_MEMORY_BYTES, less when many feeds run at once. */
  memoryPerFeed = FEED_MEMORY_BYTES;
  constructor(readonly limit: number) {}

  /** Share FEEDS_MEMORY_BYTES between `feeds` feeds (256 KiB each at least). */
  shareMemory(feeds: number): void {
    this.memoryPerFeed = Math.max(256 * 1024, Math.min(FEED_MEMORY_BYTES, Math.floor(FEEDS_MEMORY_BYTES / Math.max(1, feeds))));
  }
}

export class PartFeed {
  private readonly mem: Buffer[] = [];
  private memBytes = 0;
  private file: FileHandle | undefined;
  private fileWritten = 0;
  private fileRead = 0;
  private ended = false;
  private wake: (() => void) | undefined;
  private drainedWaiters: (() => void)[] = [];
  private failure: Error | undefined;
  /** Appends to and truncations of the spill file, one at a time. */
  private fileOps: Promise<void> = Promise.resolve();
  private gone = false;
  /** Resolves when everything pushed was written and the sink was ended; rejects on the sink's failure. */
  readonly done: Promise<void>;

  constructor(
    private readonly sink: Writable,
    /** Resolves when the sink's reader is gone (the client exited). */
    private readonly sinkGone: Promise<unknown>,
    private readonly spillPath: string,
    private readonly budget: SpillBudget,
  ) {
    void sinkGone.then(() => { this.gone = true; });
    this.done = this.pump();
    this.done.catch((err: unknown) => { this.failure = err instanceof Error ? err : new Error(String(err)); for (const w of this.drainedWaiters.splice(0)) w(); });
  }

  /** Bytes not yet written into the sink, in memory and in the spill file. */
  get backlog(): number {
    return this.memBytes + (this.fileWritten - this.fileRead);
  }

  /** Queue `bytes` (copied: the caller may reuse its buffer). Waits only when the restore's spill budget is spent. */
  async push(bytes: Buffer): Promise<void> {
    this.throwIfFailed();
    if (this.ended) throw new Error("push after end");
    if (bytes.length === 0) return;
    const spilled = this.fileWritten - this.fileRead;
    if (spilled === 0 && this.memBytes + bytes.length <= this.budget.memoryPerFeed) {
      this.mem.push(Buffer.from(bytes));
      this.memBytes += bytes.length;
    } else if (this.budget.limit <= 0 || this.budget.pending + bytes.length > this.budget.limit) {
      // No room on disk: wait until this feed has written its backlog, then queue in memory.
      await this.drained();
      this.throwIfFailed();
      this.mem.push(Buffer.from(bytes));
      this.memBytes += bytes.length;
    } else {
      const copy = Buffer.from(bytes);
      await this.fileOp(async () => {
        this.file ??= await open(this.spillPath, "w+");
        await this.file.write(copy, 0, copy.length, this.fileWritten);
        this.fileWritten += copy.length;
        this.budget.pending += copy.length;
      }).catch((err: unknown) => {
        throw failed("SpillFailed", `could not keep ${formatBytes(copy.length)} for a loading client in ${this.spillPath} (${err instanceof Error ? err.message : String(err)}); give the temporary directory (TMPDIR) more room, or lower methodOptions.spillMb (0: keep nothing on disk)`, { cause: err });
      });
    }
    this.wake?.();
  }

  /** No more bytes: the pump ends the sink when it has written the backlog. */
  end(): void {
    this.ended = true;
    this.wake?.();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  private fileOp(op: () => Promise<void>): Promise<void> {
    const next = this.fileOps.then(op);
    this.fileOps = next.catch(() => undefined);
    return next;
  }

  /** Stop: drop the backlog and end the sink (the restore failed). */
  abort(): void {
    this.mem.length = 0;
    this.memBytes = 0;
    this.budget.pending -= this.fileWritten - this.fileRead;
    this.fileRead = this.fileWritten;
    this.ended = true;
    this.wake?.();
  }

  /** Resolves when the backlog is empty (or the feed failed). */
  private drained(): Promise<void> {
    if (this.backlog === 0 || this.failure !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }

  private async write(chunk: Buffer): Promise<void> {
    if (!this.gone && this.sink.write(chunk)) return;
    if (!this.gone) await Promise.race([once(this.sink, "drain"), this.sinkGone]);
    if (this.gone) throw new SinkGone();
  }

  private async pump(): Promise<void> {
    try {
      for (;;) {
        const chunk = this.mem.shift();
        if (chunk) {
          this.memBytes -= chunk.length;
          await this.write(chunk);
          continue;
        }
        if (this.fileRead < this.fileWritten && this.file) {
          const n = Math.min(READ_BYTES, this.fileWritten - this.fileRead);
          const buf = Buffer.allocUnsafe(n);
          const { bytesRead } = await this.file.read(buf, 0, n, this.fileRead);
          if (bytesRead === 0) throw new Error(`the spill file ${this.spillPath} ended early`);
          this.fileRead += bytesRead;
          this.budget.pending -= bytesRead;
          await this.write(bytesRead === n ? buf : buf.subarray(0, bytesRead));
          continue;
        }
        // Empty: reuse the spill file from its start, unless an append came in meanwhile.
        if (this.file && this.fileWritten > 0) {
          await this.fileOp(async () => {
            if (this.file && this.fileRead === this.fileWritten) {
              this.fileWritten = 0;
              this.fileRead = 0;
              await this.file.truncate(0);
            }
          });
        }
        // Nothing between this check and the wait yields, so no push's wake-up is lost.
        if (this.backlog > 0) continue;
        for (const w of this.drainedWaiters.splice(0)) w();
        if (this.ended) break;
        await new Promise<void>((resolve) => { this.wake = resolve; });
        this.wake = undefined;
      }
      this.sink.end();
    } finally {
      await this.close();
    }
  }

  private async close(): Promise<void> {
    await this.fileOps;
    const f = this.file;
    this.file = undefined;
    this.budget.pending -= this.fileWritten - this.fileRead;
    this.fileWritten = this.fileRead = 0;
    if (f) {
      await f.close().catch(() => undefined);
      await rm(this.spillPath, { force: true });
    }
  }
}

/** Pure: the spill file of part `id` in `dir`. */
export function spillFile(dir: string, id: number): string {
  return join(dir, `part-${id}.sql`);
}
