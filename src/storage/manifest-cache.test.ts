// The manifest cache against an in-memory store (a port we own), whose
// objects carry an ETag and a time as S3's do: a cached listing is the same
// listing, a replaced or deleted manifest is never served from the cache, and
// a damaged cache file costs reads, never a verdict.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MANIFEST, TOMBSTONE, type Manifest } from "./catalog.js";
import { loadManifestCache, manifestCacheDir, manifestCacheFile, ManifestCache, manifestValidator, saveManifestCache } from "./manifest-cache.js";
import { Repository } from "./repository.js";
import { MemoryStore } from "../../test/harness/memory-store.js";


const CLUSTER = "demo";

function manifest(i: number): Manifest {
  const name = `202601${String(1 + (i % 28)).padStart(2, "0")}T${String(i).padStart(6, "0")}Z-mysqldump-db-0`;
  return {
    formatVersion: 1,
    name,
    cluster: CLUSTER,
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

async function seed(store: MemoryStore, n: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const m = manifest(i);
    await store.put(`${CLUSTER}/${m.name}/data.sql.zst`, "x".repeat(m.objects[0]?.size ?? 0));
    await store.put(`${CLUSTER}/${m.name}/${MANIFEST}`, `${JSON.stringify(m, null, 2)}\n`);
    names.push(m.name);
  }
  return names.sort();
}

describe("manifest cache (in memory)", () => {
  it("a cached listing equals an uncached one, and reads only what is new", async () => {
    const store = new MemoryStore();
    await seed(store, 40);
    const cache = new ManifestCache();
    const uncached = await new Repository(store, CLUSTER).list();
    store.gotten = [];
    const first = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(store.gets).toBe(40);
    expect(first).toEqual(uncached);

    store.gotten = [];
    const second = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(store.gets).toBe(0);
    expect(second).toEqual(uncached);

    // One new backup: one read.
    const m = manifest(99);
    await store.put(`${CLUSTER}/${m.name}/${MANIFEST}`, JSON.stringify(m));
    store.gotten = [];
    const third = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(store.gets).toBe(1);
    expect(third).toEqual(await new Repository(store, CLUSTER).list());
  });

  it("a manifest replaced under the same key (another ETag) is read again: corrupt bytes are reported, not the cached copy", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 3);
    const cache = new ManifestCache();
    await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    const victim = names[1] as string;
    const key = `${CLUSTER}/${victim}/${MANIFEST}`;
    await store.put(key, '{"formatVersion": 1, "name": "trunc');
    const listed = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(listed.backups.map((b) => b.name)).toEqual([names[0], names[2]]);
    expect(listed.corrupt).toEqual([expect.objectContaining({ name: victim, reason: "CorruptManifest" })]);
    // The same size, another ETag: still read again.
    const original = manifest(1);
    const other = { ...original, details: { i: 7 } };
    await store.put(key, `${JSON.stringify(other, null, 2)}\n`);
    const again = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(again.backups.find((b) => b.name === victim)?.manifest.details).toEqual({ i: 7 });
  });

  it("a tombstoned or deleted backup leaves the cached listing at once, and the cache forgets it", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 4);
    const cache = new ManifestCache();
    await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    cache.sweep(); // as catalog sync does after each whole listing
    expect(cache.size).toBe(4);
    await store.put(`${CLUSTER}/${names[0]}/${TOMBSTONE}`, "{}");
    await new Repository(store, CLUSTER).delete(names[3] as string);
    const listed = await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    expect(listed.backups.map((b) => b.name)).toEqual([names[1], names[2]]);
    cache.sweep();
    expect(cache.size).toBe(2);
  });

  it("a fault reading a manifest the cache does not hold fails the listing whole", async () => {
    const store = new MemoryStore();
    const names = await seed(store, 3);
    const cache = new ManifestCache();
    await new Repository(store, CLUSTER, { manifestCache: cache }).list();
    const m = manifest(50);
    const key = `${CLUSTER}/${m.name}/${MANIFEST}`;
    await store.put(key, JSON.stringify(m));
    store.failing.add(key);
    await expect(new Repository(store, CLUSTER, { manifestCache: cache }).list()).rejects.toMatchObject({ reason: "StorageUnreachable" });
    // The cached ones are not affected by a fault on another.
    store.failing.clear();
    expect((await new Repository(store, CLUSTER, { manifestCache: cache }).list()).backups.map((b) => b.name)).toEqual([...names, m.name].sort());
  });

  it("no validator, no cache: an object without an ETag or a time is always read", () => {
    expect(manifestValidator({ key: "k", size: 1, lastModified: undefined })).toBeUndefined();
    expect(manifestValidator({ key: "k", size: 1, lastModified: undefined, etag: '"e"' })).toBe('"e"|1|');
    expect(manifestValidator({ key: "k", size: 1, lastModified: new Date(5), etag: "" })).toBe("|1|5");
  });
});

describe("manifest cache file", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "replicator-cache-test-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function listThroughFile(store: MemoryStore): Promise<Awaited<ReturnType<Repository["list"]>>> {
    const scope = { identity: store.identity, cluster: CLUSTER };
    const file = manifestCacheFile(dir, scope);
    const manifestCache = await loadManifestCache(file, scope);
    // The cache file alone (index-segments.test.ts covers the repository's index, which would fill it).
    const listing = await new Repository(store, CLUSTER, { manifestCache, index: false }).list();
    await saveManifestCache(file, scope, manifestCache);
    return listing;
  }

  it("survives the process: a second run reads no manifest and lists the same", async () => {
    const store = new MemoryStore();
    await seed(store, 20);
    const uncached = await new Repository(store, CLUSTER).list();
    expect(await listThroughFile(store)).toEqual(uncached);
    store.gotten = [];
    expect(await listThroughFile(store)).toEqual(uncached);
    expect(store.gets).toBe(0);
  });

  it("a corrupt cache file is ignored: damaged entries are read again, never reported corrupt", async () => {
    const store = new MemoryStore();
    await seed(store, 10);
    const uncached = await new Repository(store, CLUSTER).list();
    await listThroughFile(store);
    const file = manifestCacheFile(dir, { identity: store.identity, cluster: CLUSTER });
    const text = await readFile(file, "utf8");
    const lines = text.split("\n");

    // One entry's manifest edited (still valid JSON, but not what was stored): its hash no longer matches.
    lines[3] = (lines[3] as string).replace('"mysqldump"', '"mariabackup"');
    // Another cut in half.
    lines[5] = (lines[5] as string).slice(0, 90);
    await writeFile(file, lines.join("\n"));
    store.gotten = [];
    expect(await listThroughFile(store)).toEqual(uncached);
    expect(store.gets).toBe(2);

    // Garbage, an empty file, a foreign header: everything read again, the same listing.
    for (const junk of ["\u0000\u0001garbage{{{", "", `{"cache":"replicator-manifests","format":999}\n${lines.slice(1).join("\n")}`]) {
      await writeFile(file, junk);
      store.gotten = [];
      const listed = await listThroughFile(store);
      expect(listed).toEqual(uncached);
      expect(listed.corrupt).toEqual([]);
      expect(store.gets).toBe(10);
    }
  });

  it("a cache file of another repository or cluster is never used", async () => {
    const store = new MemoryStore();
    await seed(store, 3);
    await listThroughFile(store);
    const a = manifestCacheFile(dir, { identity: store.identity, cluster: CLUSTER });
    const b = manifestCacheFile(dir, { identity: "s3://other at http://elsewhere", cluster: CLUSTER });
    expect(b).not.toBe(a);
    await writeFile(b, await readFile(a));
    expect((await loadManifestCache(b, { identity: "s3://other at http://elsewhere", cluster: CLUSTER })).size).toBe(0);
  });

  it("the directory follows XDG_CACHE_HOME, and REPLICATOR_MANIFEST_CACHE=off turns it off", () => {
    expect(manifestCacheDir({ XDG_CACHE_HOME: "/x/cache", HOME: "/home/u" })).toBe("/x/cache/replicator/manifests");
    expect(manifestCacheDir({ HOME: "/home/u" })).toBe("/home/u/.cache/replicator/manifests");
    expect(manifestCacheDir({ XDG_CACHE_HOME: "relative", HOME: "/home/u" })).toBe("/home/u/.cache/replicator/manifests");
    expect(manifestCacheDir({ HOME: "/home/u", REPLICATOR_MANIFEST_CACHE: "off" })).toBeUndefined();
  });
});
