// The one small storage interface every backend implements. Keys are
// relative to the repository root ("<cluster>/<backup>/manifest.json") and
// always use "/" as the separator.
import type { Readable } from "node:stream";

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date | undefined;
}

export interface PutResult {
  size: number;
}

export interface ObjectStore {
  /** A human-readable location, e.g. `s3://bucket/prefix` (never with credentials). */
  readonly location: string;
  /** Stream `body` into `key`. The object appears whole or not at all. */
  put(key: string, body: Readable | Buffer | string): Promise<PutResult>;
  /** A stream of the object's bytes. Throws StorageError NotFound if absent. */
  get(key: string): Promise<Readable>;
  /** Size and mtime, or undefined when the object does not exist. */
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, sorted by key. */
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Delete the keys; a key that is already gone is not an error. */
  delete(keys: string[]): Promise<void>;
  /** Check that the store is reachable and the credentials work. */
  check(): Promise<void>;
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
