// Binlog indexes already read, in memory, for a process that reads the same
// archive again and again (the operator: a slave waiting to provision, the
// repository's archive status). An entry is keyed by the store's identity and
// the index's key, and used only while the listing shows the same object (its
// ETag, size and last-modified time: manifestValidator); anything else reads
// the object again. The index of a closed binlog is written once, so it is read
// once; the open binlog's partial index is read again after each flush that
// changed it.
//
// The cache never decides what exists: the listing does, and a listing or a
// read that fails throws as it would without a cache (a fault, never an empty
// archive). It holds only indexes that were read, parsed and checked. Memory is
// bounded: entries whose object a listing of their server no longer shows are
// dropped, and beyond `maxEntries` the least recently used go.
import { manifestValidator } from "../storage/manifest-cache.js";
import type { ObjectInfo, ObjectStore } from "../storage/object-store.js";
import type { BinlogIndex } from "./layout.js";

/** About 1 KB each: 10,000 indexes (a year of hourly binlogs, or several servers) stay near 10 MB. */
export const DEFAULT_MAX_INDEXES = 10_000;

export class ArchiveIndexCache {
  private readonly entries = new Map<string, { validator: string; index: BinlogIndex }>();

  constructor(private readonly maxEntries = DEFAULT_MAX_INDEXES) {}

  /** The index read earlier from this very object, or undefined. */
  get(store: ObjectStore, o: ObjectInfo): BinlogIndex | undefined {
    const validator = manifestValidator(o);
    if (validator === undefined) return undefined;
    const k = cacheKey(store, o.key);
    const e = this.entries.get(k);
    if (!e) return undefined;
    this.entries.delete(k);
    if (e.validator !== validator) return undefined;
    // Most recently used last.
    this.entries.set(k, e);
    return e.index;
  }

  /** Keep an index that was read, parsed and checked from the listed object `o`. */
  set(store: ObjectStore, o: ObjectInfo, index: BinlogIndex): void {
    const validator = manifestValidator(o);
    if (validator === undefined) return;
    const k = cacheKey(store, o.key);
    this.entries.delete(k);
    this.entries.set(k, { validator, index });
    while (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
  }

  /** A complete listing of `prefix` showed `listed`: the entries under it that are gone (pruned, replaced by a complete file) drop out. */
  retain(store: ObjectStore, prefix: string, listed: Iterable<string>): void {
    const base = cacheKey(store, prefix);
    const keep = new Set<string>();
    for (const key of listed) keep.add(cacheKey(store, key));
    for (const k of this.entries.keys()) if (k.startsWith(base) && !keep.has(k)) this.entries.delete(k);
  }

  get size(): number {
    return this.entries.size;
  }
}

function cacheKey(store: ObjectStore, key: string): string {
  return `${store.identity}\n${key}`;
}
