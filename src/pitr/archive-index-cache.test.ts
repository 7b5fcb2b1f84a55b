// The operator's cache of binlog indexes: a changed object is a miss, and its
// memory stays bounded (entries gone from a listing drop out; beyond the
// limit the least recently used go).
import { describe, expect, it } from "vitest";
import { MemoryStore } from "../../test/harness/memory-store.js";
import { binlogIndex, putArchived } from "../../test/harness/archive-fixtures.js";
import { readServerArchive } from "./archive.js";
import { ArchiveIndexCache } from "./archive-index-cache.js";
import { INDEX_SUFFIX } from "./layout.js";

const indexGets = (store: MemoryStore): number => store.gotten.filter((k) => k.endsWith(INDEX_SUFFIX)).length;

describe("ArchiveIndexCache", () => {
  it("holds at most maxEntries, dropping the least recently used, and never serves a changed object", async () => {
    const store = new MemoryStore();
    for (let n = 1; n <= 5; n++) await putArchived(store, "db", binlogIndex(n, (n - 1) * 10, n * 10, true));
    const cache = new ArchiveIndexCache(3);
    const whole = await readServerArchive(store, "db", 1, cache);
    expect(whole.complete.map((i) => i.file)).toHaveLength(5);
    expect(cache.size).toBe(3);
    store.gotten = [];
    // The three read last are cached; the two first are read again (and push out others).
    expect(await readServerArchive(store, "db", 1, cache)).toEqual(whole);
    expect(indexGets(store)).toBeGreaterThanOrEqual(2);
    expect(cache.size).toBe(3);

    const big = new ArchiveIndexCache();
    await readServerArchive(store, "db", 1, big);
    // Rewritten with other content (a new ETag and time): read again, the new content used.
    await putArchived(store, "db", { ...binlogIndex(5, 40, 50, true), lastEventTime: "2026-12-01T00:00:00.000Z" });
    store.gotten = [];
    const again = await readServerArchive(store, "db", 1, big);
    expect(indexGets(store)).toBe(1);
    expect(again.complete[4]?.lastEventTime).toBe("2026-12-01T00:00:00.000Z");
    // Deleted (pruned) objects drop out at the next listing.
    await store.delete([`db/binlogs/1/mysql-bin.000001${INDEX_SUFFIX}`, "db/binlogs/1/mysql-bin.000001"]);
    await readServerArchive(store, "db", 1, big);
    expect(big.size).toBe(4);
  });
});
