import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FsObjectStore } from "./fs-store.js";
import { SyncedFileWriter } from "./synced-writer.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "synced-writer-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

/** Chunks of uneven sizes, as a pipe delivers them. */
function chunksOf(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < data.length; i++) {
    const n = [65536, 1, 300_000, 4096, 1_048_577][i % 5] ?? 1;
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

describe("SyncedFileWriter", () => {
  it("writes every byte in order while syncing in the background", async () => {
    const data = randomBytes(5 * 1024 * 1024 + 123);
    const file = path.join(dir, "out");
    const w = new SyncedFileWriter(file, { syncEvery: 256 * 1024 });
    await pipeline(Readable.from(chunksOf(data)), w);
    expect(sha(await readFile(file))).toBe(sha(data));
    // Every 256 KiB a sync is due; at most one runs at a time, so some are skipped, but not all.
    expect(w.stats.backgroundSyncs).toBeGreaterThan(0);
  });

  it("is create-only with flags wx: an existing file is an error, and it is left as it was", async () => {
    const file = path.join(dir, "exists");
    await writeFile(file, "keep");
    const w = new SyncedFileWriter(file, { flags: "wx" });
    await expect(pipeline(Readable.from([Buffer.from("new")]), w)).rejects.toMatchObject({ code: "EEXIST" });
    expect(await readFile(file, "utf8")).toBe("keep");
  });

  it("a failing source fails the write (the store then removes its temp file)", async () => {
    const store = new FsObjectStore(dir);
    const src = new Readable({
      read() {
        this.push(randomBytes(1024 * 1024));
        this.destroy(new Error("the dump died"));
      },
    });
    await expect(store.put("c/b/data", src)).rejects.toThrow(/the dump died/);
    expect(await store.list("c/")).toEqual([]);
  });

  it("the store's put round-trips a large object through it", async () => {
    const store = new FsObjectStore(dir);
    const data = randomBytes(3 * 1024 * 1024);
    const r = await store.put("c/b/data.zst", Readable.from(chunksOf(data)));
    expect(r.size).toBe(data.length);
    const back: Buffer[] = [];
    for await (const c of await store.get("c/b/data.zst")) back.push(c as Buffer);
    expect(sha(Buffer.concat(back))).toBe(sha(data));
  });
});
