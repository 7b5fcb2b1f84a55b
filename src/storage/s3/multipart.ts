// A streamed upload into S3 in a fixed, small amount of memory: a multipart
// upload whose parts are the source's own chunks, held as they came (a chunk
// that spans two parts is split by a view, not copied), at most
// `queueSize + 1` parts at once (one filling while up to `queueSize` upload;
// all of them uploading while the source waits for one), each let go as soon
// as its UploadPart is done: at most (queueSize + 1) × partSize bytes of parts
// whatever the object's size. No byte is copied in this process: each attempt
// of a part streams the same chunks again.
//
// What the server checks, computed as the chunks arrive (no second pass): the
// part's CRC32 when the SDK's checksums are on (its default), and, when the
// payload is signed (`signPayload`: over http, where nothing else protects the
// bytes), its sha256 as the signed x-amz-content-sha256. Over https the
// payload is sent UNSIGNED-PAYLOAD, as the AWS CLI does: TLS protects it in
// transit and the CRC32 against corruption, and neither side hashes it twice.
//
// The object appears whole or not at all: only CompleteMultipartUpload makes
// it visible. On any failure (a part that fails after its retries, the source
// stream erroring or destroyed, the size limit) the source is destroyed with
// the error, the parts in flight are given `settleMs` to finish and then
// cancelled, the upload is aborted (AbortMultipartUpload) until S3 says it is
// gone, and the error is thrown: the source's own error as it is, a storage
// one mapped (StorageUnreachable / StorageError).
//
// Why the parts are let finish first, and the abort confirmed: a part request
// the client cuts may still be written by the server after the abort (S3's own
// documentation says an upload may need aborting more than once; versitygw
// re-creates the upload's directory when such a part lands, which is how an
// open upload was once left behind). A part that finished before the abort
// cannot do that. Only a part stalled past `settleMs` is cut; for what that
// may leave, a bucket lifecycle rule (AbortIncompleteMultipartUpload) is the
// backstop.
//
// An object that fits in one part is one PutObject, as before.
import {
  AbortMultipartUploadCommand,
  ChecksumAlgorithm,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListPartsCommand,
  PutObjectCommand,
  UploadPartCommand,
  type CompletedPart,
  type S3Client,
} from "@aws-sdk/client-s3";
import { createHash, type Hash } from "node:crypto";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { crc32 as zlibCrc32 } from "node:zlib";
import { failed, type ReplicatorError } from "../../lib/errors.js";

export interface StreamUploadTarget {
  client: S3Client;
  bucket: string;
  /** The object's full key (with the store's prefix). */
  key: string;
}

export interface StreamUploadOptions {
  /** Bytes per part (S3: at least 5 MiB, except the last). */
  partSize: number;
  /** Parts uploading at once; one more part may be filling. */
  queueSize: number;
  /** The most bytes the object may hold (part size × S3's part limit): one more byte fails with `tooLarge()`. */
  limit: number;
  tooLarge: () => ReplicatorError;
  /** An SDK error as the store reports it (StorageUnreachable, StorageError, AccessDenied...). */
  mapError: (err: unknown) => ReplicatorError;
  /** Runs a request again while it fails with a transient (mapped) fault: the store's policy. */
  retry: <T>(fn: () => Promise<T>) => Promise<T>;
  /** Sign each part's payload (its sha256 in x-amz-content-sha256): over http. Over https the payload goes UNSIGNED-PAYLOAD. */
  signPayload: boolean;
  /**
   * Runs one part's request again while it fails with a transient fault. A part's
   * body is a stream the SDK does not send twice, so this is all its retrying.
   */
  retryPart: <T>(fn: () => Promise<T>) => Promise<T>;
  /** On a failure, how long the parts in flight may finish before they are cut (default 5 s). */
  settleMs?: number | undefined;
}

export interface StreamUploadResult {
  size: number;
  /** 0 for a single PutObject. */
  parts: number;
}

/** Peak bytes of parts one upload holds. */
export function partBufferBytes(partSize: number, queueSize: number): number {
  return partSize * (queueSize + 1);
}

function reasonOf(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error("upload cancelled");
}

/** A fixed number of parts held at once (filling or uploading); a part takes one before it fills and gives it back when its upload is done. */
class Slots {
  private readonly waiting: { resolve: () => void }[] = [];
  private used = 0;

  constructor(private readonly max: number) {}

  take(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(reasonOf(signal));
    if (this.used < this.max) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = (): void => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(reasonOf(signal));
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiting.push(w);
    });
  }

  give(): void {
    const w = this.waiting.shift();
    if (w) w.resolve();
    else this.used--;
  }
}

/** One part: the source's chunks as they came (views, never copied), and what is known of their bytes. */
class Part {
  readonly chunks: Buffer[] = [];
  len = 0;
  private crc = 0;
  private readonly sha: Hash | undefined;

  constructor(
    private readonly crc32: boolean,
    sha256: boolean,
  ) {
    this.sha = sha256 ? createHash("sha256") : undefined;
  }

  add(b: Buffer): void {
    this.chunks.push(b);
    this.len += b.length;
    if (this.crc32) this.crc = zlibCrc32(b, this.crc);
    this.sha?.update(b);
  }

  /** The CRC32 as S3's x-amz-checksum-crc32 carries it (base64 of 4 big-endian bytes). */
  crc32Base64(): string | undefined {
    if (!this.crc32) return undefined;
    const b = Buffer.alloc(4);
    b.writeUInt32BE(this.crc >>> 0);
    return b.toString("base64");
  }

  /** The SigV4 payload hash (hex sha256), when the payload is signed. Once only. */
  sha256Hex(): string | undefined {
    return this.sha?.digest("hex");
  }

  /** A new stream of the same bytes, for each attempt. */
  body(): Readable {
    return Readable.from(this.chunks, { objectMode: false });
  }

  concat(): Buffer {
    return this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks, this.len);
  }
}

/** A middleware that sets the payload hash the signer then signs, instead of hashing a body it cannot read twice. */
function withPayloadHash<C extends UploadPartCommand>(command: C, hex: string | undefined): C {
  if (hex === undefined) return command;
  command.middlewareStack.add(
    (next) => async (args) => {
      const req = args.request as { headers?: Record<string, string> };
      if (req.headers) req.headers["x-amz-content-sha256"] = hex;
      return next(args);
    },
    { step: "build", name: "replicatorPayloadHash" },
  );
  return command;
}

/**
 * Upload `body` to `target.key`: one PutObject when it fits in one part, else
 * a multipart upload with up to `queueSize` parts in flight.
 */
export async function uploadStream(body: Readable, target: StreamUploadTarget, o: StreamUploadOptions): Promise<StreamUploadResult> {
  const { client, bucket, key } = target;
  const slots = new Slots(o.queueSize + 1);
  /** Stops the filling (a wait for a free slot) at the first failure. */
  const stop = new AbortController();
  /** Cuts the part requests still in flight once they had their time to finish. */
  const cut = new AbortController();
  const inflight = new Set<Promise<void>>();
  const done: CompletedPart[] = [];
  // As lib-storage did: with the SDK's default checksums on, the parts carry CRC32s and the upload says so.
  const checksums = (await client.config.requestChecksumCalculation()) === "WHEN_SUPPORTED";
  let failure: { err: unknown } | undefined;
  let creating: Promise<string> | undefined;
  let size = 0;
  let partNo = 0;
  let cur: Part | undefined;

  const fail = (err: unknown): void => {
    if (failure) return;
    failure = { err };
    stop.abort(err);
    // Destroyed with the error itself (not a bare premature close): whoever pipes into `body` learns the storage side failed.
    if (!body.destroyed && !body.readableEnded) body.destroy(err instanceof Error ? err : new Error(String(err)));
  };

  /** A request, mapped and retried; a part (`cancellable`) is not tried again once the upload is failing. */
  const storage = async <T>(fn: () => Promise<T>, cancellable = false, retry = o.retry): Promise<T> =>
    retry(async () => {
      try {
        return await fn();
      } catch (err) {
        // Not transient: no retry of a request the failing upload cancelled.
        if (cancellable && failure) throw new Error("upload cancelled", { cause: err });
        throw o.mapError(err);
      }
    });

  const create = async (): Promise<string> => {
    // Never cancelled: an upload the server did create must be known, to be aborted.
    const res = await storage(() =>
      client.send(new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, ...(checksums ? { ChecksumAlgorithm: ChecksumAlgorithm.CRC32 } : {}) })),
    );
    if (!res.UploadId) throw failed("StorageError", `S3 returned no upload id for ${key}`);
    return res.UploadId;
  };

  const dispatch = (part: Part, n: number): void => {
    const crc = part.crc32Base64();
    const sha = part.sha256Hex();
    const p = (async () => {
      try {
        const uploadId = await (creating ??= create());
        const res = await storage(
          () =>
            client.send(
              withPayloadHash(
                new UploadPartCommand({
                  Bucket: bucket,
                  Key: key,
                  UploadId: uploadId,
                  PartNumber: n,
                  Body: part.body(),
                  ContentLength: part.len,
                  ...(crc !== undefined ? { ChecksumCRC32: crc } : {}),
                }),
                sha,
              ),
              { abortSignal: cut.signal },
            ),
          true,
          o.retryPart,
        );
        if (!res.ETag) throw failed("StorageError", `S3 returned no ETag for part ${n} of ${key}`);
        done.push({
          PartNumber: n,
          ETag: res.ETag,
          ...(res.ChecksumCRC32 ? { ChecksumCRC32: res.ChecksumCRC32 } : {}),
          ...(res.ChecksumCRC32C ? { ChecksumCRC32C: res.ChecksumCRC32C } : {}),
          ...(res.ChecksumCRC64NVME ? { ChecksumCRC64NVME: res.ChecksumCRC64NVME } : {}),
          ...(res.ChecksumSHA1 ? { ChecksumSHA1: res.ChecksumSHA1 } : {}),
          ...(res.ChecksumSHA256 ? { ChecksumSHA256: res.ChecksumSHA256 } : {}),
        });
      } catch (err) {
        fail(err);
      } finally {
        slots.give();
      }
    })();
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };

  try {
    for await (const chunk of body as AsyncIterable<Buffer | Uint8Array | string>) {
      if (failure) break;
      const bytes = Buffer.isBuffer(chunk) ? chunk : typeof chunk === "string" ? Buffer.from(chunk) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      size += bytes.length;
      if (size > o.limit) {
        fail(o.tooLarge());
        break;
      }
      let off = 0;
      while (off < bytes.length) {
        // A full part goes out only once a further byte shows it is not the last: an object of exactly one part stays one PutObject.
        if (cur && cur.len === o.partSize) {
          dispatch(cur, ++partNo);
          cur = undefined;
        }
        if (!cur) {
          await slots.take(stop.signal);
          cur = new Part(checksums, o.signPayload);
        }
        const n = Math.min(bytes.length - off, o.partSize - cur.len);
        cur.add(off === 0 && n === bytes.length ? bytes : bytes.subarray(off, off + n));
        off += n;
      }
    }
  } catch (err) {
    // The source's own error, or the echo of fail() (the body destroyed, a wait cancelled).
    fail(err);
  }

  if (!failure && partNo === 0) {
    // It fits in one part: one PutObject (an empty body included).
    const data = cur ? cur.concat() : Buffer.alloc(0);
    try {
      await storage(() => client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: data, ContentLength: data.length })));
      return { size, parts: 0 };
    } catch (err) {
      fail(err);
    }
  }
  if (!failure && cur) dispatch(cur, ++partNo);
  // On a failure the parts in flight may finish (a part done before the abort cannot outlive it); a stalled one is cut after settleMs.
  const failing = failure;
  const cutStalled = failing
    ? setTimeout(() => {
        cut.abort(failing.err);
      }, o.settleMs ?? 5000)
    : undefined;
  while (inflight.size > 0) await Promise.allSettled([...inflight]);
  clearTimeout(cutStalled);

  if (!failure) {
    try {
      const uploadId = await (creating ?? Promise.reject(new Error("unreachable: parts were uploaded without an upload")));
      await complete(target, uploadId, done.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0)), size, storage);
      return { size, parts: partNo };
    } catch (err) {
      fail(err);
    }
  }

  // Nothing was made visible: abort the upload so its parts do not linger.
  if (creating) {
    const uploadId = await creating.catch(() => undefined);
    if (uploadId !== undefined) await discard(target, uploadId, storage);
  }
  throw (failure as { err: unknown }).err;
}

/**
 * AbortMultipartUpload until ListParts answers NoSuchUpload, a few times at
 * most. Best effort: it never hides the upload's own error.
 */
async function discard(t: StreamUploadTarget, uploadId: string, storage: <T>(fn: () => Promise<T>) => Promise<T>): Promise<void> {
  const ref = { Bucket: t.bucket, Key: t.key, UploadId: uploadId };
  for (let i = 0; i < 4; i++) {
    if (i > 0) await sleep(200 * 2 ** (i - 1));
    await storage(() => t.client.send(new AbortMultipartUploadCommand(ref))).catch(() => undefined);
    const gone = await storage(() => t.client.send(new ListPartsCommand({ ...ref, MaxParts: 1 }))).then(
      () => false,
      // NoSuchUpload: gone. Any other failure cannot tell, and ends the asking rather than spin on the failure path.
      () => true,
    );
    if (gone) return;
  }
}

/**
 * CompleteMultipartUpload. A retried Complete whose first attempt did land
 * finds its upload gone (NoSuchUpload): the object is then there, with the
 * size that was sent, and that is success.
 */
async function complete(
  t: StreamUploadTarget,
  uploadId: string,
  parts: CompletedPart[],
  size: number,
  storage: <T>(fn: () => Promise<T>) => Promise<T>,
): Promise<void> {
  let attempts = 0;
  try {
    await storage(() => {
      attempts++;
      return t.client.send(new CompleteMultipartUploadCommand({ Bucket: t.bucket, Key: t.key, UploadId: uploadId, MultipartUpload: { Parts: parts } }));
    });
  } catch (err) {
    const cause = (err as { cause?: { name?: string; Code?: string; $metadata?: { attempts?: number } } }).cause;
    const retried = attempts > 1 || (cause?.$metadata?.attempts ?? 1) > 1;
    if (!retried || (cause?.name ?? cause?.Code) !== "NoSuchUpload") throw err;
    const head = await storage(() => t.client.send(new HeadObjectCommand({ Bucket: t.bucket, Key: t.key }))).catch(() => undefined);
    if (head?.ContentLength !== size) throw err;
  }
}
