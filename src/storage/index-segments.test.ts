// The manifest index against an in-memory store whose objects carry an ETag
// and a time as S3's do (and against the file store): a listing with nothing
// cached reads the index instead of every manifest, and a stale, raced,
// damaged or unreadable index gives exactly the listing without one.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { failed } from "../lib/errors.js";
import { MANIFEST, scanListing, TOMBSTONE, type Manifest } from "./catalog.js";
import { FsObjectStore } from "./fs/fs-store.js";
import { decodeSegment, encodeSegment, INDEX_PREFIX, isIndexSegment, newSegmentKey } from "./index-segments.js";
import { ManifestCache } from "./manifest-cache.js";
import { readAll, type ObjectInfo, type ObjectStore } from "./object-store.js";
import { Repository } from "./repository.js";
import { MemoryStore as BaseMemoryStore } from "../../test/harness/memory-store.js";

/** The shared in-memory store, with what these tests count. */
class MemoryStore extends BaseMemoryStore {
  /** Index segments now in the store. */
  segments(): string[] {
    return [...this.objects.keys()].filter((k) => k.startsWith(`${CLUSTER}/${INDEX_PREFIX}`)).sort();
  }
  manifestGets(): number {
    return this.gotten.filter((k) => k.endsWith(`/${MANIFEST}`)).length;
  }
  segmentGets(): number {
    return this.gotten.filter((k) => k.includes("/.index/")).length;
  }
}

const CLUSTER = "demo";

function manifest(i: number, cluster = CLUSTER): Manifest {
  const name = `2026${String(1 + Math.floor(i / 28) % 12).padStart(2, "0")}${String(1 + (i % 28)).padStart(2, "0")}T${String(i % 240000).padStart(6, "0")}Z-mysqldump-db-0`;
  return {
    formatVersion: 1,
    name,
    cluster,
    method: "mysqldump",
    kind: "logical",
    source: { host: "db-0", port: 3306, role: "master", serverId: 1 },
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: "2026-01-01T00:00:05.000Z",
    compression: "zstd",
    objects: [{ name: "data.sql.zst", size: 100 + i, sha256: "a".repeat(64) }],
    replication: { role: "master", gtid: `0-1-${i}` },
    details: { i },
    tool: { name: "replicator", version: "test" },
  };
}

async function add(store: ObjectStore, i: number): Promise<string> {
  const m = manifest(i);
  await store.put(`${CLUSTER}/${m.name}/data.sql.zst`, "x".repeat(m.objects[0]?.size ?? 0));
  await store.put(`${CLUSTER}/${m.name}/${MANIFEST}`, `${JSON.stringify(m, null, 2)}\n`);
  return m.name;
}

async function seed(store: ObjectStore, n: number, from = 0): Promise<string[]> {
  const names: string[] = [];
  for (let i = from; i < from + n; i++) names.push(await add(store, i));
  return names.sort();
}

/** A listing as the CLI's `list` makes it with an empty cache (a new machine): the index is read and kept. */
const cold = (store: ObjectStore): Promise<unknown> => new Repository(store, CLUSTER, { manifestCache: new ManifestCache() }).list();
/** The truth: every manifest read, no index read or written. */
const truth = (store: ObjectStore): Promise<unknown> => new Repository(store, CLUSTER, { index: false }).list();

async function segmentNames(store: MemoryStore): Promise<string[][]> {
  const out: string[][] = [];
  for (const key of store.segments()) {
    const entries = decodeSegment(await readAll(await store.get(key)), CLUSTER);
    if (typeof entries === "string") throw new Error(entries);
    out.push(entries.map((e) => e.name).sort());
  }
  return out;
}

describe("manifest index (in memory, S3-like)", () => {
  it("a listing that reads every manifest writes one segment; then a cold listing reads it instead of the manifests", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 40);
    const expected = await truth(store);
    expect(store.segments()).toEqual([]);

    store.gotten = [];
    expect(await cold(store)).toEqual(expected);
    expect(store.manifestGets()).toBe(40);
    expect(store.segments()).toHaveLength(1);
    expect(await segmentNames(store)).toEqual([names]);

    store.gotten = [];
    expect(await cold(store)).toEqual(expected);
    expect(store.manifestGets()).toBe(0);
    expect(store.segmentGets()).toBe(1);
    // Nothing to rewrite: the same one segment.
    expect(store.segments()).toHaveLength(1);
  });

  it("fills the manifest cache: the next listing reads neither the index nor a manifest", async () => {
    const store = new MemoryStore();
    await seed(store, 20);
    await cold(store);
    const cache = new ManifestCache();
    await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(cache.size).toBe(20);
    store.gotten = [];
    await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(store.gotten).toEqual([]);
  });

  it("a stale index (a backup deleted, tombstoned, added or half-written since) gives exactly the listing without one", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 30);
    await cold(store);
    expect(store.segments()).toHaveLength(1);
    const repo = new Repository(store, CLUSTER);
    await repo.delete(names[3] as string);
    await store.put(`${CLUSTER}/${names[4]}/${TOMBSTONE}`, "{}");
    // Half-written: the manifest gone, its data still there (an entry the listing does not confirm).
    await store.delete([`${CLUSTER}/${names[5]}/${MANIFEST}`]);
    const added = await seed(store, 3, 100);
    const want = await truth(store);
    store.gotten = [];
    const got = (await cold(store)) as { backups: { name: string }[]; incomplete: { name: string }[] };
    expect(got).toEqual(want);
    expect(got.backups.map((b) => b.name)).toEqual([...names.filter((_, i) => i < 3 || i > 5), ...added].sort());
    expect(got.incomplete.map((b) => b.name)).toEqual([names[5]]);
    // The three new manifests only.
    expect(store.manifestGets()).toBe(3);
    expect(store.segmentGets()).toBe(1);
  });

  it("an entry whose manifest object was replaced (another ETag) is not used: the manifest is read, and its verdict is the store's", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 12);
    await cold(store);
    const key = `${CLUSTER}/${names[2]}/${MANIFEST}`;
    await store.put(key, "{ not json");
    const want = await truth(store);
    store.gotten = [];
    const got = (await cold(store)) as { corrupt: { name: string; reason: string }[] };
    expect(got).toEqual(want);
    expect(got.corrupt).toEqual([expect.objectContaining({ name: names[2], reason: "CorruptManifest" })]);
    expect(store.gotten.filter((k) => k.endsWith(MANIFEST))).toEqual([key]);
  });

  it("a garbage segment, one of another cluster or format, or entries that are not manifests change nothing", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 12);
    const expected = await truth(store);
    const seg = (): string => `${CLUSTER}/${newSegmentKey(new Date())}`;
    await store.put(seg(), Buffer.from("\u0000\u0001 not gzip at all"));
    await store.put(seg(), gzipSync("{ not json"));
    await store.put(seg(), encodeSegment("other", names.map((n, i) => ({ name: n, validator: "x", manifest: manifest(i, "other") })), new Date()));
    await store.put(seg(), gzipSync(JSON.stringify({ index: "replicator-manifest-index", format: 2, cluster: CLUSTER, entries: [] })));
    // Entries with the right validators but a manifest that is not one (or names another backup).
    const listed = scanListing((await store.list(`${CLUSTER}/`)).map((o) => ({ ...o, key: o.key.slice(CLUSTER.length + 1) })));
    const { manifestValidator } = await import("./manifest-cache.js");
    const v = (n: string): string => manifestValidator(listed.manifests.get(n) as ObjectInfo) as string;
    await store.put(
      seg(),
      gzipSync(
        JSON.stringify({
          index: "replicator-manifest-index",
          format: 1,
          cluster: CLUSTER,
          entries: [
            { n: names[0], v: v(names[0] as string), m: { formatVersion: 1, name: names[0] } },
            { n: names[1], v: v(names[1] as string), m: manifest(7) },
            "junk",
          ],
        }),
      ),
    );
    store.gotten = [];
    const debug: string[] = [];
    const got = await new Repository(store, CLUSTER, { manifestCache: new ManifestCache(), debug: (_d, msg) => debug.push(msg) }).list();
    expect(got).toEqual(expected);
    expect(store.manifestGets()).toBe(12);
    expect(debug.filter((m) => m === "manifest index segment ignored")).toHaveLength(4);
    // That listing compacted the lot into one good segment.
    expect(await segmentNames(store)).toEqual([names]);
  });

  it("a segment that cannot be read (a fault) costs the manifest reads, under the usual fault rules", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 12);
    const expected = await truth(store);
    await cold(store);
    const [segment] = store.segments();
    store.failing.add(segment as string);
    store.gotten = [];
    const debug: string[] = [];
    expect(await new Repository(store, CLUSTER, { manifestCache: new ManifestCache(), debug: (_d, msg) => debug.push(msg) }).list()).toEqual(expected);
    expect(store.manifestGets()).toBe(12);
    expect(debug).toContain("manifest index segment could not be read: its manifests are read one by one");
    // And when a manifest cannot be read either, the fault is the listing's: never a partial one.
    store.failing.add(`${CLUSTER}/${names[6]}/${MANIFEST}`);
    for (const s of store.segments()) store.failing.add(s);
    await expect(cold(store)).rejects.toMatchObject({ reason: "StorageUnreachable" });
  });

  it("a segment compacted away between the listing and its read is skipped", async () => {
    const store = new MemoryStore();
    await seed(store, 12);
    const expected = await truth(store);
    await cold(store);
    const [segment] = store.segments();
    // The listing shows it, the read finds it gone.
    const real = store.get.bind(store);
    store.get = (key: string): Promise<Readable> => (key === segment ? Promise.reject(failed("NotFound", "gone")) : real(key));
    expect(await cold(store)).toEqual(expected);
  });

  it("concurrent writers: two compactions leave two good segments, many segments are compacted into one", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 20);
    await Promise.all([cold(store), cold(store)]);
    const afterRace = store.segments().length;
    expect(afterRace).toBeGreaterThanOrEqual(1);
    expect(await cold(store)).toEqual(await truth(store));
    // Nine segments of a few entries each (what nine writers that raced would leave).
    for (const k of store.segments()) await store.delete([k]);
    const listed = scanListing((await store.list(`${CLUSTER}/`)).map((o) => ({ ...o, key: o.key.slice(CLUSTER.length + 1) })));
    const { manifestValidator } = await import("./manifest-cache.js");
    for (let s = 0; s < 9; s++) {
      const part = names.filter((_, i) => i % 9 === s).map((n) => ({ name: n, validator: manifestValidator(listed.manifests.get(n) as ObjectInfo) as string, manifest: manifest(names.indexOf(n)) }));
      await store.put(`${CLUSTER}/${newSegmentKey(new Date())}`, encodeSegment(CLUSTER, part, new Date()));
    }
    store.gotten = [];
    expect(await cold(store)).toEqual(await truth(store));
    expect(store.segments()).toHaveLength(1);
    expect(await segmentNames(store)).toEqual([names]);
  });

  it("prune never takes the index for a backup, and the backups it deletes leave the index", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 15);
    await cold(store);
    const [before] = store.segments();
    const plan = await new Repository(store, CLUSTER).prune({ retain: 10, incompleteGraceMs: 0 });
    expect(plan.expire).toEqual(names.slice(0, 5));
    expect(plan.abandon).toEqual([]);
    expect(store.segments()).toHaveLength(1);
    expect(store.segments()[0]).not.toBe(before);
    expect(await segmentNames(store)).toEqual([names.slice(5)]);
    const want = await truth(store);
    store.gotten = [];
    expect(await cold(store)).toEqual(want);
    expect(store.manifestGets()).toBe(0);
    // A dry run writes nothing.
    const keys = [...store.objects.keys()];
    await new Repository(store, CLUSTER).prune({ retain: 1, dryRun: true });
    expect([...store.objects.keys()]).toEqual(keys);
  });

  it("restore's listing (no manifest cache) and readManifest never take a manifest from the index", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 12);
    await cold(store);
    // An index that lies (right validators, another position): only the listings that show backups may use it.
    const listed = scanListing((await store.list(`${CLUSTER}/`)).map((o) => ({ ...o, key: o.key.slice(CLUSTER.length + 1) })));
    const { manifestValidator } = await import("./manifest-cache.js");
    const lie = names.map((n, i) => ({ name: n, validator: manifestValidator(listed.manifests.get(n) as ObjectInfo) as string, manifest: { ...manifest(i), replication: { role: "master" as const, gtid: "9-9-9" } } }));
    for (const k of store.segments()) await store.delete([k]);
    await store.put(`${CLUSTER}/${newSegmentKey(new Date())}`, encodeSegment(CLUSTER, lie, new Date()));
    store.gotten = [];
    const { backups } = await new Repository(store, CLUSTER).list();
    expect(backups.map((b) => b.manifest.replication?.gtid)).not.toContain("9-9-9");
    expect(store.segmentGets()).toBe(0);
    expect((await new Repository(store, CLUSTER).readManifest(names[0] as string)).replication?.gtid).toBe("0-1-0");
  });

  it("REPLICATOR_INDEX=off: neither read nor written", async () => {
    const store = new MemoryStore();
    await seed(store, 12);
    process.env.REPLICATOR_INDEX = "off";
    try {
      await cold(store);
      expect(store.segments()).toEqual([]);
    } finally {
      delete process.env.REPLICATOR_INDEX;
    }
  });
});

describe("manifest index layout", () => {
  it("segment keys are never backup names, and only this format's segments are read", () => {
    const key = newSegmentKey(new Date("2026-11-30T12:00:00Z"));
    expect(key).toMatch(/^\.index\/v1\/20261130T120000Z-[0-9a-f]{12}\.json\.gz$/);
    expect(isIndexSegment(key)).toBe(true);
    const scan = scanListing([
      { key, size: 10, lastModified: new Date() },
      { key: ".index/v2/20261130T120000Z-0123456789ab.json.zst", size: 10, lastModified: new Date() },
      { key: ".index/v1/notes.txt", size: 10, lastModified: new Date() },
    ]);
    expect(scan.indexSegments.map((o) => o.key)).toEqual([key]);
    expect(scan.complete).toEqual([]);
    expect(scan.incomplete).toEqual([]);
    expect([...scan.keysByBackup.keys()]).toEqual([]);
  });

  it("a segment round-trips, and a cut one is worthless, not an error", () => {
    const entries = [{ name: manifest(1).name, validator: "v", manifest: manifest(1) }];
    const buf = encodeSegment(CLUSTER, entries, new Date());
    expect(decodeSegment(buf, CLUSTER)).toEqual([{ name: entries[0]?.name, validator: "v", manifest: manifest(1) }]);
    expect(typeof decodeSegment(buf.subarray(0, buf.length - 9), CLUSTER)).toBe("string");
    expect(decodeSegment(buf, "other")).toMatch(/cluster/);
  });
});

describe("manifest index (file store)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "replicator-index-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("a cold listing reads the segment, keyed by size and time (no ETag), and equals the listing without it", async () => {
    const store = new FsObjectStore(dir);
    const names = await seed(store, 12);
    const expected = await truth(store);
    await cold(store);
    const segs = (await store.list(`${CLUSTER}/.index/`)).map((o) => o.key);
    expect(segs).toHaveLength(1);
    let manifestReads = 0;
    const real = store.get.bind(store);
    store.get = (key: string): Promise<Readable> => {
      if (key.endsWith(MANIFEST)) manifestReads++;
      return real(key);
    };
    expect(await cold(store)).toEqual(expected);
    expect(manifestReads).toBe(0);
    await new Repository(store, CLUSTER).delete(names[0] as string);
    const want = await truth(store);
    manifestReads = 0;
    expect(await cold(store)).toEqual(want);
    expect(manifestReads).toBe(0);
  });
});
