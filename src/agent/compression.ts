// Stream compression with Node's own zlib: zstd (default) and gzip. No
// external process, so the agent image needs no zstd binary.
import zlib from "node:zlib";
import { PassThrough, type Transform } from "node:stream";
import { badInput } from "../lib/errors.js";
import type { Compression } from "../storage/catalog.js";

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
          [zlib.constants.ZSTD_c_compressionLevel]: level ?? 3,
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
