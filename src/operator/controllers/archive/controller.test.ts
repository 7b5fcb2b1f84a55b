// The repository's binlog archive status against an in-memory store (a port
// we own), through ArchiveController.reconcile as the catalog sync calls it:
// an index object is read only when the listing shows it new or changed, and a
// storage fault keeps the last readings with Recoverable=Unknown, never an
// empty archive or a gap.
import { describe, expect, it } from "vitest";
import { repositorySpecSchema, type BinlogArchiveStatus, type ReplicatorRepository, type RepositoryStatus } from "../../../api/v1alpha1.js";
import { silentLogger } from "../../../lib/log.js";
import { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import { INDEX_SUFFIX, serverPrefix, type BinlogIndex } from "../../../pitr/layout.js";
import type { BackupEntry } from "../../../storage/catalog.js";
import { MemoryStore } from "../../../../test/harness/memory-store.js";
import { testManifest } from "../../../../test/harness/fixtures.js";
import { ARCHIVE_T0, archiveTime, binlogIndex, putArchived } from "../../../../test/harness/archive-fixtures.js";
import { ArchiveController, RECOVERABLE_CONDITION, type ArchiveHost, type ListedBackups } from "./controller.js";

const CLUSTER = "db";
const SID = 1;
const T0 = ARCHIVE_T0;
const at = archiveTime;
const archive = (store: MemoryStore, idx: BinlogIndex): Promise<void> => putArchived(store, CLUSTER, idx);

const indexGets = (store: MemoryStore): string[] => store.gotten.filter((k) => k.endsWith(INDEX_SUFFIX));

function setup() {
  const store = new MemoryStore();
  const host = {
    deployments: { list: () => [] },
    // No pods: the entry waits for its master (no Deployment is made) and its status is read with the last known server id.
    podsIn: () => [],
    repositories: { list: () => [] },
    metrics: { set: () => undefined, clear: () => undefined },
    openStore: () => Promise.resolve(store),
  } as unknown as ArchiveHost;
  const cache = new ArchiveIndexCache();
  const controller = new ArchiveController(host, cache);
  const specInput = { s3: { bucket: "bkp" }, binlogArchives: [{ cluster: CLUSTER, source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } } }] };
  const spec = repositorySpecSchema.parse(specInput);
  const base = testManifest("20261130T100000Z-mysqldump-db-0", CLUSTER, new Date(T0), 4);
  const listed: ListedBackups = new Map([[CLUSTER, [{ name: base.name, time: new Date(T0), method: "mysqldump", source: "db-0", manifest: base, size: 4 } satisfies BackupEntry]]]);
  let last: BinlogArchiveStatus[] = [{ cluster: CLUSTER, serverId: SID }];
  /** One catalog sync's call: the status it writes becomes the next one's previous status. */
  const reconcile = async (now: Date): Promise<BinlogArchiveStatus> => {
    const r: ReplicatorRepository = { apiVersion: "replicator.dev/v1alpha1", kind: "ReplicatorRepository", metadata: { name: "backups", namespace: "db", generation: 1 }, spec: specInput, status: { binlogArchives: last } };
    const status: RepositoryStatus = {};
    store.gotten = [];
    await controller.reconcile(r, spec, status, now, silentLogger(), listed);
    last = status.binlogArchives ?? [];
    return last[0] as BinlogArchiveStatus;
  };
  return { store, cache, reconcile };
}

const recoverable = (s: BinlogArchiveStatus) => s.conditions?.find((c) => c.type === RECOVERABLE_CONDITION);

describe("the repository's binlog archive status (ArchiveController, in-memory store)", () => {
  it("reads each index once: a second sync reads none, later syncs only the new and the changed ones", async () => {
    const { store, cache, reconcile } = setup();
    await archive(store, binlogIndex(1, 0, 10, true));
    await archive(store, binlogIndex(2, 10, 20, true));
    await archive(store, binlogIndex(3, 20, 30, true));
    await archive(store, binlogIndex(4, 30, 35, false));

    const first = await reconcile(new Date(T0 + 3_600_000));
    expect(indexGets(store)).toHaveLength(4);
    expect(first).toMatchObject({ serverId: SID, firstRecoverableTime: new Date(T0 + 5_000).toISOString(), lastRecoverableTime: at(49), lastArchivedFile: "mysql-bin.000004.partial" });
    expect(recoverable(first)).toMatchObject({ status: "True", reason: "Recoverable" });

    const second = await reconcile(new Date(T0 + 3_615_000));
    expect(indexGets(store)).toEqual([]);
    // The same readings from the cached indexes; only the clock moved (lag = now - the newest event).
    expect({ ...second, lastSyncTime: undefined, lagSeconds: undefined }).toEqual({ ...first, lastSyncTime: undefined, lagSeconds: undefined });
    expect(second.lagSeconds).toBe((first.lagSeconds ?? 0) + 15);

    // A flush replaces the open binlog's partial index: only it is read again.
    await archive(store, binlogIndex(4, 30, 38, false));
    await reconcile(new Date(T0 + 3_630_000));
    expect(indexGets(store)).toEqual([`${serverPrefix(CLUSTER, SID)}mysql-bin.000004.partial${INDEX_SUFFIX}`]);

    // The binlog closes and the next one opens: its complete index and the new partial one are read, nothing else.
    await archive(store, binlogIndex(4, 30, 40, true));
    await archive(store, binlogIndex(5, 40, 42, false));
    const third = await reconcile(new Date(T0 + 3_645_000));
    expect(indexGets(store).sort()).toEqual([`${serverPrefix(CLUSTER, SID)}mysql-bin.000004${INDEX_SUFFIX}`, `${serverPrefix(CLUSTER, SID)}mysql-bin.000005.partial${INDEX_SUFFIX}`]);
    expect(third).toMatchObject({ lastRecoverableTime: at(59), lastArchivedFile: "mysql-bin.000005.partial" });
    // The superseded partial index dropped out of the cache: it holds what storage holds.
    expect(cache.size).toBe(5);
  });

  it("a failed listing or index read is a fault: the last readings stay, Recoverable=Unknown, never empty or a gap; the next sync reads only what it missed", async () => {
    const { store, reconcile } = setup();
    await archive(store, binlogIndex(1, 0, 10, true));
    await archive(store, binlogIndex(2, 10, 20, true));
    await archive(store, binlogIndex(3, 20, 25, false));
    const good = await reconcile(new Date(T0 + 3_600_000));
    expect(recoverable(good)).toMatchObject({ status: "True" });

    store.failingLists.add(serverPrefix(CLUSTER, SID));
    const unlisted = await reconcile(new Date(T0 + 3_615_000));
    expect(recoverable(unlisted)).toMatchObject({ status: "Unknown", reason: "StorageUnreachable" });
    expect(recoverable(unlisted)?.message).toBe(`the archive could not be read: cannot reach the store while listing ${serverPrefix(CLUSTER, SID)}`);
    expect(unlisted).toMatchObject({ firstRecoverableTime: good.firstRecoverableTime, lastRecoverableTime: good.lastRecoverableTime, lastArchivedFile: good.lastArchivedFile });
    store.failingLists.clear();

    // Two new files, the first of whose indexes cannot be read: had it been skipped, the archive would show a gap.
    await archive(store, binlogIndex(3, 20, 30, true));
    await archive(store, binlogIndex(4, 30, 40, true));
    await archive(store, binlogIndex(5, 40, 41, false));
    const missed = `${serverPrefix(CLUSTER, SID)}mysql-bin.000003${INDEX_SUFFIX}`;
    store.failing.add(missed);
    const unread = await reconcile(new Date(T0 + 3_630_000));
    expect(recoverable(unread)).toMatchObject({ status: "Unknown", reason: "StorageUnreachable" });
    expect(unread).toMatchObject({ lastRecoverableTime: good.lastRecoverableTime, lastArchivedFile: good.lastArchivedFile });
    store.failing.clear();

    const again = await reconcile(new Date(T0 + 3_645_000));
    expect(indexGets(store).sort()).toEqual([missed, `${serverPrefix(CLUSTER, SID)}mysql-bin.000004${INDEX_SUFFIX}`, `${serverPrefix(CLUSTER, SID)}mysql-bin.000005.partial${INDEX_SUFFIX}`]);
    expect(recoverable(again)).toMatchObject({ status: "True", reason: "Recoverable" });
    expect(again).toMatchObject({ lastRecoverableTime: at(59), lastArchivedFile: "mysql-bin.000005.partial" });
  });
});

describe("a filesystem repository's binlog archive (the operator mounts no claim)", () => {
  it("says in one line that the operator does not read it, instead of leaving the status empty", async () => {
    let opened = 0;
    const host = {
      deployments: { list: () => [] },
      podsIn: () => [],
      repositories: { list: () => [] },
      metrics: { set: () => undefined, clear: () => undefined },
      openStore: () => {
        opened++;
        return Promise.resolve(undefined);
      },
    } as unknown as ArchiveHost;
    const specInput = { filesystem: { claimName: "backups", path: "/pitr" }, binlogArchives: [{ source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } } }] };
    const r: ReplicatorRepository = { apiVersion: "replicator.dev/v1alpha1", kind: "ReplicatorRepository", metadata: { name: "local", namespace: "db", generation: 1 }, spec: specInput };
    const status: RepositoryStatus = {};
    // The catalog sync lists no filesystem repository: it hands over no listing.
    await new ArchiveController(host).reconcile(r, repositorySpecSchema.parse(specInput), status, new Date(T0), silentLogger(), undefined);
    const s = status.binlogArchives?.[0] as BinlogArchiveStatus;
    expect(recoverable(s)).toMatchObject({
      status: "Unknown",
      reason: "NotSynced",
      message:
        "the operator does not read filesystem repositories, so no recoverable range is shown here; the archiver writes file:///repository/pitr/db/binlogs (claim backups): " +
        "`replicator restore --until TIME --target URL --dry-run --repository file:///repository/pitr --cluster db` in a pod that mounts the claim at /repository prints what a restore would replay",
    });
    expect(s.lastRecoverableTime).toBeUndefined();
    expect(opened).toBe(0);
  });
});
