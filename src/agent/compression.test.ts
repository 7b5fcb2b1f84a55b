import { execFileSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import {
  buildZstdCompressArgs,
  isZstdInputError,
  parseZstdCompressSummary,
  parseZstdDecompressSummary,
  ZstdHeadReader,
} from "./compression.js";

describe("zstd tool summaries", () => {
  it("reads the exact raw and compressed counts of zstd 1.5 (-vv) and 1.4", () => {
    const v15 = "Using stdin for input \n/*stdin*\\            : 75.37%   (4052632 B => 3054469 B, /*stdout*\\) \n/*stdin*\\            : Completed in 0.06 sec  (cpu load : 55%)\n";
    expect(parseZstdCompressSummary(v15)).toEqual({ raw: 4052632, compressed: 3054469 });
    const v14 = "/*stdin*\\            : 75.37%   (4052632 => 3054469 bytes, /*stdout*\\) \n";
    expect(parseZstdCompressSummary(v14)).toEqual({ raw: 4052632, compressed: 3054469 });
    // -v alone scales the sizes: not exact, so not taken.
    expect(parseZstdCompressSummary("/*stdin*\\ : 75.37%   (  3.86 MiB =>   2.91 MiB, /*stdout*\\)\n")).toBeUndefined();
  });

  it("reads the raw count of a decompression", () => {
    expect(parseZstdDecompressSummary("*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***\n/*stdin*\\           : 4052632 bytes \n")).toBe(4052632);
    expect(parseZstdDecompressSummary("zstd: /*stdin*\\: unexpected end of file \n")).toBeUndefined();
  });

  it("tells a bad input from a broken pipe, a kill and a failed start", () => {
    const base = { exitCode: 1, signal: null, canceled: false };
    expect(isZstdInputError({ ...base, stderr: "/*stdin*\\ : Decoding error (36) : Corrupted block detected" })).toBe(true);
    expect(isZstdInputError({ ...base, stderr: "zstd: error 70 : Write error : cannot write block : Broken pipe" })).toBe(false);
    expect(isZstdInputError({ ...base, exitCode: null, signal: "SIGPIPE", stderr: "" })).toBe(false);
    expect(isZstdInputError({ ...base, canceled: true, stderr: "" })).toBe(false);
    expect(isZstdInputError({ ...base, exitCode: -2, stderr: "spawn zstd ENOENT" })).toBe(false);
  });
});

describe("ZstdHeadReader", () => {
  const raw = Buffer.from(Array.from({ length: 200_000 }, (_, i) => `-- line ${i}\n`).join(""));
  const compressed = execFileSync("zstd", buildZstdCompressArgs(3).filter((a) => a !== "-vv"), { input: raw, maxBuffer: 1 << 28 });

  it("gives the first bytes of the raw stream, fed in small chunks", async () => {
    const r = new ZstdHeadReader(100_000);
    for (let i = 0; i < compressed.length; i += 4096) r.feed(compressed.subarray(i, i + 4096));
    r.end();
    const head = await r.result;
    expect(head.equals(raw.subarray(0, 100_000))).toBe(true);
  });

  it("gives a shorter stream whole, and what there was on abort", async () => {
    const small = execFileSync("zstd", ["-c"], { input: Buffer.from("CHANGE MASTER TO MASTER_LOG_FILE='b.1', MASTER_LOG_POS=4;\n") });
    const r = new ZstdHeadReader(1 << 20);
    r.feed(small);
    r.end();
    expect((await r.result).toString()).toContain("MASTER_LOG_POS=4");
    const a = new ZstdHeadReader(1 << 20);
    a.feed(compressed.subarray(0, 10));
    a.abort();
    expect((await a.result).length).toBe(0);
  });
});
