// The S3 store's own streamed multipart upload (src/storage/s3/multipart.ts)
// against the real S3 server (versitygw) behind the fault proxy: the bytes
// stored are the bytes sent; a part that fails for a while is retried; an
// upload that fails (a part failing for good, the source stopped, the size
// limit) leaves no object and no open multipart upload (not even when the
// server writes a cut part after the abort), and says it was a storage fault; a stalled S3 server stops the reading of the source at the
// parts' budget. What the server checks of each part: over http its signed
// sha256, over https (the proxy ending TLS) its CRC32, the payload unsigned;
// a byte changed on the way is refused either way.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import tls from "node:tls";
import { crc32 } from "node:zlib";
import { ListMultipartUploadsCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { readAll } from "../../src/storage/object-store.js";
import { S3ObjectStore, type S3Options } from "../../src/storage/s3/s3-store.js";
import { runCli } from "../harness/cli.js";
import { makePrivateCa, type PrivateCa } from "../harness/tls.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";

const BUCKET = "multipart";
const MIB = 1024 * 1024;
/** S3's smallest part: 5 MiB parts make several parts of a small object. */
const PART = 5 * MIB;
let s3: S3Server;
let proxy: FaultProxy;
/** The same proxy's rules and log, serving https with a certificate this process trusts. */
let tlsProxy: FaultProxy;
let direct: S3Client;
/** Holds the proxy's certificate (cert.pem) for the CLI's NODE_EXTRA_CA_CERTS. */
let tlsDir: string;
let n = 0;

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(BUCKET);
  proxy = await startFaultProxy(s3.endpoint, { seed: 11 });
  // A self-signed certificate for 127.0.0.1, added to this process's trusted CAs (as NODE_EXTRA_CA_CERTS would for the CLI).
  tlsDir = mkdtempSync(path.join(tmpdir(), "replicator-tls-"));
  const dir = tlsDir;
  {
    execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")], { stdio: "pipe" });
    const cert = readFileSync(path.join(dir, "cert.pem"), "utf8");
    tls.setDefaultCACertificates([...tls.getCACertificates("default"), cert]);
    tlsProxy = await startFaultProxy(s3.endpoint, { seed: 12, tls: { key: readFileSync(path.join(dir, "key.pem"), "utf8"), cert } });
  }
  direct = new S3Client({ region: "us-east-1", endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
});

afterAll(async () => {
  direct.destroy();
  await tlsProxy.close();
  await proxy.close();
  rmSync(tlsDir, { recursive: true, force: true });
  await s3.stop();
});

afterEach(() => {
  proxy.clear();
  tlsProxy.clear();
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

  it("holds at most queue + 1 parts: with the S3 server's answers held, it stops reading the source there", async () => {
    const k = key();
    const data = randomBytes(60 * MIB);
    const src = source(data);
    proxy.add({ op: "PUT", key: `p/${k}`, action: { kind: "stall" } });
    const uploading = store({ queueSize: 2 }).put(k, src.stream);
    const held = (): number => proxy.requests.filter((r) => r.key === `p/${k}` && r.op === "PUT").length;
    // Wait for all three parts to be held at the proxy (two queued, and the third, full, sent while the source waits), then for the reading to settle.
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

/** The UploadPart requests for `k` (part number and headers), in part order. */
function partRequests(p: FaultProxy, from: number, k: string): { n: number; headers: Record<string, string | string[] | undefined>; fault?: string | undefined }[] {
  return p.requests
    .slice(from)
    .filter((r) => r.op === "PUT" && r.key === `p/${k}` && r.url.includes("partNumber="))
    .map((r) => ({ n: Number(new URL(r.url, "http://x").searchParams.get("partNumber")), headers: r.headers, fault: r.fault }))
    .sort((a, b) => a.n - b.n);
}

function crc32Base64(b: Buffer): string {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(crc32(b));
  return out.toString("base64");
}

describe("what the server checks of each part", () => {
  const viaTls = (opts: Partial<S3Options> = {}): S3ObjectStore => store({ endpoint: tlsProxy.endpoint, ...opts });

  it("over http: the payload is signed, its sha256 and CRC32 those of the part's bytes", async () => {
    const k = key();
    const data = randomBytes(3 * PART + 4321);
    const before = proxy.requests.length;
    expect((await store().put(k, source(data).stream)).size).toBe(data.length);
    const parts = partRequests(proxy, before, k);
    expect(parts.map((p) => p.n)).toEqual([1, 2, 3, 4]);
    for (const p of parts) {
      const bytes = data.subarray((p.n - 1) * PART, p.n * PART);
      expect(p.headers["x-amz-content-sha256"]).toBe(sha(bytes));
      expect(p.headers["x-amz-checksum-crc32"]).toBe(crc32Base64(bytes));
    }
    expect(sha(await readAll(await store().get(k)))).toBe(sha(data));
  });

  it("over http: a byte changed on the way is refused by the signature, not stored; the upload is aborted", async () => {
    const k = key();
    proxy.add({ op: "PUT", key: `p/${k}`, times: 1, action: { kind: "corrupt" } });
    const err = await rejection(store().put(k, source(randomBytes(3 * PART)).stream));
    expect(err.reason).toBe("StorageError");
    expect(err.message).toMatch(/failed writing p\/k.*XAmzContentSHA256Mismatch/);
    expect(proxy.requests.filter((r) => r.key === `p/${k}` && r.fault === "corrupt")).toHaveLength(1);
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });

  it("over https: the payload is sent unsigned with its CRC32, and the object is whole", async () => {
    const k = key();
    const data = randomBytes(2 * PART + 99);
    const before = tlsProxy.requests.length;
    expect((await viaTls().put(k, source(data).stream)).size).toBe(data.length);
    const parts = partRequests(tlsProxy, before, k);
    expect(parts.map((p) => p.n)).toEqual([1, 2, 3]);
    for (const p of parts) {
      expect(p.headers["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
      expect(p.headers["x-amz-checksum-crc32"]).toBe(crc32Base64(data.subarray((p.n - 1) * PART, p.n * PART)));
    }
    expect(sha(await readAll(await viaTls().get(k)))).toBe(sha(data));
  });

  it("over https: a byte changed after TLS is refused by the part's CRC32, not stored; the upload is aborted", async () => {
    const k = key();
    tlsProxy.add({ op: "PUT", key: `p/${k}`, times: 1, action: { kind: "corrupt" } });
    const err = await rejection(viaTls().put(k, source(randomBytes(3 * PART)).stream));
    expect(err.reason).toBe("StorageError");
    expect(err.message).toMatch(/failed writing p\/k.*BadDigest: The CRC32/);
    expect(tlsProxy.requests.filter((r) => r.key === `p/${k}` && r.fault === "corrupt")).toHaveLength(1);
    expect(await store().head(k)).toBeUndefined();
    expect(await openUploads(k)).toEqual([]);
  });
});

describe("an https endpoint, from the CLI", () => {
  const list = (env: Record<string, string> = {}) =>
    runCli(["list", "--repository", `s3://${BUCKET}/cli-tls`, "--s3-endpoint", tlsProxy.endpoint], { ...s3.env, AWS_ENDPOINT_URL_S3: tlsProxy.endpoint, NODE_EXTRA_CA_CERTS: undefined as unknown as string, ...env });

  it("a certificate signed by a CA the process does not know: exit 2, one line that names the fix (NODE_EXTRA_CA_CERTS)", async () => {
    const r = await list();
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n")).toEqual([
      expect.stringMatching(/^replicator list: S3 endpoint https:\/\/127\.0\.0\.1:\d+ presented a TLS certificate this process does not trust \(self-signed certificate\); if a private CA signed it, set NODE_EXTRA_CA_CERTS to that CA's PEM file \(on Kubernetes: the ReplicatorRepository's spec\.s3\.caSecret\)$/),
    ]);
  });

  it("with NODE_EXTRA_CA_CERTS naming that CA, the same command reaches the store", async () => {
    const before = tlsProxy.requests.length;
    const r = await list({ NODE_EXTRA_CA_CERTS: path.join(tlsDir, "cert.pem") });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(`no backups in s3://${BUCKET}/cli-tls`);
    expect(tlsProxy.requests.slice(before).some((q) => q.op === "LIST" && q.status === 200)).toBe(true);
  });
});

describe("a store given a private CA (what the operator does with spec.s3.caSecret)", () => {
  let ca: PrivateCa;
  let other: PrivateCa;
  let caProxy: FaultProxy;
  beforeAll(async () => {
    ca = makePrivateCa(["127.0.0.1"]);
    other = makePrivateCa(["127.0.0.1"], "another CA");
    caProxy = await startFaultProxy(s3.endpoint, { seed: 13, tls: { key: ca.keyPem, cert: ca.certPem } });
  });
  afterAll(async () => {
    await caProxy.close();
    ca.remove();
    other.remove();
  });
  const viaCa = (opts: Partial<S3Options> = {}) => store({ endpoint: caProxy.endpoint, ...opts });

  it("without the CA: UntrustedCertificate, one line with the caller's hint; nothing is written", async () => {
    const k = key();
    const err = await rejection(viaCa({ untrustedHint: "name it in spec.s3.caSecret" }).put(k, Buffer.from("x")));
    expect(err.reason).toBe("UntrustedCertificate");
    expect(err.message).toMatch(/^S3 endpoint https:\/\/127\.0\.0\.1:\d+ presented a TLS certificate this process does not trust \(unable to verify the first certificate\); name it in spec\.s3\.caSecret$/);
    expect(await store().head(k)).toBeUndefined();
  });

  it("with the CA: a multipart upload and its download over https, byte for byte; the process's own CAs still trusted", async () => {
    const k = key();
    const data = randomBytes(2 * PART + 5);
    expect((await viaCa({ ca: ca.caPem }).put(k, source(data).stream)).size).toBe(data.length);
    expect(sha(await readAll(await viaCa({ ca: ca.caPem }).get(k)))).toBe(sha(data));
    // The CA is added to the defaults, not put in their place: the first proxy's certificate (in this process's defaults) still passes.
    expect((await store({ endpoint: tlsProxy.endpoint, ca: ca.caPem }).head(k))?.size).toBe(data.length);
  });

  it("with another CA: still untrusted, never retried as a network fault", async () => {
    const before = caProxy.requests.length;
    const err = await rejection(viaCa({ ca: other.caPem }).list(""));
    expect(err.reason).toBe("UntrustedCertificate");
    // The TLS handshake failed: no request reached the proxy's handler.
    expect(caProxy.requests.length).toBe(before);
  });
});
