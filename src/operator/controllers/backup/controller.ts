// Backups: a ReplicatorBackup becomes one backup Job (or, for volumesnapshot,
// a snapshot the operator takes itself: ../snapshot), followed to its end;
// then events, metrics and retention. The rules are in ./decide.ts.
import { backupSpecSchema, validateSpec, type ReplicatorBackup, type RepositorySpec, type ServerRef } from "../../../api/v1alpha1.js";
import type { Logger } from "../../../lib/log.js";
import { oneLine } from "../../../lib/errors.js";
import { getSlaveStatus } from "../../../db/replication.js";
import { formatBytes, positionText } from "../../../storage/catalog.js";
import { Repository } from "../../../storage/repository.js";
import { pruneWithArchive } from "../../../pitr/retention.js";
import { LOCAL_DATA_METHODS, buildBackupJob, childName, dataVolumeOf, type DataVolumeMount } from "../../builders/jobs.js";
import { sameStatus } from "../../conditions.js";
import { isAlreadyExists, isNotFound } from "../../../kube/rest.js";
import { isContainersReady, jobState } from "../../observe.js";
import { podPlan } from "../provision/observe.js";
import { isSnapshotBackup, type SnapshotController } from "../snapshot/controller.js";
import { BACKUP_NAME_LABEL, IMPORTED_ANNOTATION, crPath, labelValue, nsPath, type OperatorHost } from "../../host.js";
import { computeBackupStatus, decideBackup, positionVerdict, type BackupObserved, type BackupPlan } from "./decide.js";
import { repositorySecretProblem, serverRefSecretProblem } from "../secrets.js";

/** The Job mounts a PersistentVolumeClaim (builders/jobs.ts: a physical backup's "data" volume). */
function holdsVolume(job: unknown): boolean {
  const vols = (job as { spec?: { template?: { spec?: { volumes?: { persistentVolumeClaim?: unknown }[] } } } } | undefined)?.spec?.template?.spec?.volumes ?? [];
  return vols.some((v) => v.persistentVolumeClaim !== undefined);
}

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type BackupHost = Pick<OperatorHost, "backups" | "connectWith" | "event" | "expectations" | "jobPods" | "jobs" | "log" | "metrics" | "now" | "openStore" | "owner" | "pods" | "podsIn" | "queue" | "repoObserved" | "rest" | "restores" | "settings">;

export class BackupController {
  constructor(
    private readonly host: BackupHost,
    private readonly snapshots: SnapshotController,
  ) {}

  async reconcileBackup(ns: string, name: string): Promise<void> {
    const b = this.host.backups.get(`${ns}/${name}`);
    if (!b || b.metadata.deletionTimestamp) return;
    const log = this.host.log.child({ controller: "backup", namespace: ns, name });
    const jobName = childName(name, "backup");
    const ownerKey = `backup/${ns}/${name}`;
    // A Job this operator created and the informer has not shown yet: wait for it (runtime/expectations.ts).
    if (!this.host.expectations.satisfied(ownerKey)) {
      this.host.queue.addAfter(ownerKey, this.host.expectations.remainingMs(ownerKey));
      return;
    }
    // A snapshot backup this process ran (or one a previous process left Running).
    const snap = await this.snapshots.beforeDecide(b);
    if (snap === "busy") return;
    // From the last busyBackupPods() to the recorded expectation below nothing awaits: two workers never both see a pod free.
    const busyPods = this.busyBackupPods(ns, jobName);
    const spec = validateSpec(backupSpecSchema, b.spec);
    const observed: BackupObserved = {
      spec,
      status: b.status,
      generation: b.metadata.generation ?? 0,
      repository: this.host.repoObserved(ns, spec.ok ? spec.value.repository : (b.spec.repository ?? "default")),
      job: this.host.jobs.get(`${ns}/${jobName}`),
      jobPods: this.host.jobPods(ns, jobName),
      pods: this.host.podsIn(ns),
      busyPods,
      imported: b.metadata.annotations?.[IMPORTED_ANNOTATION] === "true",
      jobHoldsVolume: holdsVolume(this.host.jobs.get(`${ns}/${jobName}`)),
    };
    let plan = snap ?? decideBackup(observed);
    if (plan.kind === "needPreflight" && spec.ok && spec.value.source) {
      observed.secretProblem = await this.secretProblem(ns, spec.value.source, spec.value.repository);
      // The reads above awaited: another worker may have started a backup of the same pod meanwhile.
      observed.busyPods = this.busyBackupPods(ns, jobName);
      plan = decideBackup(observed);
    }
    if (plan.kind === "done") {
      if (plan.releaseJob) await this.releaseJob(ns, plan.releaseJob, log);
      else log.debug({}, "nothing to do");
      return;
    }
    if (plan.kind === "createJob" && !isSnapshotBackup(plan.spec.method ?? plan.repo.method)) {
      this.host.expectations.expectCreation(`Job/${ns}/${jobName}`, [ownerKey, `pod/${ns}/${plan.sourcePod}`]);
    }
    if (plan.kind === "createJob" && isSnapshotBackup(plan.spec.method ?? plan.repo.method)) {
      // No Job: the operator takes the snapshot itself, and records the outcome when it ends.
      const early = await this.snapshots.start(b, plan);
      if (early) await this.finishSnapshotBackup(b, early, log);
      return;
    }
    if (snap) return this.finishSnapshotBackup(b, snap, log);
    await this.actBackup(b, plan, jobName, log);
    const status = computeBackupStatus(b.status, plan, this.host.now(), b.metadata.generation ?? 0, jobName);
    if (status && !sameStatus(status, b.status)) {
      await this.host.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status });
      if (status.phase !== b.status?.phase) log.info({ phase: status.phase, reason: status.conditions?.find((c) => c.type === "Ready")?.reason }, "backup phase changed");
    }
  }

  /** What is wrong with the Secrets a backup Job reads ("" when nothing): named here, not as a pod stuck in CreateContainerConfigError. */
  private async secretProblem(ns: string, source: ServerRef, repoName: string): Promise<string> {
    const repo = this.host.repoObserved(ns, repoName);
    return (
      (await serverRefSecretProblem(this.host.rest, ns, source, "source")) ??
      (repo.found && repo.spec.ok ? await repositorySecretProblem(this.host.rest, ns, repoName, repo.spec.value) : undefined) ??
      ""
    );
  }

  /**
   * Delete a finished Job whose pods mount the source's data volume: a
   * completed pod keeps its volumes in use until it is deleted, so deleting
   * that PVC would hang in Terminating for the Job's whole TTL. The outcome
   * is in the resource's status and events; Background propagation takes the
   * pods with it.
   */
  private async releaseJob(ns: string, job: string, log: Logger): Promise<void> {
    await this.host.rest.delete(nsPath("/apis/batch/v1", ns, "jobs", job), { propagationPolicy: "Background" }).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    log.info({ job }, "finished backup job deleted: its pods no longer hold the source's data volume");
  }

  /**
   * Backup Jobs running against each pod of a namespace: those in the Job
   * cache, those created and not yet in it (expectations), and the operator's
   * own snapshot backups. Pod name → Job names.
   */
  private busyBackupPods(ns: string, ownJob: string): Map<string, string[]> {
    const busy = new Map<string, string[]>();
    const add = (pod: string, job: string): void => {
      const list = busy.get(pod) ?? [];
      if (!list.includes(job)) list.push(job);
      busy.set(pod, list);
    };
    for (const j of this.host.jobs.list()) {
      if (j.metadata.namespace !== ns || j.metadata.name === ownJob) continue;
      if (j.metadata.labels?.["replicator.dev/operation"] !== "backup" || jobState(j).state !== "running") continue;
      const pod = j.metadata.labels["replicator.dev/source-pod"];
      if (pod) add(pod, j.metadata.name);
    }
    for (const p of this.host.podsIn(ns)) {
      for (const child of this.host.expectations.pending(`pod/${ns}/${p.metadata.name}`)) {
        const job = child.slice(child.lastIndexOf("/") + 1);
        if (job !== ownJob) add(p.metadata.name, job);
      }
    }
    for (const [pod, names] of this.snapshots.busyPods(ns)) for (const n of names) add(pod, n);
    return busy;
  }

  /** Record a snapshot backup's outcome like a Job's (events, metrics, retention, status), without a Job name. */
  private async finishSnapshotBackup(b: ReplicatorBackup, plan: BackupPlan, log: Logger): Promise<void> {
    const { namespace: ns, name } = b.metadata;
    await this.actBackup(b, plan, "", log);
    const status = computeBackupStatus(b.status, plan, this.host.now(), b.metadata.generation ?? 0);
    if (status) {
      delete status.jobName;
      await this.host.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status });
      log.info({ phase: status.phase, reason: status.conditions?.find((c) => c.type === "Ready")?.reason }, "backup phase changed");
    }
    this.snapshots.recorded(b);
  }

  private async actBackup(b: ReplicatorBackup, plan: BackupPlan, jobName: string, log: Logger): Promise<void> {
    const ns = b.metadata.namespace;
    switch (plan.kind) {
      case "done":
      case "running":
      case "needPreflight":
        return;
      case "invalid":
        await this.host.event(b, "Warning", "InvalidSpec", plan.message);
        return;
      case "wait":
        if (b.status?.conditions?.find((c) => c.type === "Ready")?.reason !== plan.reason) await this.host.event(b, "Normal", plan.reason, plan.message);
        this.host.queue.addAfter(`backup/${ns}/${b.metadata.name}`, plan.requeueMs);
        return;
      case "createJob": {
        let dataVolume: DataVolumeMount | undefined;
        const method = plan.spec.method ?? plan.repo.method;
        if (LOCAL_DATA_METHODS.has(method)) {
          const src = this.host.pods.get(`${ns}/${plan.sourcePod}`) as Parameters<typeof dataVolumeOf>[0] | undefined;
          const dv = src ? dataVolumeOf(src) : { error: `pod ${plan.sourcePod} not found` };
          if ("error" in dv) {
            this.host.expectations.creationFailed(`Job/${ns}/${jobName}`);
            await this.host.event(b, "Warning", "NoDataVolume", `${method} backs up the data files of ${plan.sourcePod}: ${dv.error}`);
            this.host.queue.addAfter(`backup/${ns}/${b.metadata.name}`, 15_000);
            return;
          }
          dataVolume = dv;
        }
        const job = buildBackupJob({
          owner: this.host.owner(b),
          spec: plan.spec,
          repo: plan.repo,
          cluster: plan.cluster,
          sourcePod: plan.sourcePod,
          sourceAddress: plan.sourceAddress,
          settings: this.host.settings.jobs,
          dataVolume,
        });
        job.metadata.annotations = { "replicator.dev/source-role": plan.sourceRole };
        try {
          await this.host.rest.create(nsPath("/apis/batch/v1", ns, "jobs"), job);
          log.info({ job: jobName, source: plan.sourcePod }, "backup job created");
          await this.host.event(b, "Normal", "BackupStarted", `backup Job ${jobName} started on ${plan.sourcePod} (${plan.sourceRole})`);
        } catch (err) {
          // It is there already (a restart adopting its own Job): the next reconcile follows it.
          if (!isAlreadyExists(err)) {
            this.host.expectations.creationFailed(`Job/${ns}/${jobName}`);
            throw err;
          }
          if (this.host.jobs.get(`${ns}/${jobName}`)) this.host.expectations.observed(`Job/${ns}/${jobName}`);
          log.info({ job: jobName }, "backup job already exists; adopting it");
        }
        return;
      }
      case "succeeded": {
        this.host.metrics.backupFinished(ns, b.status?.cluster ?? "", "succeeded", plan.result);
        const verdict = positionVerdict(plan.result, b.status?.sourcePod);
        if (verdict.ok) {
          await this.host.event(b, "Normal", "BackupSucceeded", `backup ${plan.result.name ?? ""} stored: ${formatBytes(plan.result.size ?? 0)}, position ${positionText(plan.result.replication) ?? "-"}`);
        } else {
          await this.host.event(b, "Warning", verdict.reason, `backup ${plan.result.name ?? ""} stored (${formatBytes(plan.result.size ?? 0)}), but ${verdict.message}`);
        }
        if (plan.result.name) {
          const dup = labelValue(plan.result.name);
          for (const other of this.host.backups.list()) {
            if (other.metadata.namespace !== ns || other.metadata.name === b.metadata.name) continue;
            if (other.metadata.annotations?.[IMPORTED_ANNOTATION] !== "true" || other.metadata.labels?.[BACKUP_NAME_LABEL] !== dup) continue;
            await this.host.rest.delete(crPath("replicatorbackups", ns, other.metadata.name)).catch((err: unknown) => {
              if (!isNotFound(err)) throw err;
            });
          }
        }
        await this.applyRetention(b, plan.repo, log).catch(async (err: unknown) => {
          log.warn({ err: oneLine(err) }, "retention failed");
          await this.host.event(b, "Warning", "RetentionFailed", oneLine(err));
        });
        return;
      }
      case "failed": {
        this.host.metrics.backupFinished(ns, b.status?.cluster ?? "", "failed", undefined);
        await this.host.event(b, "Warning", plan.reason || "BackupFailed", plan.message);
        // A slave that was taken offline for the backup must replicate again,
        // even when the Job was killed before it could restart it.
        const job = this.host.jobs.get(`${ns}/${plan.jobName}`);
        const role = (job as { metadata: { annotations?: Record<string, string> } } | undefined)?.metadata.annotations?.["replicator.dev/source-role"];
        if (plan.sourcePod && plan.spec.source && role === "slave") {
          await this.ensureReplicating(ns, plan.sourcePod, plan.spec.source, log).then(
            (restarted) => (restarted ? this.host.event(b, "Normal", "ReplicationRestarted", `replication restarted on ${plan.sourcePod ?? ""} after the failed backup`) : undefined),
            (err: unknown) => this.host.event(b, "Warning", "ReplicationNotRestarted", `could not restart replication on ${plan.sourcePod ?? ""}: ${oneLine(err)}`),
          );
        }
        return;
      }
    }
  }

  /** START SLAVE on a pod if replication is configured but not running. Returns true if it had to. */
  private async ensureReplicating(ns: string, pod: string, ref: ServerRef, log: Logger): Promise<boolean> {
    const p = this.host.pods.get(`${ns}/${pod}`);
    const address = p?.status?.podIP;
    if (!address) return false;
    const c = await this.host.connectWith(ns, ref.credentialsSecret, address, ref.port, pod);
    try {
      const st = await getSlaveStatus(c);
      if (!st || (st.ioRunning && st.sqlRunning)) return false;
      await c.query("START SLAVE");
      log.info({ pod }, "replication restarted after a failed backup");
      return true;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Backups that running restores use, by cluster: retention never deletes them. */
  private backupsInUse(ns: string, repoName: string): Set<string> {
    const used = new Set<string>();
    for (const r of this.host.restores.list()) {
      if (r.metadata.namespace !== ns || (r.spec.repository ?? "default") !== repoName) continue;
      if (r.status?.phase === "Running" && r.status.backupName) used.add(r.status.backupName);
    }
    // A plan handed to an init container: the backup is about to be restored (the agent's lease covers the rest).
    for (const p of this.host.pods.list()) {
      if (p.metadata.namespace !== ns) continue;
      const plan = podPlan(p);
      if (plan?.action !== "restore" || isContainersReady(p)) continue;
      used.add(plan.backup);
    }
    // Volumes cloned from snapshot backups that are not provisioned yet.
    for (const name of this.snapshots.backupsInUse(ns)) used.add(name);
    return used;
  }

  private async applyRetention(b: ReplicatorBackup, repo: RepositorySpec, log: Logger): Promise<void> {
    if (!repo.retention || !repo.s3) return;
    const ns = b.metadata.namespace;
    const store = await this.host.openStore(ns, repo);
    const cluster = b.status?.cluster ?? b.spec.cluster;
    if (!store || !cluster) return;
    const repository = new Repository(store, cluster);
    const snapshotRefs = await this.snapshots.snapshotRefs(repository);
    // Backups and the binlog archive together, as `replicator prune` does: a fault reading the archive deletes nothing.
    const { plan, binlogs } = await pruneWithArchive(repository, { retain: repo.retention.keep, inUse: this.backupsInUse(ns, b.spec.repository ?? "default") });
    const expire = plan.expire;
    const binlogsDeleted = binlogs.deleted.map((d) => `${String(d.serverId)}/${d.file}`);
    if (binlogsDeleted.length > 0) {
      log.info({ binlogsDeleted }, "binlog archive retention applied");
      await this.host.event(b, "Normal", "ArchiveRetentionApplied", `deleted ${binlogsDeleted.length} archived binlog(s) no kept backup needs: ${binlogsDeleted.join(", ")}`);
    }
    // A snapshot backup's data is its VolumeSnapshot: it goes with the backup.
    const deletedSnapshots = await this.snapshots.deleteSnapshots(expire, snapshotRefs);
    if (expire.length > 0) {
      log.info({ deleted: expire, keep: repo.retention.keep, volumeSnapshots: deletedSnapshots }, "retention applied");
      await this.host.event(
        b,
        "Normal",
        "RetentionApplied",
        `deleted ${expire.length} backup(s) beyond ${repo.retention.keep}: ${expire.join(", ")}${deletedSnapshots.length > 0 ? `; VolumeSnapshots ${deletedSnapshots.join(", ")}` : ""}`,
      );
    }
    await this.deleteBackupResources(ns, cluster, new Set(expire));
  }

  private async deleteBackupResources(ns: string, cluster: string, names: Set<string>): Promise<void> {
    if (names.size === 0) return;
    for (const r of this.host.backups.list()) {
      if (r.metadata.namespace !== ns || r.status?.cluster !== cluster || !r.status.backupName || !names.has(r.status.backupName)) continue;
      await this.host.rest.delete(crPath("replicatorbackups", ns, r.metadata.name)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }
}
