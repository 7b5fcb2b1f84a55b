// The same contract, run against the filesystem backend and a real S3
// server (versitygw): streaming put/get, atomic visibility, listing,
// deletion, multipart uploads, and errors that say what is wrong.
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readAll, type ObjectStore } from "../../src/storage/object-store.js";
import { openRepository } from "../../src/storage/open.js";
import { startS3, type S3Server } from "../harness/s3.js";

let s3: S3Server;
let fsRoot: string;
const saved: Record<string, string | undefined> = {};

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket("contract");
  for (const [k, v] of Object.entries(s3.env)) {
    saved[k] = process.env[k];
    process.env[k] = v;
  }
  fsRoot = await mkdtemp(path.join(tmpdir(), "replicator-fs-contract-"));
});

afterAll(async () => {
  for (const [k, v] of Object.entries(saved)) {
    if (v === undefined) Reflect.deleteProperty(process.env, k);
    else process.env[k] = v;
  }
  await s3.stop();
});

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** A stream of `total` random bytes in 1 MiB chunks, without holding them all. */
function randomStream(total: number, hash: ReturnType<typeof createHash>): Readable {
  let left = total;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, 1024 * 1024);
      left -= n;
      const chunk = randomBytes(n);
      hash.update(chunk);
      this.push(chunk);
    },
  });
}

const backends: [string, () => Promise<ObjectStore>][] = [
  ["filesystem", () => openRepository(`file://${fsRoot}`)],
  ["s3", () => openRepository("s3://contract/some/prefix")],
];

describe.each(backends)("%s backend", (_name, open) => {
  it("round-trips a streamed object, lists by prefix in key order, and deletes", async () => {
    const store = await open();
    await store.check();
    const body = randomBytes(300_000);
    expect((await store.put("c1/b2/data.bin", Readable.from([body.subarray(0, 1000), body.subarray(1000)]))).size).toBe(body.length);
    await store.put("c1/b1/manifest.json", "{}");
    await store.put("c2/other", Buffer.from("x"));
    expect(sha(await readAll(await store.get("c1/b2/data.bin")))).toBe(sha(body));
    expect((await store.list("c1/")).map((o) => [o.key, o.size])).toEqual([
      ["c1/b1/manifest.json", 2],
      ["c1/b2/data.bin", 300_000],
    ]);
    expect((await store.head("c1/b2/data.bin"))?.size).toBe(300_000);
    expect(await store.head("c1/nope")).toBeUndefined();
    await store.delete(["c1/b2/data.bin", "c1/never-existed"]);
    expect((await store.list("c1/")).map((o) => o.key)).toEqual(["c1/b1/manifest.json"]);
    await expect(store.get("c1/b2/data.bin")).rejects.toMatchObject({ reason: "NotFound" });
  });

  it("streams a 40 MiB object (multipart on S3) without corruption", async () => {
    const store = await open();
    const h = createHash("sha256");
    const put = await store.put("big/data.bin", randomStream(40 * 1024 * 1024, h));
    expect(put.size).toBe(40 * 1024 * 1024);
    const got = createHash("sha256");
    for await (const chunk of await store.get("big/data.bin")) got.update(chunk as Buffer);
    expect(got.digest("hex")).toBe(h.digest("hex"));
    await store.delete(["big/data.bin"]);
  });

  it("never shows a half-written object: a failed upload leaves nothing", async () => {
    const store = await open();
    const failing = new Readable({
      read() {
        this.push(randomBytes(64 * 1024));
        this.destroy(new Error("source died"));
      },
    });
    await expect(store.put("half/data.bin", failing)).rejects.toThrow(/source died/);
    expect(await store.list("half/")).toEqual([]);
  });
});

describe("filesystem specifics", () => {
  it("leaves no temp files behind and removes emptied directories", async () => {
    const store = await openRepository(`file://${fsRoot}`);
    await store.put("tidy/a/b/data", "x");
    await store.delete(["tidy/a/b/data"]);
    expect(await readdir(fsRoot)).not.toContain("tidy");
  });
});

describe("S3 errors", () => {
  it("names the missing bucket and bad credentials", async () => {
    await expect((await openRepository("s3://missing-bucket/p")).check()).rejects.toThrow('S3 bucket "missing-bucket" does not exist');
    const prev = process.env.AWS_SECRET_ACCESS_KEY;
    process.env.AWS_SECRET_ACCESS_KEY = "wrong";
    try {
      await expect((await openRepository("s3://contract/p")).check()).rejects.toMatchObject({ reason: "AccessDenied" });
    } finally {
      process.env.AWS_SECRET_ACCESS_KEY = prev;
    }
    await expect(openRepository("s3://AK:SK@contract/p")).rejects.toThrow(/credentials in the repository URL are not allowed/);
  });
});
