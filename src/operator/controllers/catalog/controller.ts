// Catalog sync: a ReplicatorRepository's storage mirrored as ReplicatorBackup
// resources, at most one listing per sync interval; its schedules run from
// here too (../schedule). The rules are in ./decide.ts.
import {
  API_VERSION,
  repositorySpecSchema,
  validateSpec,
  type BackupStatus,
  type ReplicatorRepository,
  type RepositorySpec,
  type RepositoryStatus,
} from "../../../api/v1alpha1.js";
import type { Logger } from "../../../lib/log.js";
import { oneLine } from "../../../lib/errors.js";
import { formatBytes, positionText, type BackupEntry } from "../../../storage/catalog.js";
import { ManifestCache } from "../../../storage/manifest-cache.js";
import { Repository } from "../../../storage/repository.js";
import { childName, repositoryUrl } from "../../builders/jobs.js";
import { sameStatus, setCondition } from "../../conditions.js";
import { isAlreadyExists, isNotFound } from "../../../kube/rest.js";
import type { ScheduleController } from "../schedule/controller.js";
import type { ArchiveController, ListedBackups } from "../archive/controller.js";
import { BACKUP_NAME_LABEL, IMPORTED_ANNOTATION, USABLE_CONDITION, crPath, labelValue, type OperatorHost } from "../../host.js";
import { decideCatalogSync, faultReason, syncMessage, type CatalogObserved, type CatalogPlan, type ClusterListing, type MirrorResource } from "./decide.js";

/** Backups younger than this are not mirrored yet: their own resource may not have recorded them. */
const IMPORT_GRACE_MS = 30_000;
/** The first retry of a failed catalog sync; it doubles up to the sync interval. */
const SYNC_RETRY_BASE_MS = 5_000;

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type CatalogHost = Pick<OperatorHost, "backups" | "event" | "log" | "metrics" | "now" | "openStore" | "queue" | "repositories" | "rest">;

export class CatalogController {
  /** Consecutive failed catalog syncs, by queue key: the retry backs off. */
  private readonly syncFailures = new Map<string, number>();
  /** When each repository's catalog was last listed (monotonic ms) and at which generation. */
  private readonly lastSync = new Map<string, { at: number; generation: number }>();
  /**
   * The manifests each repository's last listings read, by "<ns>/<name>": a
   * sync reads only the manifests of backups that are new (manifests never
   * change; a listed object that differs from the cached one is read again).
   * A repository pointed at another store starts a new cache.
   */
  private readonly manifestCaches = new Map<string, { identity: string; cache: ManifestCache }>();

  /** The backups of each repository's last complete listing, by cluster, for the binlog archives' status. */
  private readonly listed = new Map<string, ListedBackups>();

  constructor(
    private readonly host: CatalogHost,
    private readonly schedules: ScheduleController,
    private readonly archives?: ArchiveController,
  ) {}

  async reconcileRepository(ns: string, name: string): Promise<void> {
    const r = this.host.repositories.get(`${ns}/${name}`);
    if (!r || r.metadata.deletionTimestamp) {
      this.manifestCaches.delete(`${ns}/${name}`);
      this.listed.delete(`${ns}/${name}`);
      this.archives?.forget(ns, name);
      return;
    }
    const log = this.host.log.child({ controller: "repository", namespace: ns, name });
    const now = this.host.now();
    const gen = r.metadata.generation ?? 0;
    const status: RepositoryStatus = { ...(r.status ?? {}), observedGeneration: gen };
    const spec = validateSpec(repositorySpecSchema, r.spec);
    if (!spec.ok) {
      status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: "InvalidSpec", message: spec.message }, now, gen);
    } else {
      status.url = repositoryUrl(spec.value);
      const nextSchedule = await this.schedules.runSchedules(r, spec.value, status, now, log);
      const syncMs = spec.value.syncIntervalSeconds * 1000;
      const key = `repository/${ns}/${name}`;
      this.host.queue.addAfter(key, nextSchedule ? Math.max(1000, Math.min(syncMs, nextSchedule.getTime() - now.getTime() + 500)) : syncMs);
      // One listing per sync interval, whatever else wakes the repository up (a resync, a status write, a schedule).
      const last = this.lastSync.get(key);
      const syncStarted = performance.now();
      const fresh = last !== undefined && last.generation === gen && syncStarted - last.at < syncMs - 1_000;
      const plan = fresh
        ? "fresh"
        : await this.syncCatalog(r, spec.value, log).catch((err: unknown): CatalogPlan => ({ kind: "fault", reason: faultReason(err), message: oneLine(err) }));
      if (plan === "fresh") {
        log.debug({}, "catalog synced less than an interval ago");
      } else if (!plan) {
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "True", reason: "NotSynced", message: "filesystem repositories are not listed by the operator" }, now, gen);
      } else if (plan.kind === "fault") {
        // A fault is not a verdict: the catalog is left as it is, and the sync is retried with backoff.
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: plan.reason, message: plan.message }, now, gen);
        const failures = (this.syncFailures.get(key) ?? 0) + 1;
        this.syncFailures.set(key, failures);
        this.host.queue.addAfter(key, Math.min(syncMs, SYNC_RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16)));
      } else {
        this.syncFailures.delete(key);
        // From its start: the timer set above fires one interval after it, and finds it due whatever the listing took.
        this.lastSync.set(key, { at: syncStarted, generation: gen });
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "True", reason: "Synced", message: syncMessage(plan) }, now, gen);
        status.backups = plan.total;
        status.lastSyncTime = now.toISOString();
      }
      // The archives are read from storage only right after a complete listing (once per sync interval).
      const listed = plan !== "fresh" && plan && plan.kind !== "fault" ? this.listed.get(`${ns}/${name}`) : undefined;
      await this.archives?.reconcile(r, spec.value, status, now, log, listed);
    }
    // lastSyncTime changes every sync; compare without it to avoid needless writes.
    const strip = (s: RepositoryStatus | undefined) => ({ ...(s ?? {}), lastSyncTime: undefined });
    if (!sameStatus(strip(status), strip(r.status)) || (status.lastSyncTime && !r.status?.lastSyncTime)) {
      await this.host.rest.patch(`${crPath("replicatorrepositories", ns, name)}/status`, { status });
    }
  }

  /**
   * Mirror storage as resources (rules: controllers/catalog/decide.ts): a
   * complete backup with no ReplicatorBackup gets one (phase Completed,
   * imported); a Completed resource whose backup is absent from a complete,
   * successful listing is deleted; a backup whose manifest is corrupt or of a
   * newer format keeps its resource, flagged `Usable=False`. A storage fault
   * (the listing or any manifest could not be read) changes nothing and is
   * thrown, so the repository's condition says it and the sync is retried.
   * Returns undefined for repositories the operator cannot list.
   */
  private async syncCatalog(repoObj: ReplicatorRepository, spec: RepositorySpec, log: Logger): Promise<CatalogPlan | undefined> {
    const ns = repoObj.metadata.namespace;
    const now = this.host.now();
    const store = await this.host.openStore(ns, spec);
    if (!store) return undefined;
    const existingObjs = this.host.backups.list().filter((b) => b.metadata.namespace === ns && (b.spec.repository ?? "default") === repoObj.metadata.name);
    const existing: MirrorResource[] = existingObjs.map((b) => ({
      name: b.metadata.name,
      cluster: b.status?.cluster,
      backupName: b.status?.backupName,
      phase: b.status?.phase,
      unusableReason: b.status?.conditions?.find((c) => c.type === USABLE_CONDITION && c.status === "False")?.reason,
    }));
    let observed: CatalogObserved;
    const entries = new Map<string, BackupEntry>();
    const cacheKey = `${ns}/${repoObj.metadata.name}`;
    const held = this.manifestCaches.get(cacheKey);
    const manifestCache = held?.identity === store.identity ? held.cache : new ManifestCache();
    this.manifestCaches.set(cacheKey, { identity: store.identity, cache: manifestCache });
    this.host.metrics.inc("replicator_storage_listings_total", { namespace: ns, repository: repoObj.metadata.name });
    try {
      await store.check();
      // Every cluster in storage (one delimiter listing, not every object), and every cluster a resource
      // mirrors: one whose last backup was deleted has no prefix left, and its resources must go too.
      const mirrored = existing.map((e) => e.cluster ?? "");
      const clusters = [...new Set([...(await store.listChildren("")), ...mirrored])].filter((c) => /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(c));
      const listings: ClusterListing[] = [];
      for (const cluster of clusters) {
        // Throws on any storage fault (no partial result): then nothing below runs.
        const { backups, corrupt } = await new Repository(store, cluster, { manifestCache }).list();
        for (const b of backups) entries.set(`${cluster}/${b.name}`, b);
        listings.push({
          cluster,
          backups: backups.map((b) => ({ name: b.name, finishedAt: b.manifest.finishedAt })),
          corrupt: corrupt.map((c) => ({ name: c.name, reason: (c as { reason?: string }).reason, error: c.error })),
        });
      }
      observed = { ok: true, clusters: listings };
      const byCluster: ListedBackups = new Map();
      for (const c of clusters) byCluster.set(c, []);
      for (const [k, b] of entries) byCluster.get(k.slice(0, k.indexOf("/")))?.push(b);
      this.listed.set(cacheKey, byCluster);
      // Only after a whole listing: the manifests of backups gone from storage drop out.
      manifestCache.sweep();
    } catch (err) {
      observed = { ok: false, reason: faultReason(err), message: oneLine(err) };
    }
    const plan = decideCatalogSync(observed, existing, now, IMPORT_GRACE_MS);
    if (plan.kind === "fault") {
      log.warn({ reason: plan.reason, err: plan.message }, "storage listing failed; nothing created or deleted");
      return plan;
    }
    for (const c of plan.create) {
      const b = entries.get(`${c.cluster}/${c.backup}`);
      if (!b) continue;
      const cluster = c.cluster;
      const crName = childName(cluster, b.name.toLowerCase());
      const m = b.manifest;
      const status: BackupStatus = {
        phase: "Completed",
        imported: true,
        backupName: b.name,
        cluster,
        method: m.method,
        sourcePod: b.source,
        size: b.size,
        sizeHuman: formatBytes(b.size),
        startedAt: m.startedAt,
        finishedAt: m.finishedAt,
        message: `found in storage (${repositoryUrl(spec)}/${cluster})`,
        conditions: [{ type: "Ready", status: "True", reason: "Imported", message: "mirrors a backup found in storage", lastTransitionTime: now.toISOString() }],
      };
      const pos = positionText(m.replication);
      if (pos) status.position = pos;
      try {
        await this.host.rest.create(crPath("replicatorbackups", ns), {
          apiVersion: API_VERSION,
          kind: "ReplicatorBackup",
          metadata: { name: crName, namespace: ns, annotations: { [IMPORTED_ANNOTATION]: "true" }, labels: { [BACKUP_NAME_LABEL]: labelValue(b.name), "replicator.dev/cluster": cluster } },
          spec: { repository: repoObj.metadata.name, cluster, method: m.method },
        });
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
      await this.host.rest.patch(`${crPath("replicatorbackups", ns, crName)}/status`, { status });
      log.info({ backup: b.name, resource: crName }, "backup found in storage; resource created");
    }
    const byName = new Map(existingObjs.map((b) => [b.metadata.name, b]));
    for (const u of plan.unusable) {
      const obj = u.resource ? byName.get(u.resource) : undefined;
      if (!obj) continue;
      const prev = obj.status?.conditions?.find((c) => c.type === USABLE_CONDITION);
      if (prev?.status === "False" && prev.reason === u.reason && prev.message === u.message) continue;
      const conditions = setCondition(obj.status?.conditions, { type: USABLE_CONDITION, status: "False", reason: u.reason, message: u.message }, now);
      await this.host.rest.patch(`${crPath("replicatorbackups", ns, obj.metadata.name)}/status`, { status: { conditions } });
      await this.host.event(obj, "Warning", u.reason, `${u.message}; the backup and its resource are kept (storage: ${repositoryUrl(spec)}/${u.cluster})`);
      log.warn({ backup: u.backup, resource: obj.metadata.name, reason: u.reason }, "backup unusable; resource kept");
    }
    for (const name of plan.usableAgain) {
      const obj = byName.get(name);
      if (!obj) continue;
      const conditions = setCondition(obj.status?.conditions, { type: USABLE_CONDITION, status: "True", reason: "Readable", message: "its manifest reads and verifies again" }, now);
      await this.host.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status: { conditions } });
    }
    for (const d of plan.delete) {
      await this.host.rest.delete(crPath("replicatorbackups", ns, d.resource)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      log.info({ backup: d.backup, resource: d.resource }, "backup gone from storage; resource deleted");
    }
    return plan;
  }
}
