// The S3 throughput part of `make bench` (BENCH_ONLY=s3 runs it alone):
// upload and download MB/s of the same bytes (a BENCH_SIZE_MB file of random
// bytes, which compress like a zstd backup: not at all) through replicator's
// S3 store (src/storage/s3/s3-store.ts and multipart.ts: a multipart upload
// with parts sized from the expected size, filled in place in a fixed pool of
// part buffers, several uploading at once; a download with resume) against
// the S3 server alone: the AWS SDK's plain PutObject/GetObject (the baseline),
// and curl (one PUT/GET with SigV4, no checksum: about the least a client can
// cost). Everything in one versitygw on 127.0.0.1, in paired rounds
// (BENCH_RUNS). The store and the SDK run in this process; curl is its own.
//
// BENCH_S3_VARIANTS="PART_MIB:QUEUE,..." adds store rows with an explicit
// part size and queue size (e.g. "8:7,16:2,16:3"), to tune the defaults: the
// store holds QUEUE + 1 part buffers (PART_MIB × (QUEUE + 1) MiB).
import { randomFillSync } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, readFile } from "node:fs/promises";
import path from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from "@aws-sdk/client-s3";
import { queueSizeFor, S3ObjectStore } from "../src/storage/s3/s3-store.js";
import { computePartSize } from "../src/storage/catalog.js";
import type { S3Server } from "../test/harness/s3.js";
import { execa } from "execa";
import { fmt, MB, pairedRounds, q, sh, timed, type BenchPart, type Pipeline, type Row } from "./common.js";

const MIB = 1024 * 1024;
const BUCKET = "bench";

export interface S3BenchOptions {
  /** The bench's work directory (removed at the end). */
  work: string;
  sizeMb: number;
  runs: number;
  /** The versitygw the bench started, with bucket "bench". */
  s3: S3Server;
}

/** BENCH_S3_VARIANTS: extra (partSize, queueSize) rows for the store. */
function variants(): { partMib: number; queue: number }[] {
  const v = process.env.BENCH_S3_VARIANTS ?? "";
  return v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const m = /^(\d+):(\d+)$/.exec(s);
      if (!m) throw new Error(`BENCH_S3_VARIANTS: "${s}" is not PART_MIB:QUEUE (e.g. 32:4)`);
      return { partMib: Number(m[1]), queue: Number(m[2]) };
    });
}

/** A sink that drops what it is given (both sides of a download write nowhere). */
const discard = (): Writable => new Writable({ highWaterMark: MIB, write: (_chunk, _enc, cb) => { cb(); } });

async function randomFile(file: string, bytes: number): Promise<void> {
  const fh = await open(file, "w");
  try {
    const buf = Buffer.alloc(4 * MIB);
    for (let done = 0; done < bytes; done += buf.length) {
      randomFillSync(buf);
      await fh.write(buf, 0, Math.min(buf.length, bytes - done));
    }
  } finally {
    await fh.close();
  }
}

/** CreateMultipartUpload, `queue` UploadParts at once of `partSize` slices of `data`, CompleteMultipartUpload. */
async function multipartByHand(client: S3Client, key: string, data: Buffer, partSize: number, queue: number): Promise<void> {
  const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }));
  const count = Math.ceil(data.length / partSize);
  const parts: { PartNumber: number; ETag: string | undefined }[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const body = data.subarray(i * partSize, Math.min(data.length, (i + 1) * partSize));
      const r = await client.send(new UploadPartCommand({ Bucket: BUCKET, Key: key, UploadId, PartNumber: i + 1, Body: body }));
      parts[i] = { PartNumber: i + 1, ETag: r.ETag };
    }
  };
  await Promise.all(Array.from({ length: queue }, worker));
  await client.send(new CompleteMultipartUploadCommand({ Bucket: BUCKET, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
}

export async function s3Bench(o: S3BenchOptions): Promise<BenchPart> {
  const file = path.join(o.work, "s3-object.bin");
  const bytes = Math.round(o.sizeMb * MB);
  process.stderr.write(`bench: writing ${fmt(bytes / MB, 0)} MB of random bytes for the S3 rows\n`);
  await randomFile(file, bytes);
  const { endpoint, accessKeyId, secretAccessKey } = o.s3;
  const credentials = { accessKeyId, secretAccessKey };
  const region = "us-east-1";
  const store = (partSize?: number, queueSize?: number): S3ObjectStore =>
    new S3ObjectStore({ bucket: BUCKET, prefix: "throughput", endpoint, region, credentials, partSize, queueSize });
  const sdk = new S3Client({ region, endpoint, forcePathStyle: true, credentials });
  const url = (key: string): string => `${endpoint}/${BUCKET}/throughput/${key}`;
  const curlAuth = `--aws-sigv4 aws:amz:${region}:s3 --user ${q(`${accessKeyId}:${secretAccessKey}`)} -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'`;
  const defaultPart = computePartSize(bytes);
  // The store's parts at once for its default parts (s3-store.ts), for the hand-made multipart row too.
  const defaultQueue = queueSizeFor(defaultPart);
  const buffers = (partMib: number, queue: number): string => `${partMib} MiB parts, ${queue} at once, ${fmt(partMib * (queue + 1), 0)} MiB of buffers`;

  // Warm-up, not timed: each client's first request (credentials, the
  // connection) is a fixed cost the agent pays once per process,
  // before its data moves (it reads or writes the manifest around it).
  const stores = new Map<string, S3ObjectStore>();
  const storeFor = (key: string, partSize?: number, queueSize?: number): S3ObjectStore => {
    const s = store(partSize, queueSize);
    stores.set(key, s);
    return s;
  };
  const warm = Buffer.alloc(MIB);
  const warmUp = async (s: S3ObjectStore): Promise<void> => {
    await s.put("warm-up", Readable.from([warm]), { expectedSize: warm.length });
    await pipeline(await s.get("warm-up"), discard());
  };
  const getStore = store();

  // ------------------------------------------------------------ upload
  const uploads: Row[] = [];
  const storeUpload = (name: string, key: string, s: S3ObjectStore): Pipeline => ({
    name,
    run: async (row) => {
      const sec = await timed(async () => {
        const r = await s.put(key, createReadStream(file, { highWaterMark: MIB }), { expectedSize: bytes });
        row.bytes = r.size;
      });
      row.check = row.bytes === bytes ? "ok" : `size ${String(row.bytes)} != ${bytes}`;
      return sec;
    },
  });
  const uploadPipelines: Pipeline[] = [
    storeUpload(`S3 store put (defaults: ${buffers(defaultPart / MIB, defaultQueue)})`, "store", storeFor("store")),
    ...variants().map((v) => {
      const key = `store-${v.partMib}-${v.queue}`;
      return storeUpload(`S3 store put (${buffers(v.partMib, v.queue)})`, key, storeFor(key, v.partMib * MIB, v.queue));
    }),
    {
      name: "AWS SDK PutObject (one request)",
      baseline: true,
      run: async (row) => {
        const sec = await timed(async () => {
          await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: "throughput/sdk", Body: createReadStream(file, { highWaterMark: MIB }), ContentLength: bytes }));
        });
        row.bytes = bytes;
        row.check = "ok";
        return sec;
      },
    },
    {
      // What the store does, by hand with the bare SDK: the parts read from memory (no stream to cut), as many at once.
      name: `AWS SDK multipart by hand (${fmt(defaultPart / MIB, 0)} MiB parts from memory, ${defaultQueue} at once)`,
      run: async (row) => {
        const data = await readFile(file);
        const sec = await timed(async () => {
          await multipartByHand(sdk, "throughput/sdk-multipart", data, defaultPart, defaultQueue);
        });
        row.bytes = data.length;
        row.check = "ok";
        return sec;
      },
    },
    {
      name: "curl PUT (one request, unsigned payload)",
      run: async (row) => {
        const sec = await timed(() => sh(`curl -sS --fail ${curlAuth} -T ${q(file)} ${q(url("curl"))}`, "curl PUT"));
        row.bytes = bytes;
        row.check = "ok";
        return sec;
      },
    },
  ];
  process.stderr.write("bench: warming up the S3 clients (not timed)\n");
  for (const s of [...stores.values(), getStore]) await warmUp(s);
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: "throughput/warm-up", Body: warm }));
  await pipeline((await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: "throughput/warm-up" }))).Body as NodeJS.ReadableStream, discard());
  await pairedRounds(uploads, uploadPipelines, o.runs);

  // ------------------------------------------------------------ download (all of the object the store's upload wrote)
  const downloads: Row[] = [];
  await pairedRounds(
    downloads,
    [
      {
        name: "S3 store get (one GET, resumable body)",
        run: async (row) => {
          let got = 0;
          const sec = await timed(async () => {
            const body = await getStore.get("store");
            body.on("data", (c: Buffer) => { got += c.length; });
            await pipeline(body, discard());
          });
          row.bytes = got;
          row.check = got === bytes ? "ok" : `read ${got} != ${bytes}`;
          return sec;
        },
      },
      {
        name: "AWS SDK GetObject (one request)",
        baseline: true,
        run: async (row) => {
          let got = 0;
          const sec = await timed(async () => {
            const r = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: "throughput/store" }));
            const body = r.Body as NodeJS.ReadableStream;
            body.on("data", (c: Buffer) => { got += c.length; });
            await pipeline(body, discard());
          });
          row.bytes = got;
          row.check = got === bytes ? "ok" : `read ${got} != ${bytes}`;
          return sec;
        },
      },
      {
        name: "curl GET (one request)",
        run: async (row) => {
          const sec = await timed(() => sh(`curl -sS --fail ${curlAuth} -o /dev/null ${q(url("store"))}`, "curl GET"));
          row.bytes = bytes;
          row.check = "ok";
          return sec;
        },
      },
    ],
    o.runs,
  );
  sdk.destroy();
  for (const s of [...stores.values(), getStore]) s.close();

  const ratioLine = (rows: Row[], what: string): string => {
    const ours = rows[0];
    const base = rows.find((r) => r.baseline);
    if (!ours?.seconds || !base?.seconds || ours.error !== undefined || base.error !== undefined) return `${what}: n/a`;
    return `${what} ${fmt(bytes / MB / ours.seconds, 0)} MB/s vs the SDK alone ${fmt(bytes / MB / base.seconds, 0)} MB/s`;
  };
  return {
    facts: [
      `- S3 throughput: ${fmt(bytes / MB, 0)} MB of random bytes, file → versitygw (posix) → discarded, in this process (store, SDK) or curl (${(await execa("curl", ["--version"], { reject: false })).stdout.split(" ").slice(0, 2).join(" ")}); ` +
        `${ratioLine(uploads, "store upload")}; ${ratioLine(downloads, "store download")}`,
    ],
    tables: [
      { title: "S3 upload (the store against a plain PutObject)", chartTitle: "S3 upload", rows: uploads, rawBytes: bytes, bytesLabel: "Object MB" },
      { title: "S3 download (the store against a plain GetObject)", chartTitle: "S3 download", rows: downloads, rawBytes: bytes, bytesLabel: "Object MB" },
    ],
  };
}
