// The archive as the operator's seed planning reads it (a slave waiting to be
// provisioned: one reconcile about every 15 s), against an in-memory store:
// the same chains and the same bridge as an uncached read, an index object
// read only when new or changed, and a failed listing or read thrown as the
// storage fault it is (planSeed reports it as the gate's reason): never an
// empty archive, never a bridge chosen from part of it.
import { describe, expect, it } from "vitest";
import { decideBridge, readArchiveChains } from "../../../pitr/bridge.js";
import { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import { archivePrefix, INDEX_SUFFIX, serverPrefix } from "../../../pitr/layout.js";
import { Repository } from "../../../storage/repository.js";
import { MemoryStore } from "../../../../test/harness/memory-store.js";
import { binlogIndex, putArchived } from "../../../../test/harness/archive-fixtures.js";
import { faultReason } from "../catalog/decide.js";
import { observeArchiveChains } from "./observe.js";

const CLUSTER = "db";
/** The master purged its binlogs up to GTID 0-2-25 and is at 0-2-60: a backup at 0-2-5 needs the archive. */
const MASTER = { oldestFile: "mysql-bin.000004", oldestStart: "0-2-25", current: "0-2-60" };
const indexGets = (store: MemoryStore): string[] => store.gotten.filter((k) => k.endsWith(INDEX_SUFFIX));

async function seeded(): Promise<{ store: MemoryStore; repo: Repository }> {
  const store = new MemoryStore();
  // An old master's archive (server 1) and the current one's (server 2).
  await putArchived(store, CLUSTER, binlogIndex(1, 0, 3, true, 1));
  await putArchived(store, CLUSTER, binlogIndex(1, 0, 10, true, 2));
  await putArchived(store, CLUSTER, binlogIndex(2, 10, 20, true, 2));
  await putArchived(store, CLUSTER, binlogIndex(3, 20, 30, true, 2));
  await putArchived(store, CLUSTER, binlogIndex(4, 30, 33, false, 2));
  return { store, repo: new Repository(store, CLUSTER) };
}

describe("observeArchiveChains (the seed planning's archive read)", () => {
  it("gives what an uncached read gives, and a second reconcile reads no index; a new file costs one read", async () => {
    const { store, repo } = await seeded();
    const fresh = await readArchiveChains(repo);
    const cache = new ArchiveIndexCache();

    store.gotten = [];
    const first = await observeArchiveChains(repo, cache);
    expect(indexGets(store)).toHaveLength(5);
    expect(first).toEqual(fresh);
    const bridge = decideBridge(first, "0-2-5", MASTER, "b1", `${repo.where}/binlogs`);
    expect(bridge.ok && bridge.plan.files.map((f) => f.file)).toEqual(["mysql-bin.000001", "mysql-bin.000002", "mysql-bin.000003"]);

    store.gotten = [];
    const second = await observeArchiveChains(repo, cache);
    expect(indexGets(store)).toEqual([]);
    expect(second).toEqual(first);
    expect(decideBridge(second, "0-2-5", MASTER, "b1", `${repo.where}/binlogs`)).toEqual(bridge);

    await putArchived(store, CLUSTER, binlogIndex(4, 30, 40, true, 2));
    store.gotten = [];
    const third = await observeArchiveChains(repo, cache);
    expect(indexGets(store)).toEqual([`${serverPrefix(CLUSTER, 2)}mysql-bin.000004${INDEX_SUFFIX}`]);
    expect(third).toEqual(await readArchiveChains(repo));
  });

  it("a failed listing or index read throws the storage fault, with the cache full too: never [] and never one server's chain alone", async () => {
    const { store, repo } = await seeded();
    const cache = new ArchiveIndexCache();
    await observeArchiveChains(repo, cache);

    for (const prefix of [archivePrefix(CLUSTER), serverPrefix(CLUSTER, 2)]) {
      store.failingLists.add(prefix);
      const err = await observeArchiveChains(repo, cache).catch((e: unknown) => e);
      expect(err).toMatchObject({ reason: "StorageUnreachable", message: `cannot reach the store while listing ${prefix}` });
      // What planSeed makes of it: the gate's reason is the fault.
      expect(faultReason(err)).toBe("StorageUnreachable");
      store.failingLists.clear();
    }

    await putArchived(store, CLUSTER, binlogIndex(4, 30, 40, true, 2));
    store.failing.add(`${serverPrefix(CLUSTER, 2)}mysql-bin.000004${INDEX_SUFFIX}`);
    await expect(observeArchiveChains(repo, cache)).rejects.toMatchObject({ reason: "StorageUnreachable" });
    store.failing.clear();
    expect(await observeArchiveChains(repo, cache)).toEqual(await readArchiveChains(repo));
  });
});
