// Compression. zstd (the default) runs as the zstd tool (`zstd -T0`, every
// core, about 1.6x faster than zlib's single-threaded zstd even on one), fed
// and drained through OS pipes by the agent (see backup.ts and restore.ts).
// Node's own zlib is the fallback when the tool is not installed (said once,
// in a warning), and does gzip. Both write the same format: a stored object
// is one zstd frame with a content checksum, readable with the stock tool.
import zlib from "node:zlib";
import { PassThrough, type Transform } from "node:stream";
import { badInput } from "../lib/errors.js";
import { spawnTool } from "../lib/exec.js";
import type { Logger } from "../lib/log.js";
import type { Compression } from "../storage/catalog.js";

/** The zstd level of every backup (zlib and the tool alike). */
export const ZSTD_LEVEL = 3;

export function compressionExtension(c: Compression): string {
  switch (c) {
    case "zstd":
      return ".zst";
    case "gzip":
      return ".gz";
    case "none":
      return "";
  }
}

export function parseCompression(v: unknown): Compression {
  if (v === "zstd" || v === "gzip" || v === "none") return v;
  throw badInput("InvalidOption", `compression must be zstd, gzip or none (got ${JSON.stringify(v)})`);
}

export function createCompressor(c: Compression, level?: number): Transform {
  switch (c) {
    case "zstd":
      return zlib.createZstdCompress({
        chunkSize: 256 * 1024,
        params: {
          [zlib.constants.ZSTD_c_compressionLevel]: level ?? ZSTD_LEVEL,
          [zlib.constants.ZSTD_c_checksumFlag]: 1,
        },
      });
    case "gzip":
      return zlib.createGzip({ level: level ?? 6, chunkSize: 256 * 1024 });
    case "none":
      return new PassThrough({ highWaterMark: 1024 * 1024 });
  }
}

export function createDecompressor(c: Compression): Transform {
  switch (c) {
    case "zstd":
      return zlib.createZstdDecompress({ chunkSize: 256 * 1024 });
    case "gzip":
      return zlib.createGunzip({ chunkSize: 256 * 1024 });
    case "none":
      return new PassThrough({ highWaterMark: 1024 * 1024 });
  }
}

/** The zstd tool's name; a test may point it elsewhere. */
export const ZSTD_COMMAND = "zstd";

let zstdProbe: Promise<boolean> | undefined;

/**
 * Whether the zstd tool runs (`zstd --version`), asked once per process.
 * When it does not, the first caller logs one warning: compression falls
 * back to Node's zlib, which is slower but writes the same format.
 */
export function zstdToolAvailable(log: Logger): Promise<boolean> {
  zstdProbe ??= (async () => {
    const probe = spawnTool(ZSTD_COMMAND, ["--version"], { stdout: "ignore", what: "report its version" });
    const ok = await probe.done.then(() => true, (err: unknown) => {
      log.warn(
        { err },
        "the zstd tool is not usable: zstd (de)compression runs in-process with Node's zlib instead, about 1.6x slower and on one core; install zstd (Debian: apt-get install zstd) for full speed",
      );
      return false;
    });
    return ok;
  })();
  return zstdProbe;
}

/**
 * Pure: the zstd tool's arguments to compress stdin to stdout. The tool
 * writes a content checksum by default, as the zlib path does. `-vv` makes it
 * print the exact byte counts at the end, which is how the raw size is known
 * without the raw bytes passing through the agent.
 */
export function buildZstdCompressArgs(level: number = ZSTD_LEVEL): string[] {
  return [`-${String(level)}`, "-T0", "-c", "-vv", "--no-progress"];
}

/** Pure: the zstd tool's arguments to decompress stdin to stdout, printing the raw byte count at the end. */
export function buildZstdDecompressArgs(): string[] {
  return ["-d", "-c", "-v", "--no-progress"];
}

/**
 * Pure: the byte counts zstd printed at the end of a compression, raw and
 * compressed, from its stderr (`-vv`): "(4052632 B => 3054469 B, ...)" since
 * 1.5, "(4052632 => 3054469 bytes, ...)" before. Undefined when absent.
 */
export function parseZstdCompressSummary(stderr: string): { raw: number; compressed: number } | undefined {
  const all = [...stderr.matchAll(/\(\s*(\d+)(?: B)? => \s*(\d+)(?: B| bytes), /g)];
  const m = all.at(-1);
  if (!m?.[1] || !m[2]) return undefined;
  return { raw: Number(m[1]), compressed: Number(m[2]) };
}

/** Pure: the raw byte count zstd printed at the end of a decompression (`-v`): "...: 4052632 bytes". */
export function parseZstdDecompressSummary(stderr: string): number | undefined {
  const all = [...stderr.matchAll(/: (\d+) bytes\s*$/gm)];
  const m = all.at(-1);
  return m?.[1] ? Number(m[1]) : undefined;
}

/** Pure: whether a failed zstd decompression was about its input (a corrupt or cut object), not its output going away. */
export function isZstdInputError(exit: { exitCode: number | null; signal: string | null; canceled: boolean; stderr: string }): boolean {
  // A negative code is a failed start (ENOENT), a signal a kill or a broken pipe: not about the input.
  if (exit.canceled || exit.signal !== null || exit.exitCode === null || exit.exitCode <= 0) return false;
  return !/Broken pipe|Write error|cannot write/i.test(exit.stderr);
}

/**
 * Decompresses the start of a zstd stream, fed chunk by chunk, until `limit`
 * raw bytes are out; then stops decompressing (the rest of the stream costs
 * nothing). `result` resolves with those bytes (fewer for a shorter stream,
 * or what there was when fed `abort()`); it never rejects.
 */
export class ZstdHeadReader {
  readonly result: Promise<Buffer>;
  private readonly decoder = zlib.createZstdDecompress({ chunkSize: 64 * 1024 });
  private readonly chunks: Buffer[] = [];
  private have = 0;
  private fed = 0;
  private closed = false;
  private resolve!: (b: Buffer) => void;

  constructor(private readonly limit: number) {
    this.result = new Promise<Buffer>((resolve) => {
      this.resolve = resolve;
    });
    this.decoder.on("data", (chunk: Buffer) => {
      if (this.closed) return;
      this.chunks.push(chunk);
      this.have += chunk.length;
      if (this.have >= this.limit) this.finish();
    });
    this.decoder.once("end", () => { this.finish(); });
    this.decoder.once("error", () => { this.finish(); });
  }

  /** Whether `feed` still uses what it is given (a caller that reuses its buffer copies only then). */
  get wanting(): boolean {
    return !this.closed && this.fed < this.limit + 256 * 1024;
  }

  /** A chunk of the compressed stream, in order. Cheap once the head is complete. */
  feed(chunk: Buffer): void {
    if (this.closed) return;
    // Compressed bytes never outnumber raw ones by more than a block's header:
    // past this many, the head is in what was fed already.
    if (this.fed >= this.limit + 256 * 1024) return;
    this.fed += chunk.length;
    this.decoder.write(chunk);
    if (this.fed >= this.limit + 256 * 1024) this.decoder.end();
  }

  /** The compressed stream ended: what was decompressed is the head. */
  end(): void {
    if (!this.closed && !this.decoder.writableEnded) this.decoder.end();
  }

  /** The stream failed: resolve with what there is. */
  abort(): void {
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.decoder.destroy();
    this.resolve(Buffer.concat(this.chunks).subarray(0, this.limit));
  }
}
