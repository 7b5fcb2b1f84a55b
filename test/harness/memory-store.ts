// An in-memory object store for unit tests of the repository layer (a port we
// own), whose objects carry an ETag and a time as S3's do.
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { failed } from "../../src/lib/errors.js";
import { readAll, type ObjectInfo, type ObjectStore } from "../../src/storage/object-store.js";

/** S3-like: every put is a new ETag (the MD5 of the bytes) and a new time; GETs are recorded by key; keys and listings can be made to fail. */
export class MemoryStore implements ObjectStore {
  readonly location = "mem://test";
  readonly identity = "mem://test at memory";
  readonly objects = new Map<string, { body: Buffer; etag: string; at: Date }>();
  gotten: string[] = [];
  /** GETs so far. */
  get gets(): number {
    return this.gotten.length;
  }
  failing = new Set<string>();
  /** Prefixes whose listings fail (list and listChildren), as a store that cannot be reached does. */
  failingLists = new Set<string>();
  private clock = Date.parse("2026-01-01T00:00:00Z");

  async put(key: string, body: Readable | Buffer | string): Promise<{ size: number }> {
    const buf = typeof body === "string" || Buffer.isBuffer(body) ? Buffer.from(body) : await readAll(body);
    this.clock += 1000;
    this.objects.set(key, { body: buf, etag: `"${createHash("md5").update(buf).digest("hex")}"`, at: new Date(this.clock) });
    return { size: buf.length };
  }
  get(key: string): Promise<Readable> {
    this.gotten.push(key);
    if (this.failing.has(key)) return Promise.reject(failed("StorageUnreachable", `cannot reach the store while reading ${key}`));
    const o = this.objects.get(key);
    if (!o) return Promise.reject(failed("NotFound", `object ${key} not found`));
    return Promise.resolve(Readable.from([o.body]));
  }
  head(key: string): Promise<ObjectInfo | undefined> {
    const o = this.objects.get(key);
    return Promise.resolve(o ? { key, size: o.body.length, lastModified: o.at, etag: o.etag } : undefined);
  }
  list(prefix: string): Promise<ObjectInfo[]> {
    if (this.failingLists.has(prefix)) return Promise.reject(failed("StorageUnreachable", `cannot reach the store while listing ${prefix}`));
    const out = [...this.objects].filter(([k]) => k.startsWith(prefix)).map(([key, o]) => ({ key, size: o.body.length, lastModified: o.at, etag: o.etag }));
    return Promise.resolve(out.sort((a, b) => (a.key < b.key ? -1 : 1)));
  }
  listChildren(prefix: string): Promise<string[]> {
    if (this.failingLists.has(prefix)) return Promise.reject(failed("StorageUnreachable", `cannot reach the store while listing ${prefix}`));
    return Promise.resolve([...new Set([...this.objects.keys()].filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length).split("/")[0] ?? ""))].sort());
  }
  delete(keys: string[]): Promise<void> {
    for (const k of keys) this.objects.delete(k);
    return Promise.resolve();
  }
  check(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    // nothing held
  }
}
