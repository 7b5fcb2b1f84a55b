// The S3 store's own streamed multipart upload (src/storage/s3/multipart.ts)
// against the real S3 server (versitygw) behind the fault proxy: the bytes
// stored are the bytes sent; a part that fails for a while is retried; an
// upload that fails (a part failing for good, the source stopped, the size
// limit) leaves no object and no open multipart upload (not even when the
// server writes a cut part after the abort), and says it was a storage fault; a stalled S3 server stops the reading of the source at the
// part buffers' budget.
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { ListMultipartUploadsCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readAll } from "../../src/storage/object-store.js";
import { S3ObjectStore, type S3Options } from "../../src/storage/s3/s3-store.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";

const BUCKET = "multipart";
const MIB = 1024 * 1024;
/** S3's smallest part: 5 MiB parts make several parts of a small object. */
const PART = 5 * MIB;
let s3: S3Server;
let proxy: FaultProxy;
let direct: S3Client;
let n = 0;

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(BUCKET);
  proxy = await startFaultProxy(s3.endpoint, { seed: 11 });
  direct = new S3Client({ region: "us-east-1", endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
});

afterAll(async () => {
  direct.destroy();
  await proxy.close();
  await s3.stop();
});

afterEach(() => {
  proxy.clear();
});

function store(opts: Partial<S3Options> = {}): S3ObjectStore {
  return new S3ObjectStore({
    bucket: BUCKET,
    prefix: "p",
    endpoint: proxy.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    partSize: PART,
    queueSize: 2,
    ...opts,
  });
}

/** A fresh key per test. */
function key(): string {
  return `k${++n}-${randomBytes(3).toString("hex")}/data.bin`;
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** `data` in 1 MiB chunks (unaligned with the parts), counting what was read; `onRead` may stop it. */
function source(data: Buffer, onRead: (read: number, s: Readable) => void = () => undefined): { stream: Readable; read: () => number } {
  let off = 0;
  const stream = new Readable({
    highWaterMark: 64 * 1024,
    read() {
      if (off >= data.length) {
        this.push(null);
        return;
      }
      const chunk = data.subarray(off, Math.min(data.length, off + MIB + 123));
      off += chunk.length;
      this.push(chunk);
      onRead(off, this);
    },
  });
  return { stream, read: () => off };
}

/** The multipart uploads still open under `p/<prefix>` (none may be left after a failure). */
async function openUploads(prefix: string): Promise<string[]> {
  const res = await direct.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: `p/${prefix}` }));
  return (res.Uploads ?? []).map((u) => `${u.Key ?? ""} ${u.UploadId ?? ""}`);
}

async function rejection(p: Promise<unknown>): Promise<{ reason?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { reason?: string; message: string };
  }
  throw new Error("expected a rejection");
}

const since = (i: number) => proxy.requests.slice(i);

describe("a streamed upload", () => {
  it("of several parts stores exactly the bytes sent (sha256), as one multipart upload", async () => {
    const k = key();
    const data = randomBytes(4 * PART + 777);
    const before = proxy.requests.length;
    const put = await store().put(k, source(data).stream);
    expect(put.size).toBe(data.length);
    expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
    const reqs = since(before);
    // Create + Complete are POSTs; 5 parts (the last one short) are PUTs on the key.
    expect(reqs.filter((r) => r.op === "PUT" && r.key === `p/${k}`)).toHaveLength(5);
    expect(reqs.filter((r) => r.op === "POST" && r.key === `p/${k}`)).toHaveLength(2);
    expect(await openUploads(k)).toEqual([]);
  });

  it("of at most one part is one PutObject: empty, small, and exactly one part", async () => {
    for (const size of [0, 1000, PART]) {
      const k = key();
      const data = randomBytes(size);
      const before = proxy.requests.length;
      expect((await store().put(k, source(data).stream)).size).toBe(size);
      expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
      expect(since(before).filter((r) => r.key === `p/${k}`).map((r) => r.op)).toEqual(["PUT", "GET"]);
    }
  });

  it("takes Uint8Array and string chunks as bytes, across a part boundary", async () => {
    const k = key();
    const head = randomBytes(PART - 3);
    const text = "a string chunk: ends the first part, starts the second";
    const put = await store().put(k, Readable.from([new Uint8Array(head.buffer, head.byteOffset, head.length), text]));
    const data = Buffer.concat([head, Buffer.from(text)]);
    expect(put.size).toBe(data.length);
    expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
  });

  it("retries a part that fails for a while (resets, 503s; the SDK's own retries off): the object is whole", async () => {
    const k = key();
    const data = randomBytes(3 * PART + 5);
    proxy.add({ op: "PUT", key: `p/${k}`, times: 2, action: { kind: "reset" } });
    proxy.add({ op: "PUT", key: `p/${k}`, times: 1, action: { kind: "status", status: 503, code: "SlowDown" } });
    const before = proxy.requests.length;
    const put = await store({ maxAttempts: 1 }).put(k, source(data).stream);
    expect(put.size).toBe(data.length);
    expect(since(before).filter((r) => r.op === "PUT" && r.fault)).toHaveLength(3);
    expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
    expect(await openUploads(k)).toEqual([]);
  });

  it("a part failing for good: a storage fault, the source stops, no object, no open upload", async () => {
    const k = key();
    const data = randomBytes(40 * MIB);
    const src = source(data);
    // Part 1 goes through; every later part is refused.
    proxy.add({ op: "PUT", key: `p/${k}`, times: 1, action: { kind: "stall", ms: 0 } });
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "status", status: 500, code: "InternalError" } });
    const err = await rejection(store({ maxAttempts: 2 }).put(k, src.stream));
    expect(err.reason).toBe("StorageError");
    expect(err.message).toMatch(/S3 at .* failed writing p\/.*data\.bin: HTTP 500 InternalError/);
    expect(src.stream.destroyed).toBe(true);
    expect(src.read()).toBeLessThan(data.length);
    proxy.clear();
    expect(await store().list(k.split("/")[0] ?? "")).toEqual([]);
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });

  it("a reset on every attempt of a part is StorageUnreachable, and leaves no open upload", async () => {
    const k = key();
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "reset" } });
    const err = await rejection(store({ maxAttempts: 2 }).put(k, source(randomBytes(3 * PART)).stream));
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toMatch(/while writing p\/.*data\.bin/);
    proxy.clear();
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });

  it("the source stopped mid-upload (destroyed, as a failing backup does): its error, no object, no open upload", async () => {
    const k = key();
    const data = randomBytes(40 * MIB);
    const src = source(data, (read, s) => {
      if (read >= 3 * PART) s.destroy(new Error("the dump failed"));
    });
    const err = await rejection(store().put(k, src.stream));
    expect(err.message).toBe("the dump failed");
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });

  it("parts in flight when the source fails finish before the abort (a part cut mid-write could outlive it)", async () => {
    const k = key();
    // Part 1 reaches the server 0.8 s after it was sent: in flight when the source fails (while part 2 fills).
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "late-body", ms: 800 } });
    const src = source(randomBytes(40 * MIB), (read, s) => {
      if (read >= PART + 2 * MIB) s.destroy(new Error("the dump failed"));
    });
    const before = proxy.requests.length;
    const err = await rejection(store().put(k, src.stream));
    expect(err.message).toBe("the dump failed");
    const mine = since(before).filter((r) => r.key === `p/${k}`);
    const part = mine.find((r) => r.op === "PUT");
    const abort = mine.find((r) => r.op === "DELETE");
    expect(part?.status).toBe(200);
    expect(abort?.status).toBe(204);
    expect(part?.answeredAt).toBeLessThan(abort?.at ?? 0);
    expect(await openUploads(k)).toEqual([]);
  });

  it("a part stalled past settleMs is cut; an abort that fails is made again until S3 says the upload is gone", async () => {
    const k = key();
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "stall" } });
    // One abort's attempts fail (the SDK's own retries off, the store's three); the ListParts after it finds the
    // upload, and the abort is made again.
    proxy.add({ op: "DELETE", key: `p/${k}`, times: 3, action: { kind: "status", status: 503 } });
    const src = source(randomBytes(40 * MIB), (read, s) => {
      if (read >= PART + 2 * MIB) s.destroy(new Error("the dump failed"));
    });
    const before = proxy.requests.length;
    const err = await rejection(store({ settleMs: 200, maxAttempts: 1 }).put(k, src.stream));
    expect(err.message).toBe("the dump failed");
    const aborts = since(before).filter((r) => r.key === `p/${k}` && r.op === "DELETE");
    expect(aborts.map((r) => r.status)).toEqual([503, 503, 503, 204]);
    expect(await openUploads(k)).toEqual([]);
  });

  it("the size limit (the part count) fails early with the fix, and aborts the upload", async () => {
    const k = key();
    const src = source(randomBytes(40 * MIB));
    const err = await rejection(store({ maxParts: 3 }).put(k, src.stream));
    expect(err.reason).toBe("ObjectTooLarge");
    expect(err.message).toMatch(/object larger than ~15\.0 MiB without a size hint; pass --expected-size/);
    expect(src.read()).toBeLessThan(20 * MIB);
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });

  it("holds at most queue + 1 part buffers: with the S3 server's answers held, it stops reading the source there", async () => {
    const k = key();
    const data = randomBytes(60 * MIB);
    const src = source(data);
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "stall" } });
    const uploading = store({ queueSize: 2 }).put(k, src.stream);
    const held = (): number => proxy.requests.filter((r) => r.key === `p/${k}` && r.op === "PUT").length;
    // Wait for all three buffers to be parts held at the proxy (two queued, and the third, full, sent while the source waits), then for the reading to settle.
    for (let i = 0; i < 600 && held() < 3; i++) await new Promise((r) => setTimeout(r, 50));
    await new Promise((r) => setTimeout(r, 500));
    expect(held()).toBe(3);
    // Three parts' worth, plus the chunk waiting for a buffer and the source's own small buffer (1 MiB chunks).
    expect(src.read()).toBeGreaterThan(3 * PART);
    expect(src.read()).toBeLessThanOrEqual(3 * PART + 3 * MIB);
    proxy.clear();
    expect((await uploading).size).toBe(data.length);
    expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
  });
});
