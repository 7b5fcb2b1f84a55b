// Binlog archivers: a ReplicatorRepository's spec.binlogArchives, each run
// as a Deployment of `replicator binlog-archive` against the cluster's
// current master (called from the repository's reconcile, ../catalog). The
// archive in storage is read at the catalog sync interval for the status
// and the metrics. The rules are in ./decide.ts.
import type { BinlogArchiveStatus, ReplicatorRepository, RepositorySpec, RepositoryStatus } from "../../../api/v1alpha1.js";
import type { Logger } from "../../../lib/log.js";
import { oneLine } from "../../../lib/errors.js";
import { isAlreadyExists, isNotFound } from "../../../kube/rest.js";
import { archivedServers, readServerArchive } from "../../../pitr/archive.js";
import { buildChain, type Chain } from "../../../pitr/plan.js";
import { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import type { BackupEntry } from "../../../storage/catalog.js";
import { ARCHIVE_CONTAINER, ARCHIVE_OPERATION, SPEC_HASH_ANNOTATION, archiverName, archiverSelector, buildArchiverDeployment } from "../../builders/archiver.js";
import { LABEL_CLUSTER, LABEL_OPERATION, repositoryUrl } from "../../builders/jobs.js";
import { setCondition } from "../../conditions.js";
import { ownerSts, nsPath, type DeploymentObj, type OperatorHost } from "../../host.js";
import type { PodLike } from "../../observe.js";
import { ARCHIVING_CONDITION, archiverHealth, decideArchives, readArchive, type ArchiveEntryPlan, type ArchiverPod, type BaseBackup } from "./decide.js";
import { faultReason } from "../catalog/decide.js";

export const RECOVERABLE_CONDITION = "Recoverable";

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type ArchiveHost = Pick<OperatorHost, "connectWith" | "deployments" | "log" | "masterAddress" | "metrics" | "openStore" | "owner" | "pods" | "podsIn" | "repositories" | "rest" | "settings">;

/** What a catalog sync hands over: the repository's backups by cluster, from a complete listing. */
export type ListedBackups = Map<string, BackupEntry[]>;

const LOGICAL = "logical";

type StoredReading = Pick<BinlogArchiveStatus, "serverId" | "firstRecoverableTime" | "lastRecoverableTime" | "lastArchivedFile" | "lagSeconds" | "lastSyncTime">;

export class ArchiveController {
  constructor(
    private readonly host: ArchiveHost,
    /** Binlog indexes already read: each sync reads only the indexes that are new or changed since the last. */
    private readonly archiveIndexes: ArchiveIndexCache = new ArchiveIndexCache(),
  ) {}

  /** The repositories whose status a pod's change may move: its archiver's, or those archiving its StatefulSet (or it). */
  repositoriesFor(pod: PodLike): string[] {
    const ns = pod.metadata.namespace ?? "";
    const labels = pod.metadata.labels ?? {};
    const out = new Set<string>();
    if (labels[LABEL_OPERATION] === ARCHIVE_OPERATION && labels["app.kubernetes.io/instance"]) out.add(labels["app.kubernetes.io/instance"]);
    const sts = ownerSts(pod);
    for (const r of this.host.repositories.list()) {
      if (r.metadata.namespace !== ns) continue;
      const entries = (r.spec as { binlogArchives?: { source?: { statefulSet?: string; pod?: string } }[] }).binlogArchives ?? [];
      if (entries.some((e) => (sts !== undefined && e.source?.statefulSet === sts) || e.source?.pod === pod.metadata.name)) out.add(r.metadata.name);
    }
    return [...out];
  }

  /**
   * Make the archiver Deployments match the spec and fill
   * status.binlogArchives. `listed` is set when the catalog has just listed
   * the repository's storage (once per sync interval): then the archives are
   * read too; otherwise the last readings are kept.
   */
  async reconcile(r: ReplicatorRepository, spec: RepositorySpec, status: RepositoryStatus, now: Date, log: Logger, listed: ListedBackups | undefined): Promise<void> {
    const ns = r.metadata.namespace;
    const repoName = r.metadata.name;
    const plans = decideArchives(spec, this.host.podsIn(ns));
    const existing = this.host.deployments.list().filter((d) => d.metadata.namespace === ns && d.metadata.labels?.["app.kubernetes.io/instance"] === repoName && d.metadata.labels[LABEL_OPERATION] === ARCHIVE_OPERATION);
    const keep = new Set<string>();
    const entries: BinlogArchiveStatus[] = [];
    for (const plan of plans) {
      const name = archiverName(repoName, plan.cluster);
      const dep = existing.find((d) => d.metadata.name === name);
      if (plan.kind !== "off") keep.add(name);
      if (plan.kind === "run") await this.apply(r, spec, plan, dep, log);
      else if (plan.kind === "off" && dep && !dep.metadata.deletionTimestamp) await this.remove(ns, name, plan.cluster, log);
      const prev = r.status?.binlogArchives?.find((s) => s.cluster === plan.cluster);
      entries.push(await this.entryStatus(r, spec, plan, prev, name, dep !== undefined || plan.kind === "run", now, listed, log));
    }
    // Entries removed from the spec: their Deployments go (the archive in storage stays).
    for (const d of existing) {
      if (keep.has(d.metadata.name) || d.metadata.deletionTimestamp) continue;
      await this.remove(ns, d.metadata.name, d.metadata.labels?.[LABEL_CLUSTER] ?? "?", log);
    }
    const clusters = new Set(entries.map((e) => e.cluster));
    for (const s of r.status?.binlogArchives ?? []) if (!clusters.has(s.cluster)) this.host.metrics.clear({ namespace: ns, repository: repoName, cluster: s.cluster });
    if (entries.length > 0) status.binlogArchives = entries;
    else if (r.status?.binlogArchives?.length) status.binlogArchives = [];
  }

  /** The repository is gone: its Deployments go by their owner reference; its series go from /metrics. */
  forget(ns: string, repoName: string): void {
    this.host.metrics.clear({ namespace: ns, repository: repoName });
  }

  private async apply(r: ReplicatorRepository, spec: RepositorySpec, plan: Extract<ArchiveEntryPlan, { kind: "run" }>, dep: DeploymentObj | undefined, log: Logger): Promise<void> {
    const ns = r.metadata.namespace;
    const desired = buildArchiverDeployment({
      owner: this.host.owner(r),
      repo: spec,
      entry: { cluster: plan.cluster, source: plan.source, flushIntervalSeconds: plan.flushIntervalSeconds },
      masterPod: plan.masterPod,
      masterAddress: this.host.masterAddress(ns, { pod: plan.masterPod, address: plan.address }),
      settings: this.host.settings.jobs,
    });
    const path = nsPath("/apis/apps/v1", ns, "deployments", desired.metadata.name);
    // Still being deleted (foreground: until its pod is gone): the new one waits, so two archivers never overlap.
    if (dep?.metadata.deletionTimestamp) return;
    if (!dep) {
      try {
        await this.host.rest.create(nsPath("/apis/apps/v1", ns, "deployments"), desired);
        log.info({ cluster: plan.cluster, deployment: desired.metadata.name, master: plan.masterPod }, "binlog archiver created");
        return;
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
    } else if (dep.metadata.annotations?.[SPEC_HASH_ANNOTATION] === desired.metadata.annotations[SPEC_HASH_ANNOTATION]) {
      return;
    }
    // A merge patch replaces lists whole (containers, env, volumes); the selector never changes.
    await this.host.rest.patch(path, { metadata: { labels: desired.metadata.labels, annotations: desired.metadata.annotations }, spec: desired.spec });
    const was = (dep?.spec as { template?: { metadata?: { labels?: Record<string, string> } } } | undefined)?.template?.metadata?.labels?.["replicator.dev/source-pod"];
    log.info({ cluster: plan.cluster, deployment: desired.metadata.name, master: plan.masterPod, was }, was && was !== plan.masterPod ? "binlog archiver follows the new master" : "binlog archiver updated");
  }

  private async remove(ns: string, name: string, cluster: string, log: Logger): Promise<void> {
    try {
      await this.host.rest.delete(nsPath("/apis/apps/v1", ns, "deployments", name), { propagationPolicy: "Foreground" });
      log.info({ cluster, deployment: name }, "binlog archiver removed; the archive in storage is kept");
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  private async entryStatus(
    r: ReplicatorRepository,
    spec: RepositorySpec,
    plan: ArchiveEntryPlan,
    prev: BinlogArchiveStatus | undefined,
    deployment: string,
    hasDeployment: boolean,
    now: Date,
    listed: ListedBackups | undefined,
    log: Logger,
  ): Promise<BinlogArchiveStatus> {
    const ns = r.metadata.namespace;
    const gen = r.metadata.generation ?? 0;
    const labels = { namespace: ns, repository: r.metadata.name, cluster: plan.cluster };
    let conditions = prev?.conditions;
    const out: BinlogArchiveStatus = { cluster: plan.cluster };
    if (plan.kind === "off") {
      conditions = setCondition(conditions, { type: ARCHIVING_CONDITION, status: "False", reason: plan.reason, message: plan.message }, now, gen);
      this.host.metrics.set("replicator_binlog_archive_ready", labels, 0);
    } else {
      const pods = this.host.podsIn(ns).filter((p) => matches(p.metadata.labels, archiverSelector(r.metadata.name, plan.cluster))) as unknown as ArchiverPod[];
      const health = archiverHealth(pods, ARCHIVE_CONTAINER, now);
      out.deployment = deployment;
      out.ready = health.ready;
      if (plan.kind === "run") out.masterPod = plan.masterPod;
      else if (prev?.masterPod) out.masterPod = prev.masterPod;
      // No master to follow: that is the news, whatever the old pod says.
      const c = plan.kind === "wait" && !health.ready
        ? { status: "False" as const, reason: plan.reason, message: `${plan.message}${hasDeployment ? "; the archiver reconnects once it is" : "; the archiver starts once it is"}` }
        : { status: health.status, reason: health.reason, message: health.message };
      conditions = setCondition(conditions, { type: ARCHIVING_CONDITION, ...c }, now, gen);
      this.host.metrics.set("replicator_binlog_archive_ready", labels, health.ready ? 1 : 0);
    }
    // The storage readings: the last ones, unless the catalog has just listed the repository.
    let stored: StoredReading = prev
      ? { serverId: prev.serverId, firstRecoverableTime: prev.firstRecoverableTime, lastRecoverableTime: prev.lastRecoverableTime, lastArchivedFile: prev.lastArchivedFile, lagSeconds: prev.lagSeconds, lastSyncTime: prev.lastSyncTime }
      : {};
    if (listed && plan.kind !== "off") {
      const reading = await this.readStorage(r, spec, plan, prev, listed.get(plan.cluster) ?? [], now, log);
      if ("fault" in reading) {
        // A fault is not a verdict: the last readings stay, the condition says why they are not fresh.
        conditions = setCondition(conditions, { type: RECOVERABLE_CONDITION, status: "Unknown", reason: reading.fault.reason, message: `the archive could not be read: ${reading.fault.message}` }, now, gen);
      } else {
        stored = {
          serverId: reading.serverId,
          firstRecoverableTime: reading.firstRecoverableTime,
          lastRecoverableTime: reading.lastRecoverableTime,
          lastArchivedFile: reading.lastArchivedFile,
          lagSeconds: reading.lagSeconds,
          lastSyncTime: now.toISOString(),
        };
        const rc = reading.problem
          ? { status: "False" as const, reason: reading.problem.reason, message: reading.problem.message }
          : reading.lastRecoverableTime
            ? { status: "True" as const, reason: "Recoverable", message: `point-in-time recovery from ${reading.firstRecoverableTime ?? "?"} to ${reading.lastRecoverableTime}` }
            : { status: "False" as const, reason: "ArchiveEmpty", message: `nothing archived yet under ${repositoryUrl(spec)}/${plan.cluster}/binlogs/${reading.serverId}` };
        conditions = setCondition(conditions, { type: RECOVERABLE_CONDITION, ...rc }, now, gen);
        if (reading.lastRecoverableTime) this.host.metrics.set("replicator_binlog_archive_last_recoverable_timestamp_seconds", labels, Math.round(Date.parse(reading.lastRecoverableTime) / 1000));
        if (reading.lagSeconds !== undefined) this.host.metrics.set("replicator_binlog_archive_lag_seconds", labels, reading.lagSeconds);
      }
    } else if (spec.filesystem && plan.kind !== "off") {
      // The operator mounts no claim (the catalog sync does not list it either): one line says so, instead of a status that stays empty.
      const where = `${repositoryUrl(spec)}/${plan.cluster}/binlogs (claim ${spec.filesystem.claimName})`;
      const message = `the operator does not read filesystem repositories, so no recoverable range is shown here; the archiver writes ${where}: \`replicator restore --until TIME --target URL --dry-run --repository ${repositoryUrl(spec)} --cluster ${plan.cluster}\` in a pod that mounts the claim at /repository prints what a restore would replay`;
      conditions = setCondition(conditions, { type: RECOVERABLE_CONDITION, status: "Unknown", reason: "NotSynced", message }, now, gen);
    }
    for (const [k, v] of Object.entries(stored) as [string, unknown][]) if (v !== undefined) Object.assign(out, { [k]: v });
    out.conditions = conditions;
    return out;
  }

  /**
   * Read the current master's archive: its server id and GTID position from
   * the master itself (a new master archives under its own id), else the
   * last known id; then the archive's indexes. Throws nothing: a fault is returned.
   */
  private async readStorage(
    r: ReplicatorRepository,
    spec: RepositorySpec,
    plan: Exclude<ArchiveEntryPlan, { kind: "off" }>,
    prev: BinlogArchiveStatus | undefined,
    backups: BackupEntry[],
    now: Date,
    log: Logger,
  ): Promise<(ReturnType<typeof readArchive> & { serverId: number }) | { fault: { reason: string; message: string } }> {
    const ns = r.metadata.namespace;
    let serverId = prev?.serverId;
    let masterGtid: string | undefined;
    if (plan.kind === "run") {
      try {
        const c = await this.host.connectWith(ns, plan.source.credentialsSecret, plan.address, plan.source.port, `master ${plan.masterPod}`);
        try {
          const [rows] = await c.query("SELECT @@server_id AS sid, @@gtid_binlog_pos AS pos");
          const row = (rows as { sid?: unknown; pos?: unknown }[])[0];
          serverId = Number(row?.sid);
          masterGtid = typeof row?.pos === "string" ? row.pos : undefined;
        } finally {
          c.destroy();
        }
      } catch (err) {
        log.debug({ cluster: plan.cluster, err: oneLine(err) }, "could not read the master's server id; using the last known one");
      }
    }
    if (serverId === undefined) return { fault: { reason: "SourceNotReady", message: `the server id of master ${plan.kind === "run" ? plan.masterPod : "?"} is not known yet` } };
    try {
      const store = await this.host.openStore(ns, spec);
      if (!store) return { fault: { reason: "NotSynced", message: "filesystem repositories are not read by the operator" } };
      const archive = await readServerArchive(store, plan.cluster, serverId, this.archiveIndexes);
      const base: BaseBackup[] = backups
        .filter((b) => b.manifest.kind === LOGICAL && b.manifest.replication?.gtid)
        .map((b) => ({ name: b.name, finishedAt: b.manifest.finishedAt, gtid: b.manifest.replication?.gtid ?? "" }));
      // The previous masters' archives (after a switchover): a restore stitches them into this one.
      const others: Chain[] = [];
      for (const sid of await archivedServers(store, plan.cluster)) {
        if (sid === serverId) continue;
        others.push({ serverId: sid, where: `${repositoryUrl(spec)}/${plan.cluster}/binlogs/${sid}`, files: buildChain(await readServerArchive(store, plan.cluster, sid, this.archiveIndexes)) });
      }
      return { serverId, ...readArchive(archive, base, masterGtid, now, `${repositoryUrl(spec)}/${plan.cluster}/binlogs/${serverId}`, others) };
    } catch (err) {
      const reason = (err as { reason?: unknown }).reason;
      return { fault: { reason: typeof reason === "string" ? reason : faultReason(err), message: oneLine(err) } };
    }
  }
}

function matches(labels: Record<string, string> | undefined, selector: Record<string, string>): boolean {
  return Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}
