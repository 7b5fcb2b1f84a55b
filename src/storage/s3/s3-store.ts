// S3 backend: `s3://bucket/prefix`. The only module that imports the AWS SDK.
// Credentials come from the SDK's standard chain (env, shared files, web
// identity, instance metadata), never from a command-line flag.
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { PassThrough, Readable } from "node:stream";
import { badInput, failed, ReplicatorError } from "../../lib/errors.js";
import { joinKey, type ObjectInfo, type ObjectStore, type PutResult } from "../object-store.js";

export interface S3Options {
  bucket: string;
  prefix: string;
  endpoint?: string | undefined;
  region?: string | undefined;
  forcePathStyle?: boolean | undefined;
  /** Multipart part size in bytes (default 16 MiB; S3 allows 10,000 parts). */
  partSize?: number | undefined;
  /** Parts uploaded at once. */
  queueSize?: number | undefined;
  /** Explicit credentials (the operator reads them from a Secret); else the SDK's chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
}

export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  private readonly client: S3Client;

  constructor(private readonly opts: S3Options) {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(opts.bucket)) {
      throw badInput("InvalidRepository", `invalid S3 bucket name "${opts.bucket}" (3-63 lowercase letters, digits, dots, hyphens)`);
    }
    this.location = `s3://${joinKey(opts.bucket, opts.prefix)}`;
    const config: S3ClientConfig = {
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1",
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      maxAttempts: 4,
    };
    if (opts.endpoint) config.endpoint = opts.endpoint;
    if (opts.credentials) config.credentials = opts.credentials;
    this.client = new S3Client(config);
  }

  private k(key: string): string {
    return joinKey(this.opts.prefix, key);
  }

  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.opts.bucket }));
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 403) {
        // HEAD responses carry no error code; a listing tells a bad key from a policy denial.
        try {
          await this.client.send(new ListObjectsV2Command({ Bucket: this.opts.bucket, MaxKeys: 1 }));
        } catch (listErr) {
          throw this.mapError(listErr, "check bucket");
        }
      }
      throw this.mapError(err, "check bucket");
    }
  }

  async put(key: string, body: Readable | Buffer | string): Promise<PutResult> {
    let size = 0;
    const counted =
      typeof body === "string" || Buffer.isBuffer(body)
        ? Buffer.from(body)
        : body.map((chunk: Buffer) => {
            size += chunk.length;
            return chunk;
          });
    if (Buffer.isBuffer(counted)) size = counted.length;
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.opts.bucket, Key: this.k(key), Body: counted },
      partSize: this.opts.partSize ?? 16 * 1024 * 1024,
      queueSize: this.opts.queueSize ?? 4,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (err) {
      throw this.mapError(err, `upload ${key}`);
    }
    return { size };
  }

  async get(key: string): Promise<Readable> {
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: this.k(key) }));
      const body = res.Body;
      if (!(body instanceof Readable)) throw failed("StorageError", `S3 returned no body for ${key}`);
      // Errors while streaming (a dropped connection, a checksum mismatch) get the same mapping.
      const out = new PassThrough({ highWaterMark: 1024 * 1024 });
      body.on("error", (err) => out.destroy(this.mapError(err, `download ${key}`)));
      return body.pipe(out);
    } catch (err) {
      throw this.mapError(err, `download ${key}`);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: this.k(key) }));
      return { key, size: res.ContentLength ?? 0, lastModified: res.LastModified };
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404) return undefined;
      throw this.mapError(err, `stat ${key}`);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const base = this.opts.prefix ? `${joinKey(this.opts.prefix)}/` : "";
    let token: string | undefined;
    try {
      do {
        const res = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.opts.bucket, Prefix: base + prefix, ContinuationToken: token }),
        );
        for (const o of res.Contents ?? []) {
          if (!o.Key) continue;
          out.push({ key: o.Key.slice(base.length), size: o.Size ?? 0, lastModified: o.LastModified });
        }
        token = res.IsTruncated ? res.NextContinuationToken : undefined;
      } while (token);
    } catch (err) {
      throw this.mapError(err, `list ${prefix}`);
    }
    return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      try {
        const res = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.opts.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.k(k) })), Quiet: true },
          }),
        );
        const errors = (res.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
        if (errors.length > 0) {
          const e = errors[0];
          throw failed("StorageError", `S3 could not delete ${e?.Key ?? "objects"}: ${e?.Code ?? "error"} ${e?.Message ?? ""}`.trim());
        }
      } catch (err) {
        throw this.mapError(err, "delete");
      }
    }
  }

  /** Map an SDK error to a one-line message that names the problem and the fix. */
  private mapError(err: unknown, what: string): ReplicatorError {
    if (err instanceof ReplicatorError) return err;
    const e = err as { name?: string; code?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const name = e.name ?? e.Code ?? "";
    const status = e.$metadata?.httpStatusCode;
    const where = this.location;
    const endpoint = this.opts.endpoint ?? "AWS S3";
    const code = e.code ?? (err as { cause?: { code?: string } }).cause?.code ?? "";
    if (/checksum mismatch/i.test(e.message ?? "")) {
      return failed("CorruptBackup", `${what}: the object in ${where} does not match its stored S3 checksum; the object is corrupt`, { cause: err });
    }
    if (name === "NoSuchBucket" || (status === 404 && what === "check bucket")) {
      return badInput("BucketNotFound", `S3 bucket "${this.opts.bucket}" does not exist at ${endpoint}; create it or fix the repository URL`, { cause: err });
    }
    if (name === "NoSuchKey" || (status === 404 && what.startsWith("download"))) {
      return failed("NotFound", `object not found in ${where} (${what})`, { cause: err });
    }
    if (name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch" || name === "InvalidToken" || name === "ExpiredToken") {
      return badInput("AccessDenied", `S3 rejected the credentials for ${where} (${name}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`, { cause: err });
    }
    if (name === "AccessDenied" || status === 403) {
      return badInput("AccessDenied", `S3 denied access to ${where} (${what}); check the credentials and the bucket policy`, { cause: err });
    }
    if (name === "CredentialsProviderError") {
      return badInput("NoCredentials", `no S3 credentials found for ${where}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`, { cause: err });
    }
    if (["ECONNREFUSED", "ENOTFOUND", "ECONNRESET", "ETIMEDOUT", "EAI_AGAIN", "EHOSTUNREACH"].includes(code) || name === "TimeoutError") {
      return failed("StorageUnreachable", `cannot reach S3 endpoint ${endpoint} (${code || name}) while trying to ${what}`, { cause: err });
    }
    return failed("StorageError", `S3 ${what} failed for ${where}: ${name || "error"}${status ? ` (HTTP ${status})` : ""}: ${e.message ?? ""}`.trim(), { cause: err });
  }
}
