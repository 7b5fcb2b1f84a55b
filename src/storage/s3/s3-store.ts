// S3 backend: `s3://bucket/prefix`. With multipart.ts (its streamed
// upload), the only module that imports the AWS SDK.
// Credentials come from the SDK's standard chain (env, shared files, web
// identity, instance metadata), never from a command-line flag.
//
// Faults are retried, then reported as faults: single requests use the SDK's
// standard retry (5 attempts with backoff, for 5xx, throttling, resets and
// timeouts); a download whose body breaks part-way resumes with a Range GET
// (up to 3 times) so its reader never notices; a listing is retried whole,
// never returned in part; a streamed upload's parts are retried one by one
// (multipart.ts, in at most UPLOAD_BUFFER_BYTES of part buffers) and a failed
// upload is aborted, never left visible. What remains is StorageUnreachable or StorageError,
// never NotFound or corrupt.
//
// Listing pages are read by list-page.ts, not the SDK's generic XML
// deserializer (which cost about as much as the S3 server did): the same
// values, or, for any page it is not sure of, the SDK reads it as before.
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandInput,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import https from "node:https";
import { Readable } from "node:stream";
import tls from "node:tls";
import { badInput, failed, ReplicatorError } from "../../lib/errors.js";
import { computePartSize, formatBytes, MAX_PARTS } from "../catalog.js";
import { isTransient, joinKey, markTransient, readAll, withRetries, type ObjectInfo, type ObjectStore, type PutOptions, type PutResult } from "../object-store.js";
import { parseListPage, type ListPage } from "./list-page.js";
import { uploadStream } from "./multipart.js";

export interface S3Options {
  bucket: string;
  prefix: string;
  endpoint?: string | undefined;
  region?: string | undefined;
  forcePathStyle?: boolean | undefined;
  /** Multipart part size in bytes (default: from the size hint, at least 16 MiB; S3 allows 10,000 parts). */
  partSize?: number | undefined;
  /** Parts uploaded at once (default: queueSizeFor(partSize)); one more part buffer is being filled. */
  queueSize?: number | undefined;
  /** Explicit credentials (the operator reads them from a Secret); else the SDK's chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** Connection timeout (default 5 s, env REPLICATOR_S3_CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number | undefined;
  /** A request whose socket is idle this long fails (default 30 s, env REPLICATOR_S3_IDLE_TIMEOUT_MS). */
  idleTimeoutMs?: number | undefined;
  /** Attempts per request (default 5). */
  maxAttempts?: number | undefined;
  /** S3's part limit (10,000); lower only in tests, to meet the limit without 156 GiB. */
  maxParts?: number | undefined;
  /** A failed upload: how long its parts in flight may finish before they are cut (default 5 s; tests lower it). */
  settleMs?: number | undefined;
  /** PEM CA certificates trusted beside the process's own (the operator's `s3.caSecret`; a Job gets NODE_EXTRA_CA_CERTS instead). */
  ca?: string | undefined;
  /** What an untrusted certificate's error tells the user to do (default: NODE_EXTRA_CA_CERTS, or on Kubernetes spec.s3.caSecret). */
  untrustedHint?: string | undefined;
}

/** Part buffers one streamed upload may hold: parts uploading at once, plus the one being filled. */
export const UPLOAD_BUFFER_BYTES = 64 * 1024 * 1024;

/** Parts uploaded at once for parts of `partSize`: as many as fit in UPLOAD_BUFFER_BYTES with the one being filled (16 MiB parts: 3), at least 1. */
export function queueSizeFor(partSize: number): number {
  return Math.max(1, Math.min(4, Math.floor(UPLOAD_BUFFER_BYTES / partSize) - 1));
}

/** How many times a broken download resumes with a Range GET. */
const MAX_RESUMES = 3;
const NETWORK_CODES = new Set(["ECONNREFUSED", "ENOTFOUND", "ECONNRESET", "ETIMEDOUT", "EAI_AGAIN", "EHOSTUNREACH", "ENETUNREACH", "EPIPE", "ECONNABORTED", "ERR_STREAM_PREMATURE_CLOSE", "UND_ERR_SOCKET"]);
/** Node's codes for a server certificate that fails verification: the input (a CA, a name) is wrong; retrying cannot help. */
const TLS_TRUST_CODES = new Set([
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_UNTRUSTED",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);
const UNTRUSTED_HINT = "if a private CA signed it, set NODE_EXTRA_CA_CERTS to that CA's PEM file (on Kubernetes: the ReplicatorRepository's spec.s3.caSecret)";
const TRANSIENT_NAMES = new Set(["InternalError", "SlowDown", "ServiceUnavailable", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed", "TooManyRequests", "RequestLimitExceeded", "BadGateway", "GatewayTimeout"]);

function envMs(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n : undefined;
}

type Op = "GET" | "PUT" | "HEAD" | "LIST" | "DELETE" | "CHECK";

const opVerb: Record<Op, string> = { GET: "reading", PUT: "writing", HEAD: "checking", LIST: "listing", DELETE: "deleting", CHECK: "checking bucket" };

const silentLogger = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

export class S3ObjectStore implements ObjectStore {
  readonly location: string;
  readonly identity: string;
  private readonly client: S3Client;
  private readonly endpoint: string;
  /** Over plain http a part's payload is signed (its sha256); over https TLS protects it. */
  private readonly signPayload: boolean;
  /** With `ca`: the https agent that trusts it. */
  private readonly agent: https.Agent | undefined;

  constructor(private readonly opts: S3Options) {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(opts.bucket)) {
      throw badInput("InvalidRepository", `invalid S3 bucket name "${opts.bucket}" (3-63 lowercase letters, digits, dots, hyphens)`);
    }
    this.location = `s3://${joinKey(opts.bucket, opts.prefix)}`;
    this.endpoint = opts.endpoint ?? "AWS S3";
    this.identity = `${this.location} at ${opts.endpoint ?? "AWS S3"}${opts.region ? ` (${opts.region})` : ""}`;
    this.signPayload = opts.endpoint !== undefined && /^http:/i.test(opts.endpoint);
    if (opts.ca) this.agent = new https.Agent({ keepAlive: true, maxSockets: 50, ca: [...tls.getCACertificates("default"), opts.ca] });
    const config: S3ClientConfig = {
      region: opts.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? "us-east-1",
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      maxAttempts: opts.maxAttempts ?? 5,
      retryMode: "standard",
      // The SDK logs nothing by default, except a console.warn when a streamed request (an upload's part) fails: those are retried and reported here.
      logger: silentLogger,
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? envMs("REPLICATOR_S3_CONNECT_TIMEOUT_MS") ?? 5_000,
        socketTimeout: opts.idleTimeoutMs ?? envMs("REPLICATOR_S3_IDLE_TIMEOUT_MS") ?? 30_000,
        // As the SDK's own agent, with the CA added to (not in place of) the trusted ones. An instance, not options:
        // for a request with Expect: 100-continue (an upload's parts) the SDK makes a fresh agent of its own defaults otherwise.
        ...(this.agent ? { httpsAgent: this.agent } : {}),
      },
    };
    if (opts.endpoint) config.endpoint = opts.endpoint;
    if (opts.credentials) config.credentials = opts.credentials;
    this.client = new S3Client(config);
    this.client.middlewareStack.add(fastListPages, { step: "deserialize", priority: "low", name: "replicatorFastListPages" });
  }

  /** One ListObjectsV2 page: read by list-page.ts when it can, else by the SDK. Throws the SDK's error. */
  private async listPage(input: ListObjectsV2CommandInput): Promise<ListPage> {
    const command = new ListObjectsV2Command(input);
    const res = await this.client.send(command);
    const fast = fastPages.get(command);
    fastPages.delete(command);
    return fast ?? pageOf(res);
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
          throw this.mapError(listErr, "CHECK", this.opts.bucket);
        }
      }
      throw this.mapError(err, "CHECK", this.opts.bucket);
    }
  }

  async put(key: string, body: Readable | Buffer | string, opts: PutOptions = {}): Promise<PutResult> {
    if (typeof body === "string" || Buffer.isBuffer(body)) {
      const buf = Buffer.from(body);
      if (opts.ifNoneMatch) return this.putCreateOnly(key, buf);
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: this.k(key), Body: buf }));
      } catch (err) {
        throw this.mapError(err, "PUT", this.k(key));
      }
      return { size: buf.length };
    }
    if (opts.ifNoneMatch) {
      return this.putCreateOnly(key, await readAll(body));
    }
    const partSize = this.opts.partSize ?? computePartSize(opts.expectedSize);
    const full = this.k(key);
    // S3 takes at most 10,000 parts and the part size cannot change mid-way: fail at the limit, not after it.
    const limit = partSize * (this.opts.maxParts ?? MAX_PARTS);
    const res = await uploadStream(
      body,
      { client: this.client, bucket: this.opts.bucket, key: full },
      {
        partSize,
        queueSize: this.opts.queueSize ?? queueSizeFor(partSize),
        limit,
        tooLarge: () =>
          badInput(
            "ObjectTooLarge",
            opts.expectedSize === undefined
              ? `object larger than ~${formatBytes(limit)} without a size hint; pass --expected-size`
              : `object larger than ~${formatBytes(limit)}: the size hint (${formatBytes(opts.expectedSize)}) was too small; pass a larger --expected-size`,
          ),
        mapError: (err) => this.mapError(err, "PUT", full),
        retry: (fn) => withRetries(fn, { attempts: 3 }),
        // A part's body is a stream the SDK does not retry: these are its attempts (7 by default, as many as the SDK's 5 and 2 more).
        retryPart: (fn) => withRetries(fn, { attempts: (this.opts.maxAttempts ?? 5) + 2 }),
        signPayload: this.signPayload,
        settleMs: this.opts.settleMs,
      },
    );
    return { size: res.size };
  }

  /** PutObject with If-None-Match: * (a create-only write). */
  private async putCreateOnly(key: string, buf: Buffer): Promise<PutResult> {
    const full = this.k(key);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.client.send(new PutObjectCommand({ Bucket: this.opts.bucket, Key: full, Body: buf, IfNoneMatch: "*" }));
        return { size: buf.length };
      } catch (err) {
        const status = statusOf(err);
        // 409: a concurrent conditional write is in progress; try again and the loser sees 412.
        if (status === 409 && attempt < 5) {
          await new Promise((r) => setTimeout(r, 100 * attempt));
          continue;
        }
        if (status === 412 || nameOf(err) === "PreconditionFailed") {
          // A retried request whose first attempt did land finds its own object: that is success.
          const existing = await this.get(key).then(readAll, () => undefined);
          if (existing?.equals(buf)) return { size: buf.length };
          throw failed("ObjectExists", `object ${full} already exists in s3://${this.opts.bucket}`, { cause: err });
        }
        throw this.mapError(err, "PUT", full);
      }
    }
  }

  async get(key: string): Promise<Readable> {
    const full = this.k(key);
    const res = await this.send(() => this.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: full })), "GET", full);
    const body = res.Body;
    if (!(body instanceof Readable)) throw failed("StorageError", `S3 returned no body for ${full} at ${this.endpoint}`);
    const total = res.ContentLength;
    const etag = res.ETag;
    return new ResumableBody(
      body,
      total,
      async (offset) => {
        const r = await this.client.send(
          new GetObjectCommand({ Bucket: this.opts.bucket, Key: full, Range: `bytes=${offset}-`, ...(etag ? { IfMatch: etag } : {}) }),
        );
        if (!(r.Body instanceof Readable)) throw failed("StorageError", `S3 returned no body for ${full} at ${this.endpoint}`);
        return r.Body;
      },
      (err) => this.mapError(err, "GET", full),
    );
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    const full = this.k(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.opts.bucket, Key: full }));
      return { key, size: res.ContentLength ?? 0, lastModified: res.LastModified };
    } catch (err) {
      if (statusOf(err) === 404 && nameOf(err) !== "NoSuchBucket") return undefined;
      throw this.mapError(err, "HEAD", full);
    }
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const base = this.opts.prefix ? `${joinKey(this.opts.prefix)}/` : "";
    // Retried whole: a listing that breaks mid-way is never returned in part.
    return withRetries(async () => {
      const out: ObjectInfo[] = [];
      let token: string | undefined;
      try {
        do {
          const res = await this.listPage({ Bucket: this.opts.bucket, Prefix: base + prefix, ContinuationToken: token });
          for (const o of res.contents) {
            if (!o.key) continue;
            out.push({ key: o.key.slice(base.length), size: o.size ?? 0, lastModified: o.lastModified, etag: o.etag });
          }
          if (res.isTruncated && !res.nextContinuationToken) {
            throw markTransient(failed("StorageError", `S3 listing of ${base + prefix} at ${this.endpoint} was truncated without a continuation token`));
          }
          token = res.isTruncated ? res.nextContinuationToken : undefined;
        } while (token);
      } catch (err) {
        throw this.mapError(err, "LIST", base + prefix);
      }
      return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    }, { attempts: 3 });
  }

  async listChildren(prefix: string): Promise<string[]> {
    const base = this.opts.prefix ? `${joinKey(this.opts.prefix)}/` : "";
    const full = base + prefix;
    return withRetries(async () => {
      const out = new Set<string>();
      let token: string | undefined;
      try {
        do {
          const res = await this.listPage({ Bucket: this.opts.bucket, Prefix: full, Delimiter: "/", ContinuationToken: token });
          for (const p of res.commonPrefixes) {
            const name = p.slice(full.length).replace(/\/$/, "");
            if (name) out.add(name);
          }
          // An object right under the prefix is a child too (a key without a further "/").
          for (const o of res.contents) {
            const name = o.key.slice(full.length);
            if (name) out.add(name);
          }
          if (res.isTruncated && !res.nextContinuationToken) {
            throw markTransient(failed("StorageError", `S3 listing of ${full} at ${this.endpoint} was truncated without a continuation token`));
          }
          token = res.isTruncated ? res.nextContinuationToken : undefined;
        } while (token);
      } catch (err) {
        throw this.mapError(err, "LIST", full);
      }
      return [...out].sort();
    }, { attempts: 3 });
  }

  close(): void {
    this.client.destroy();
    // An agent we made is ours to end (the SDK leaves an agent it was given).
    this.agent?.destroy();
  }

  async delete(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      if (batch.length === 0) continue;
      let res;
      try {
        res = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.opts.bucket,
            Delete: { Objects: batch.map((k) => ({ Key: this.k(k) })), Quiet: true },
          }),
        );
      } catch (err) {
        throw this.mapError(err, "DELETE", this.k(batch[0] ?? ""));
      }
      const errors = (res.Errors ?? []).filter((e) => e.Code !== "NoSuchKey");
      if (errors.length > 0) {
        const e = errors[0];
        const err = failed(
          "StorageError",
          `S3 at ${this.endpoint} could not delete ${e?.Key ?? "objects"}${errors.length > 1 ? ` and ${errors.length - 1} more` : ""}: ${e?.Code ?? "error"} ${e?.Message ?? ""}`.trim(),
        );
        if (TRANSIENT_NAMES.has(e?.Code ?? "")) markTransient(err);
        throw err;
      }
    }
  }

  private async send<T>(fn: () => Promise<T>, op: Op, key: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err, op, key);
    }
  }

  /** Map an SDK error to a one-line message that names the problem, the object, the endpoint and the fix. */
  private mapError(err: unknown, op: Op, key: string): ReplicatorError {
    if (err instanceof ReplicatorError) return err;
    const e = err as { name?: string; code?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number } };
    const name = nameOf(err);
    const status = statusOf(err);
    const where = this.location;
    const endpoint = this.endpoint;
    const code = netCode(err);
    const what = `${opVerb[op]} ${key}`;
    if (/checksum mismatch/i.test(e.message ?? "")) {
      return failed("CorruptBackup", `${what}: the object in ${where} does not match its stored S3 checksum; the object is corrupt`, { cause: err });
    }
    if (name === "NoSuchBucket" || (status === 404 && op === "CHECK")) {
      return badInput("BucketNotFound", `S3 bucket "${this.opts.bucket}" does not exist at ${endpoint}; create it or fix the repository URL`, { cause: err });
    }
    if (name === "NoSuchKey" || (status === 404 && op === "GET")) {
      return failed("NotFound", `object ${key} not found in s3://${this.opts.bucket}`, { cause: err });
    }
    if (name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch" || name === "InvalidToken" || name === "ExpiredToken") {
      return badInput("AccessDenied", `S3 rejected the credentials for ${where} (${name}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`, { cause: err });
    }
    if (name === "AccessDenied" || status === 403) {
      return badInput("AccessDenied", `S3 denied access to ${where} (${what}); check the credentials and the bucket policy`, { cause: err });
    }
    if (code !== undefined && TLS_TRUST_CODES.has(code)) {
      const msg = (e.message ?? code).split("\n")[0] ?? code;
      return badInput(
        "UntrustedCertificate",
        code === "ERR_TLS_CERT_ALTNAME_INVALID" || /EXPIRED|NOT_YET_VALID/.test(code)
          ? `S3 endpoint ${endpoint} presented a TLS certificate that is not valid for it (${msg}); fix the certificate or the endpoint's host name`
          : `S3 endpoint ${endpoint} presented a TLS certificate this process does not trust (${msg}); ${this.opts.untrustedHint ?? UNTRUSTED_HINT}`,
        { cause: err },
      );
    }
    if (name === "CredentialsProviderError") {
      return badInput("NoCredentials", `no S3 credentials found for ${where}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`, { cause: err });
    }
    if ((code !== undefined && NETWORK_CODES.has(code)) || name === "TimeoutError" || (status === undefined && /aborted|socket hang up|premature close/i.test(e.message ?? ""))) {
      const why = code ?? (name === "TimeoutError" ? "timed out" : name || "connection lost");
      return markTransient(failed("StorageUnreachable", `cannot reach S3 endpoint ${endpoint} (${why}) while ${what}; is the S3 server up?`, { cause: err }));
    }
    const msg = (e.message ?? "").split("\n")[0]?.slice(0, 200) ?? "";
    const out = failed(
      "StorageError",
      `S3 at ${endpoint} failed ${what}${status ? `: HTTP ${status}` : ""}${name ? ` ${name}` : ""}${msg && msg !== name ? `: ${msg}` : ""}`,
      { cause: err },
    );
    if ((status !== undefined && status >= 500) || status === 429 || TRANSIENT_NAMES.has(name)) markTransient(out);
    return out;
  }
}

/** Pages list-page.ts read, by the command that asked for them; taken (and removed) by listPage. */
const fastPages = new WeakMap<object, ListPage>();
/** What the SDK's deserializer is given instead of a page that was already read: an empty page, cheap to parse. */
const READ_PAGE = Buffer.from('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult></ListBucketResult>');

/**
 * Innermost in the deserialize step (it sees the raw response, before the
 * SDK's deserializer and its check for an error in a 200 body): reads a
 * successful ListObjectsV2 page with list-page.ts and keeps it for listPage,
 * handing the SDK an empty page; a page list-page.ts is not sure of goes to
 * the SDK whole. Errors, and every other command, pass untouched. Each
 * attempt (the SDK retries outside this) starts from nothing.
 */
const fastListPages = ((next: (args: unknown) => Promise<{ response: unknown }>, context: { commandName?: string; __smithy_context?: { commandInstance?: unknown } }) =>
  async (args: unknown): Promise<{ response: unknown }> => {
    const command = context.__smithy_context?.commandInstance;
    if (context.commandName !== "ListObjectsV2Command" || typeof command !== "object" || command === null) return next(args);
    fastPages.delete(command);
    const result = await next(args);
    const response = result.response as { statusCode?: number; body?: unknown } | undefined;
    const status = response?.statusCode ?? 0;
    if (!response || status < 200 || status >= 300 || !(response.body instanceof Readable)) return result;
    const bytes = await readAll(response.body);
    const page = parseListPage(bytes.toString("utf8"));
    if (page) fastPages.set(command, page);
    response.body = Readable.from([page ? READ_PAGE : bytes]);
    return result;
  }) as unknown as Parameters<S3Client["middlewareStack"]["add"]>[0];

/** A page the SDK read, in list-page.ts's shape. */
function pageOf(res: ListObjectsV2CommandOutput): ListPage {
  return {
    contents: (res.Contents ?? []).map((o) => ({ key: o.Key ?? "", size: o.Size, lastModified: o.LastModified, etag: o.ETag })),
    commonPrefixes: (res.CommonPrefixes ?? []).flatMap((p) => (p.Prefix ? [p.Prefix] : [])),
    isTruncated: res.IsTruncated,
    nextContinuationToken: res.NextContinuationToken,
  };
}

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  const e = err as { name?: string; Code?: string } | null;
  const n = e?.Code ?? e?.name ?? "";
  return n === "Error" ? "" : n;
}

/** The network error code of an error or its causes. */
function netCode(err: unknown): string | undefined {
  let e = err as { code?: unknown; cause?: unknown } | undefined;
  for (let i = 0; i < 5 && e; i++) {
    if (typeof e.code === "string") return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}


/**
 * The body of a GET that resumes where it broke: on a transient fault
 * part-way (a reset, a truncated body, an idle timeout) it re-GETs the rest
 * with `Range: bytes=N-` and If-Match on the ETag, up to 3 times.
 * Destroying it destroys the underlying response at once.
 */
class ResumableBody extends Readable {
  private body: Readable | undefined;
  private offset = 0;
  private resumes = 0;
  private reopening = false;
  /** The consumer is behind: the response is paused by us (backpressure), not by the server. */
  private held = false;
  /** The response broke while held: GET the rest when the consumer reads again. */
  private reopenOnRead = false;

  constructor(
    first: Readable,
    private readonly total: number | undefined,
    private readonly reopen: (offset: number) => Promise<Readable>,
    private readonly mapError: (err: unknown) => ReplicatorError,
  ) {
    super({ highWaterMark: 1024 * 1024 });
    this.attach(first);
  }

  private attach(body: Readable): void {
    this.body = body;
    body.on("data", (chunk: Buffer) => {
      if (body !== this.body) return;
      this.offset += chunk.length;
      if (!this.push(chunk)) {
        this.held = true;
        body.pause();
      }
    });
    body.once("end", () => {
      if (body !== this.body) return;
      if (this.total !== undefined && this.offset < this.total) {
        this.broken(Object.assign(new Error(`the response body ended after ${this.offset} of ${this.total} bytes`), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
        return;
      }
      this.push(null);
    });
    body.once("error", (err) => {
      if (body !== this.body) return;
      this.broken(err);
    });
  }

  private broken(err: unknown): void {
    if (this.destroyed) return;
    const mapped = this.mapError(err);
    const transient = isTransient(mapped);
    this.body?.destroy();
    this.body = undefined;
    if (transient && this.held && this.total !== undefined) {
      // The socket idled out while this side held the response (a consumer
      // slower than the idle timeout, e.g. a restore whose clients are busy):
      // not a fault of the server, and not one of the resumes a fault may
      // use. The rest is fetched when the consumer reads again.
      this.reopenOnRead = true;
      return;
    }
    if (!transient || this.resumes >= MAX_RESUMES || this.total === undefined) {
      this.destroy(mapped);
      return;
    }
    this.resumes++;
    this.fetchRest();
  }

  private fetchRest(): void {
    this.reopening = true;
    this.reopen(this.offset).then(
      (b) => {
        this.reopening = false;
        if (this.destroyed) {
          b.destroy();
          return;
        }
        this.attach(b);
      },
      (e: unknown) => {
        this.reopening = false;
        this.destroy(this.mapError(e));
      },
    );
  }

  override _read(): void {
    this.held = false;
    if (this.reopenOnRead) {
      this.reopenOnRead = false;
      this.fetchRest();
      return;
    }
    if (!this.reopening) this.body?.resume();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.body?.destroy();
    this.body = undefined;
    cb(err);
  }
}
