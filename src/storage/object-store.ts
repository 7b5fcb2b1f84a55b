// The one small storage interface every backend implements. Keys are
// relative to the repository root ("<cluster>/<backup>/manifest.json") and
// always use "/" as the separator.
import type { Readable } from "node:stream";
import { ReplicatorError } from "../lib/errors.js";

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date | undefined;
  /** The store's entity tag (S3's ETag), when it gives one: changes whenever the object's bytes do. */
  etag?: string | undefined;
}

export interface PutResult {
  size: number;
}

export interface PutOptions {
  /** Create-only: fail with ObjectExists when the key already exists (small Buffer/string bodies). */
  ifNoneMatch?: boolean;
  /** About how many bytes a streamed body holds; sizes S3 multipart parts (objects up to 5 TiB). */
  expectedSize?: number;
}

/**
 * An object that a child process writes straight into a local file (a
 * file:// store): the bytes never pass through this process. The temp file
 * becomes the object only at `commit`, whole, as `put` makes it.
 */
export interface LocalObjectWrite {
  /** The temp file, open for writing: a child's stdout. */
  readonly fd: number;
  /** Its path, to read back what was written so far. */
  readonly path: string;
  /** Start an fdatasync of what is written so far, unless one runs (its failure surfaces at commit). */
  syncSoon(): void;
  /** fsync, put in place (as put: whole or not at all), sync the directory; the object's size. */
  commit(): Promise<PutResult>;
  /** Close and remove the temp file: no object. */
  abort(): Promise<void>;
  /** The store's own error for a child that failed writing into the file (a full disk), from its stderr; undefined when it was not that. */
  writeFailure(stderr: string): Error | undefined;
}

export interface ObjectStore {
  /** A human-readable location, e.g. `s3://bucket/prefix` (never with credentials). */
  readonly location: string;
  /**
   * Stream `body` into `key`. The object appears whole or not at all.
   * With `ifNoneMatch`, throws ObjectExists when the key is already there.
   */
  put(key: string, body: Readable | Buffer | string, opts?: PutOptions): Promise<PutResult>;
  /** Local stores only: an object written by a child process into a file (see LocalObjectWrite). */
  openLocalWrite?(key: string): Promise<LocalObjectWrite>;
  /**
   * A stream of the object's bytes. Throws ReplicatorError NotFound if absent.
   * Faults (StorageUnreachable, StorageError) are retried before they surface.
   */
  get(key: string): Promise<Readable>;
  /** Size and mtime, or undefined when the object does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /**
   * The names one level below `prefix` (a "" or "/"-terminated key prefix)
   * that hold objects, sorted: the first path segment of each key, without
   * listing every object (S3: a delimiter listing).
   */
  listChildren(prefix: string): Promise<string[]>;
  /** Delete the keys; a key that is already gone is not an error. */
  delete(keys: string[]): Promise<void>;
  /** Check that the store is reachable and the credentials work. */
  check(): Promise<void>;
  /**
   * Where the store is, for caches: its location plus anything else that
   * tells two stores apart (an S3 endpoint). Never holds credentials.
   */
  readonly identity: string;
  /** Release the store's connections; it is not used afterwards. */
  close(): void;
}

export function joinKey(...parts: string[]): string {
  return parts
    .map((p) => p.replace(/^\/+|\/+$/g, ""))
    .filter((p) => p.length > 0)
    .join("/");
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

/**
 * A fault that may pass if tried again (a dropped connection, a 5xx, a
 * throttle, a timeout), as opposed to a verdict (NotFound, AccessDenied, corrupt).
 */
const transientFaults = new WeakSet<object>();

export function markTransient<E extends object>(err: E): E {
  transientFaults.add(err);
  return err;
}

export function isTransient(err: unknown): boolean {
  return typeof err === "object" && err !== null && transientFaults.has(err);
}

/** A storage fault (never a verdict on the data): StorageUnreachable or StorageError. */
export function isStorageFault(err: unknown): boolean {
  return err instanceof ReplicatorError && (err.reason === "StorageUnreachable" || err.reason === "StorageError" || err.reason === "StorageFull");
}

/**
 * Run `fn` again while it fails with a transient fault, with jittered
 * exponential backoff (about 0.2, then 0.4 s; 3 attempts by default); the last error is thrown.
 */
export async function withRetries<T>(fn: () => Promise<T>, opts: { attempts?: number; baseMs?: number } = {}): Promise<T> {
  const attempts = opts.attempts ?? 3;
  const base = opts.baseMs ?? 200;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isTransient(err)) throw err;
      const delay = base * 2 ** (i - 1) * (0.5 + Math.random());
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Read a whole (small) object, retrying the GET when it fails part-way with a transient fault. */
export async function readObject(store: ObjectStore, key: string, opts: { attempts?: number } = {}): Promise<Buffer> {
  // Each request is already retried by the client; this covers a body that breaks part-way.
  return withRetries(async () => readAll(await store.get(key)), { attempts: opts.attempts ?? 3 });
}

/** At most `max` items, then "and N more": a message never carries an unbounded list. */
export function boundedList(items: string[], max = 5): string {
  if (items.length <= max) return items.join(", ");
  return `${items.slice(0, max).join(", ")} and ${(items.length - max).toLocaleString("en-US")} more`;
}
