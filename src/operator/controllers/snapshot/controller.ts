// The volumesnapshot method inside the operator: it runs snapshot backups
// itself (no Job), keeps each provisioned StatefulSet's next data volume
// pre-created from the newest usable snapshot, turns a pod that starts on
// such a clone into a slave, restores a snapshot backup into a new PVC, and
// deletes a snapshot's VolumeSnapshot when retention deletes its backup.
// The backup, restore and provision controllers call in here; the rules are in ./decide.ts.
import { API_VERSION, backupSpecSchema, validateSpec, type BackupSpec, type ReplicatorBackup, type ReplicatorRestore, type RepositorySpec, type RestoreStatus, type ServerRef } from "../../../api/v1alpha1.js";
import type { Conn } from "../../../db/connection.js";
import { queryRows } from "../../../db/connection.js";
import type { Endpoint } from "../../../db/endpoint.js";
import { checkMasterCanServe, configureReplica } from "../../../db/replication.js";
import { failed, oneLine } from "../../../lib/errors.js";
import type { Logger } from "../../../lib/log.js";
import { buildBackupName, parseBackupName, positionText, selectBackup, type BackupEntry, type ReplicationPosition, type Selector } from "../../../storage/catalog.js";
import type { ObjectStore } from "../../../storage/object-store.js";
import { Repository } from "../../../storage/repository.js";
import { dataVolumeOf } from "../../builders/jobs.js";
import { operationStatus, sameStatus } from "../../conditions.js";
import type { BackupPlan } from "../backup/decide.js";
import { PLAN_ANNOTATION, PROVISIONED_ANNOTATION, provisionSettings, type ProvisionSettings } from "../provision/decide.js";
import { podPlan, takesPlan, type ProvisionPod } from "../provision/observe.js";
import { isAlreadyExists, isNotFound, type KubeRest } from "../../../kube/rest.js";
import type { Metrics } from "../../metrics.js";
import { isContainersReady, selectServerPod, type PodLike } from "../../observe.js";
import { runSnapshotBackup, type SnapshotBackupResult } from "./backup.js";
import { decideSeeded, decideSpare, seedPosition } from "./decide.js";
import {
  SEEDED_FROM_ANNOTATION,
  SNAPSHOT_METHOD,
  buildPvcFromSnapshot,
  pvcPath,
  recordOf,
  seedPositionOf,
  snapshotState,
  volumeSnapshotName,
  vsPath,
  type PvcObj,
  type SnapshotRecord,
  type VolumeSnapshotObj,
} from "./volumesnapshot.js";

const DEFAULT_LOCK_TIMEOUT_S = 60;
const DEFAULT_READY_TIMEOUT_S = 600;
/** How often the spare volume of a StatefulSet is re-evaluated without a trigger. */
const SPARE_RECHECK_MS = 60_000;

/** A pod as this controller reads it (what PodLike, ProvisionPod and dataVolumeOf read). */
export interface SnapshotPod extends PodLike {
  metadata: PodLike["metadata"] & { namespace: string; uid?: string; creationTimestamp?: string; annotations?: Record<string, string> };
  spec?: {
    nodeName?: string;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; downwardAPI?: { items?: { fieldRef?: { fieldPath?: string } }[] } }[];
    containers?: { name: string; volumeMounts?: { name: string; mountPath: string; subPath?: string }[] }[];
    initContainers?: { name: string; command?: string[]; args?: string[] }[];
  };
  status?: PodLike["status"] & ProvisionPod["status"];
}

export interface SnapshotStatefulSet {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    volumeClaimTemplates?: {
      metadata?: { name?: string; labels?: Record<string, string> };
      spec?: { accessModes?: string[]; storageClassName?: string; volumeMode?: string; resources?: { requests?: Record<string, string> } };
    }[];
  };
}

/** What the operator lends this controller. */
export interface SnapshotHost {
  rest: KubeRest;
  log: Logger;
  metrics: Metrics;
  now: () => Date;
  enqueue(key: string, afterMs?: number): void;
  pod(ns: string, name: string): SnapshotPod | undefined;
  pods(ns: string): SnapshotPod[];
  pvc(ns: string, name: string): PvcObj | undefined;
  pvcs(ns: string): PvcObj[];
  statefulSet(ns: string, name: string): SnapshotStatefulSet | undefined;
  repository(ns: string, name: string): RepositorySpec | undefined;
  openStore(ns: string, repo: RepositorySpec): Promise<ObjectStore | undefined>;
  secret(ns: string, name: string): Promise<(key: string) => string | undefined>;
  connectWith(ns: string, secret: { name: string; userKey?: string; passwordKey?: string }, host: string, port: number, what: string): Promise<Conn>;
  masterAddress(ns: string, master: { pod: string; address: string }): string;
  event(obj: { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; uid?: string } }, type: "Normal" | "Warning", reason: string, message: string): Promise<void>;
  setGate(pod: SnapshotPod, status: "True" | "False", reason: string, message: string): Promise<void>;
  markPvc(ns: string, name: string, backup: string): Promise<void>;
}

type Outcome = Extract<BackupPlan, { kind: "succeeded" } | { kind: "failed" }>;

interface Running {
  pod: string;
  backupName: string;
  done: Promise<void>;
}

export function isSnapshotBackup(method: string | undefined): boolean {
  return method === SNAPSHOT_METHOD;
}

/** Why a restore into a running server cannot use this backup (a volume snapshot), or undefined. */
export function volumeOnlyBackup(backup: string): string | undefined {
  if (parseBackupName(backup)?.method !== SNAPSHOT_METHOD) return undefined;
  return `spec.volume: backup ${backup} is a volume snapshot; it is restored into a new PersistentVolumeClaim: set spec.volume.claimName (and start the target server on that claim)`;
}

export class SnapshotController {
  private readonly running = new Map<string, Running>();
  private readonly outcomes = new Map<string, Outcome>();
  /** Backups whose outcome was recorded by this process: a stale cache must not run them again. */
  private readonly settled = new Set<string>();
  private readonly spareCheckedAt = new Map<string, { at: number; replicas: number }>();
  private readonly staleWarned = new Set<string>();

  constructor(private readonly host: SnapshotHost) {}

  // ------------------------------------------------------------ backups

  /** Pods with a snapshot backup running now, for "two backups of one server never run at once". */
  busyPods(ns: string): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [key, r] of this.running) {
      if (!key.startsWith(`${ns}/`)) continue;
      out.set(r.pod, [...(out.get(r.pod) ?? []), `snapshot ${r.backupName}`]);
    }
    return out;
  }

  /**
   * Before the usual decision: the outcome of a snapshot backup this process
   * ran (to record), "busy" while it runs, the recovery of one a previous
   * operator process left Running, or undefined for everything else.
   */
  async beforeDecide(b: ReplicatorBackup): Promise<Outcome | "busy" | undefined> {
    const key = `${b.metadata.namespace}/${b.metadata.name}`;
    const outcome = this.outcomes.get(key);
    if (outcome) return outcome;
    if (this.running.has(key)) return "busy";
    // Recorded by this process, and the cache has not caught up yet.
    if (this.settled.has(`${key}@${b.metadata.uid ?? ""}`) && b.status?.phase === "Running") return "busy";
    if (b.status?.phase !== "Running" || !isSnapshotBackup(b.status.method)) return undefined;
    return this.recover(b);
  }

  /** The outcome is in the resource's status now. */
  recorded(b: ReplicatorBackup): void {
    const key = `${b.metadata.namespace}/${b.metadata.name}`;
    if (this.outcomes.delete(key)) this.settled.add(`${key}@${b.metadata.uid ?? ""}`);
  }

  /**
   * Start a snapshot backup of the decided source. Returns a failed outcome
   * to record at once, or undefined once it runs (the status says Running).
   */
  async start(b: ReplicatorBackup, plan: Extract<BackupPlan, { kind: "createJob" }>): Promise<Outcome | undefined> {
    const ns = b.metadata.namespace;
    const key = `${ns}/${b.metadata.name}`;
    const log = this.host.log.child({ controller: "snapshot", namespace: ns, name: b.metadata.name });
    const fail = (reason: string, message: string): Outcome => ({ kind: "failed", jobName: "", reason, message, spec: plan.spec, sourcePod: plan.sourcePod });
    const source = plan.spec.source;
    if (!source) return fail("InvalidSpec", "spec.source: Required");
    if (plan.spec.image) return fail("InvalidSpec", "spec.image: the volumesnapshot method is run by the operator, not by a plugin image");
    if (!plan.repo.s3) {
      return fail("NeedsS3Repository", `a volumesnapshot backup's manifest is written by the operator, which lists and writes S3 repositories only; ReplicatorRepository ${plan.spec.repository} is a filesystem repository`);
    }
    const opts = snapshotOptions(plan.spec);
    if ("error" in opts) return fail("InvalidSpec", opts.error);
    const pod = this.host.pod(ns, plan.sourcePod);
    const dv = pod ? dataVolumeOf(pod) : { error: `pod ${plan.sourcePod} not found` };
    if ("error" in dv) return fail("NoDataVolume", `a volumesnapshot backup snapshots the data volume of ${plan.sourcePod}: ${dv.error}`);
    const store = await this.host.openStore(ns, plan.repo);
    if (!store) return fail("NeedsS3Repository", "the repository is not an S3 repository");
    const repo = new Repository(store, plan.cluster);
    const startedAt = this.host.now();
    const backupName = buildBackupName(startedAt, SNAPSHOT_METHOD, plan.sourcePod);
    if (await repo.exists(backupName)) {
      // This second's name is taken: try again in the next one.
      this.host.enqueue(`backup/${key}`, 1_000);
      return undefined;
    }

    // Record the name first: a restarted operator finds the VolumeSnapshot by it.
    const status = operationStatus(
      {
        ...(b.status ?? {}),
        observedGeneration: b.metadata.generation ?? 0,
        backupName,
        cluster: plan.cluster,
        method: SNAPSHOT_METHOD,
        sourcePod: plan.sourcePod,
        startedAt: startedAt.toISOString(),
      },
      { phase: "Running", reason: "Running", message: `snapshotting volume ${dv.claimName} of ${plan.sourcePod} under FLUSH TABLES WITH READ LOCK` },
      startedAt,
      b.metadata.generation ?? 0,
    );
    if (!sameStatus(status, b.status)) await this.host.rest.patch(`/apis/${API_VERSION}/namespaces/${ns}/replicatorbackups/${b.metadata.name}/status`, { status });
    await this.host.event(b, "Normal", "BackupStarted", `volume snapshot of ${dv.claimName} (${plan.sourcePod}, ${plan.sourceRole}) started: ${backupName}`);
    log.info({ backup: backupName, pvc: dv.claimName, source: plan.sourcePod }, "snapshot backup started");

    const done = runSnapshotBackup({
      rest: this.host.rest,
      repo,
      connect: () => this.host.connectWith(ns, source.credentialsSecret, plan.sourceAddress, source.port, `source ${plan.sourcePod}`),
      namespace: ns,
      cluster: plan.cluster,
      backupName,
      sourcePod: plan.sourcePod,
      sourceAddress: plan.sourceAddress,
      sourcePort: source.port,
      claimName: dv.claimName,
      className: opts.className,
      lockTimeoutMs: opts.lockTimeoutS * 1000,
      readyTimeoutMs: opts.readyTimeoutS * 1000,
      startedAt,
      now: this.host.now,
      log,
    }).then(
      (r) => {
        this.outcomes.set(key, this.succeeded(r, plan));
        void this.host.event(b, "Normal", "SnapshotTaken", `VolumeSnapshot ${r.volumeSnapshot.name} of ${dv.claimName}${r.volumeSnapshot.restoreSize ? ` (restoreSize ${r.volumeSnapshot.restoreSize})` : ""}; writes were blocked for ${(r.lockHeldMs / 1000).toFixed(1)}s`);
        // The StatefulSet's spare volume may now come from this snapshot.
        const sts = pod?.metadata.ownerReferences?.find((o) => o.kind === "StatefulSet")?.name;
        if (sts) this.host.enqueue(`snapshot-spare/${ns}/${sts}`, 1_000);
      },
      (err: unknown) => {
        log.warn({ err: oneLine(err) }, "snapshot backup failed");
        this.outcomes.set(key, fail((err as { reason?: string }).reason ?? "BackupFailed", oneLine(err)));
      },
    ).finally(() => {
      this.running.delete(key);
      this.host.enqueue(`backup/${key}`);
    });
    this.running.set(key, { pod: plan.sourcePod, backupName, done });
    return undefined;
  }

  private succeeded(r: SnapshotBackupResult, plan: Extract<BackupPlan, { kind: "createJob" }>): Outcome {
    return {
      kind: "succeeded",
      jobName: "",
      repo: plan.repo,
      spec: plan.spec,
      result: {
        ok: true,
        name: r.name,
        method: SNAPSHOT_METHOD,
        role: r.role,
        size: r.size,
        sha256: r.sha256,
        replication: pickPosition(r.replication),
        startedAt: r.startedAt,
        finishedAt: r.finishedAt,
      },
    };
  }

  /** A snapshot backup left Running by another operator process: finished if its manifest is stored, else failed and cleaned up. */
  private async recover(b: ReplicatorBackup): Promise<Outcome> {
    const ns = b.metadata.namespace;
    const parsed = validateSpec(backupSpecSchema, b.spec);
    const spec: BackupSpec = parsed.ok ? parsed.value : backupSpecSchema.parse({});
    const name = b.status?.backupName;
    const repoSpec = this.host.repository(ns, spec.repository);
    const fail = (message: string): Outcome => ({ kind: "failed", jobName: "", reason: "OperatorRestarted", message, spec, sourcePod: b.status?.sourcePod });
    if (!name || !repoSpec || !b.status?.cluster) return fail("the operator restarted before the snapshot backup recorded its name");
    const store = await this.host.openStore(ns, repoSpec);
    if (store) {
      const repo = new Repository(store, b.status.cluster);
      // Only "not there" means the backup never finished; a storage fault is thrown (the reconcile is retried), never taken for that.
      const m = await repo.readManifest(name).catch((err: unknown) => {
        if ((err as { reason?: string }).reason === "BackupNotFound") return undefined;
        throw err;
      });
      if (m) {
        const size = m.objects.reduce((s, o) => s + o.size, 0);
        return {
          kind: "succeeded",
          jobName: "",
          repo: repoSpec,
          spec,
          result: { ok: true, name, method: m.method, role: m.source.role, size, sha256: m.objects[0]?.sha256 ?? "", replication: pickPosition(m.replication), startedAt: m.startedAt, finishedAt: m.finishedAt },
        };
      }
    }
    await this.host.rest.delete(vsPath(ns, volumeSnapshotName(name))).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
    // Its session ended with the old process, and the lock with it; a slave's SQL thread may still be stopped.
    let restarted = "";
    const pod = b.status.sourcePod ? this.host.pod(ns, b.status.sourcePod) : undefined;
    if (pod?.status?.podIP && spec.source) {
      const source = spec.source;
      restarted = await this.host
        .connectWith(ns, source.credentialsSecret, pod.status.podIP, source.port, `source ${pod.metadata.name}`)
        .then(async (c) => {
          try {
            const rows = await queryRows<Record<string, unknown>>(c, "SHOW SLAVE STATUS");
            if (rows.length === 0) return "";
            await c.query("START SLAVE");
            return "; replication on the source was started again";
          } finally {
            c.destroy();
          }
        })
        .catch((err: unknown) => `; could not check replication on the source: ${oneLine(err)}`);
    }
    return fail(`the operator restarted while the snapshot backup ran; its database session (and the lock) ended with it, and VolumeSnapshot ${volumeSnapshotName(name)} was deleted${restarted}`);
  }

  // ------------------------------------------------------------ retention

  /** The VolumeSnapshot of every snapshot backup of a repository's cluster (read before pruning). */
  async snapshotRefs(repo: Repository): Promise<Map<string, SnapshotRecord>> {
    const out = new Map<string, SnapshotRecord>();
    const { backups } = await repo.list();
    for (const b of backups) {
      const rec = b.manifest.kind === "snapshot" ? recordOf(b.manifest.details) : undefined;
      if (rec) out.set(b.name, rec);
    }
    return out;
  }

  /** Delete the VolumeSnapshots of deleted backups (only the very one each backup recorded, by uid). */
  async deleteSnapshots(names: Iterable<string>, refs: Map<string, SnapshotRecord>): Promise<string[]> {
    const deleted: string[] = [];
    for (const name of names) {
      const rec = refs.get(name);
      if (!rec) continue;
      const vs = await this.host.rest.get<VolumeSnapshotObj>(vsPath(rec.namespace, rec.name)).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
      if (!vs || (rec.uid && vs.metadata.uid !== rec.uid)) continue;
      await this.host.rest.delete(vsPath(rec.namespace, rec.name)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      deleted.push(`${rec.namespace}/${rec.name}`);
    }
    return deleted;
  }

  /** Snapshot backups that a volume created from them still needs: it is not restored until it is bound. */
  backupsInUse(ns: string): Set<string> {
    const used = new Set<string>();
    for (const p of this.host.pvcs(ns)) {
      const a = p.metadata.annotations ?? {};
      const from = a[SEEDED_FROM_ANNOTATION];
      // Until it is bound (with WaitForFirstConsumer: until a pod uses it), the volume is not restored yet.
      if (from && !a[PROVISIONED_ANNOTATION] && p.status?.phase !== "Bound" && !p.metadata.deletionTimestamp) used.add(from);
    }
    return used;
  }

  // ------------------------------------------------------------ the spare volume of a StatefulSet

  /** React to a StatefulSet event: re-evaluate its spare when replicas changed or a while has passed. */
  statefulSetChanged(ns: string, sts: SnapshotStatefulSet): void {
    const key = `${ns}/${sts.metadata.name}`;
    const last = this.spareCheckedAt.get(key);
    const replicas = sts.spec?.replicas ?? 1;
    if (!last || last.replicas !== replicas || Date.now() - last.at > SPARE_RECHECK_MS) this.host.enqueue(`snapshot-spare/${key}`);
  }

  /** The "snapshot-spare/<ns>/<sts>" queue key: the StatefulSet's provisioning settings, then its spare. */
  async reconcileSpareOf(ns: string, stsName: string): Promise<void> {
    const sts = this.host.statefulSet(ns, stsName);
    const settings = sts ? provisionSettings(sts) : undefined;
    if (!settings || "error" in settings) return;
    await this.reconcileSpare(ns, stsName, settings);
  }

  async reconcileSpare(ns: string, stsName: string, settings: ProvisionSettings): Promise<void> {
    const sts = this.host.statefulSet(ns, stsName);
    if (!sts) return;
    const log = this.host.log.child({ controller: "snapshot-spare", namespace: ns, name: stsName });
    const replicas = sts.spec?.replicas ?? 1;
    this.spareCheckedAt.set(`${ns}/${stsName}`, { at: Date.now(), replicas });
    this.host.enqueue(`snapshot-spare/${ns}/${stsName}`, SPARE_RECHECK_MS);
    const claimName = `${settings.dataVolume}-${stsName}-${replicas}`;
    const pvc = this.host.pvc(ns, claimName);
    const observed = {
      replicas,
      claimName,
      pvc: pvc ? { annotations: pvc.metadata.annotations ?? {}, deleting: Boolean(pvc.metadata.deletionTimestamp) } : undefined,
      podExists: this.host.pod(ns, `${stsName}-${replicas}`) !== undefined,
      candidate: undefined as { backup: string } | undefined,
      seededFromAnnotation: SEEDED_FROM_ANNOTATION,
      provisionedAnnotation: PROVISIONED_ANNOTATION,
    };
    // Cheap answers first: most of the time there is nothing to look up.
    // (A candidate newer than anything: only the cases that need a storage lookup remain.)
    const early = decideSpare({ ...observed, candidate: { backup: "\uffff" } });
    if (early.kind === "none" || early.kind === "wait") return;
    const candidate = await this.usableSnapshot(ns, stsName, settings).catch((err: unknown) => {
      log.warn({ err: oneLine(err) }, "could not look for a snapshot for the spare volume; nothing changed");
      return undefined;
    });
    const plan = decideSpare({ ...observed, candidate: candidate ? { backup: candidate.backup } : undefined });
    switch (plan.kind) {
      case "none":
      case "wait":
        return;
      case "stale": {
        // Older is fine while the master still has the binlogs after it; say so when it has not.
        const pos = seedPositionOf(pvc?.metadata.annotations);
        const warnKey = `${ns}/${claimName}/${plan.from}`;
        if (!pos || this.staleWarned.has(warnKey)) return;
        const check = await this.masterCanServe(ns, stsName, settings, pos).catch(() => undefined);
        if (!check || check.ok) return;
        this.staleWarned.add(warnKey);
        await this.host.event(
          { apiVersion: "apps/v1", kind: "StatefulSet", metadata: sts.metadata },
          "Warning",
          "SpareVolumeStale",
          `spare volume ${claimName} (cloned from ${plan.from}) can no longer seed a slave: ${check.reason ?? "the master cannot serve its position"}. The operator deletes no volume: delete ${claimName}, and it is created again from ${plan.to}`,
        );
        return;
      }
      case "create": {
        if (!candidate) return;
        const tpl = sts.spec?.volumeClaimTemplates?.find((t) => t.metadata?.name === settings.dataVolume);
        const body = buildPvcFromSnapshot({
          namespace: ns,
          name: claimName,
          template: {
            labels: { ...(tpl?.metadata?.labels ?? {}), ...(sts.spec?.selector?.matchLabels ?? {}) },
            accessModes: tpl?.spec?.accessModes,
            storageClassName: tpl?.spec?.storageClassName,
            volumeMode: tpl?.spec?.volumeMode,
            size: tpl?.spec?.resources?.requests?.storage,
          },
          snapshot: candidate.record.name,
          backupName: candidate.backup,
          position: candidate.position,
          restoreSize: candidate.record.restoreSize,
          labels: { "replicator.dev/cluster": settings.cluster },
        });
        try {
          await this.host.rest.create(pvcPath(ns), body);
        } catch (err) {
          if (isAlreadyExists(err)) return; // the StatefulSet controller was quicker: that pod provisions the other way
          throw err;
        }
        log.info({ pvc: claimName, backup: candidate.backup, volumeSnapshot: candidate.record.name }, "spare volume created from the newest snapshot");
        await this.host.event(
          { apiVersion: "apps/v1", kind: "StatefulSet", metadata: sts.metadata },
          "Normal",
          "SpareVolumeCreated",
          `${claimName} created from VolumeSnapshot ${candidate.record.name} (${candidate.backup}, position ${positionText(candidate.position) ?? "-"}): the next slave starts as a clone`,
        );
        return;
      }
    }
  }

  /** The newest snapshot backup of the cluster whose VolumeSnapshot is here and ready, and whose position the master can still serve. */
  private async usableSnapshot(
    ns: string,
    stsName: string,
    s: ProvisionSettings,
  ): Promise<{ backup: string; record: SnapshotRecord; position: ReplicationPosition } | undefined> {
    const repoSpec = this.host.repository(ns, s.repository);
    if (!repoSpec) return undefined;
    const store = await this.host.openStore(ns, repoSpec);
    if (!store) return undefined;
    const { backups } = await new Repository(store, s.cluster).list();
    const named = (s.backup === "latest" ? backups : backups.filter((b) => b.name === s.backup)).reverse();
    const candidates = named.filter((b) => b.manifest.kind === "snapshot" && b.manifest.replication);
    if (candidates.length === 0) return undefined;
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) return undefined;
    const c = await this.host.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    try {
      for (const b of candidates) {
        const usable = await this.usableRecord(ns, b);
        if (!usable || !b.manifest.replication) continue;
        const check = await checkMasterCanServe(c, b.manifest.replication, `master ${master.pod}`);
        if (check.ok) return { backup: b.name, record: usable, position: b.manifest.replication };
      }
      return undefined;
    } finally {
      c.destroy();
    }
  }

  private async masterCanServe(ns: string, stsName: string, s: ProvisionSettings, pos: ReplicationPosition): Promise<{ ok: boolean; reason?: string | undefined }> {
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) return { ok: true }; // unknown now: not a reason to warn
    const c = await this.host.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    try {
      return await checkMasterCanServe(c, pos, `master ${master.pod}`);
    } finally {
      c.destroy();
    }
  }

  /** A backup's VolumeSnapshot, when it is in this namespace, the very one recorded, and ready. */
  private async usableRecord(ns: string, b: BackupEntry): Promise<SnapshotRecord | undefined> {
    const rec = recordOf(b.manifest.details);
    if (rec?.namespace !== ns) return undefined;
    const vs = await this.host.rest.get<VolumeSnapshotObj>(vsPath(ns, rec.name)).catch(() => undefined);
    if (!vs || vs.metadata.deletionTimestamp || (rec.uid && vs.metadata.uid !== rec.uid)) return undefined;
    return snapshotState(vs).state === "ready" ? rec : undefined;
  }

  // ------------------------------------------------------------ a pod on a cloned volume

  /**
   * A provisioned StatefulSet's pod whose data volume was cloned from a
   * snapshot backup and carries no provision marker yet: once its server
   * runs, make it a slave of the master where the clone is, then mark the
   * volume and open the readiness gate. Returns false when the pod is not
   * such a pod (the usual provisioning rules apply).
   */
  async provisionSeeded(pod: SnapshotPod, pvc: PvcObj, s: ProvisionSettings, stsName: string): Promise<boolean> {
    const a = pvc.metadata.annotations ?? {};
    const backup = a[SEEDED_FROM_ANNOTATION];
    if (!backup || a[PROVISIONED_ANNOTATION]) return false;
    const ns = pod.metadata.namespace;
    const key = `provision/${ns}/${pod.metadata.name}`;
    const log = this.host.log.child({ controller: "provision", namespace: ns, name: pod.metadata.name, backup });
    // An init container that waits for a plan is told there is nothing for it to do.
    if (takesPlan(pod) && podPlan(pod) === undefined) {
      await this.host.rest.patch(`/api/v1/namespaces/${ns}/pods/${pod.metadata.name}`, {
        metadata: { annotations: { [PLAN_ANNOTATION]: JSON.stringify({ action: "none", reason: `volume ${pvc.metadata.name} is a clone of snapshot backup ${backup}` }) } },
      });
    }
    const observed = { claimName: pvc.metadata.name, backup, recorded: seedPositionOf(a), podReady: isContainersReady(pod) };
    let plan = decideSeeded(observed);
    if (plan.kind === "configure") {
      const configured = await this.seedFromClone(ns, pod, s, stsName, observed.recorded ?? { role: "master" }).then(
        (r) => ({ ok: true as const, position: positionText(r.position) ?? "-", resumed: r.resumed }),
        (err: unknown) => ({ ok: false as const, message: oneLine(err) }),
      );
      plan = decideSeeded({ ...observed, configured });
    }
    const podRef = { apiVersion: "v1", kind: "Pod", metadata: pod.metadata };
    switch (plan.kind) {
      case "configure":
        return true;
      case "wait":
        await this.host.setGate(pod, "False", plan.reason, plan.message);
        this.host.enqueue(key, plan.requeueMs);
        return true;
      case "retry":
        this.host.metrics.provisionFailed(ns, s.cluster);
        await this.host.event(podRef, "Warning", plan.reason, `${plan.message}; retrying in 30s`);
        await this.host.setGate(pod, "False", plan.reason, plan.message);
        this.host.enqueue(key, 30_000);
        return true;
      case "markProvisioned": {
        // The marker first: once it is written, this volume is never seeded again.
        await this.host.markPvc(ns, pvc.metadata.name, backup);
        await this.host.setGate(pod, "True", "Provisioned", plan.message);
        const created = pod.metadata.creationTimestamp ? Date.parse(pod.metadata.creationTimestamp) : Date.now();
        this.host.metrics.provisioned(ns, s.cluster, (Date.now() - created) / 1000, undefined);
        await this.host.event(podRef, "Normal", "Provisioned", `${plan.message}; volume ${pvc.metadata.name} marked`);
        log.info({ pvc: pvc.metadata.name }, "slave provisioned from a volume snapshot");
        // The next scale-up needs the next spare.
        this.host.enqueue(`snapshot-spare/${ns}/${stsName}`, 1_000);
        return true;
      }
    }
  }

  /** Point the server on a cloned volume at the master, where the clone is (see seedPosition). */
  private async seedFromClone(ns: string, pod: SnapshotPod, s: ProvisionSettings, stsName: string, recorded: ReplicationPosition): Promise<{ position: ReplicationPosition; resumed: boolean }> {
    const address = pod.status?.podIP;
    if (!address) throw failed("ServerNotReady", "the pod has no IP yet");
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) throw failed("MasterNotReady", master.message);
    const repl = await this.host.secret(ns, s.replicationSecret);
    const endpoint: Endpoint = { engine: "mysql", host: this.host.masterAddress(ns, master), port: s.port, user: repl("username") ?? "", password: repl("password") };
    const c = await this.host.connectWith(ns, { name: s.credentialsSecret }, address, s.port, `pod ${pod.metadata.name}`);
    try {
      return await seedClone(c, endpoint, recorded);
    } finally {
      c.destroy();
    }
  }

  // ------------------------------------------------------------ restore into a new volume

  /**
   * A ReplicatorRestore with spec.volume: create that PVC from the chosen
   * snapshot backup's VolumeSnapshot; once the target pod runs on it, make it
   * a slave of replicateFrom (if given) and complete. Returns the new status.
   */
  async reconcileVolumeRestore(r: ReplicatorRestore, spec: RestoreSpecWithVolume, repoSpec: RepositorySpec | undefined): Promise<RestoreStatus | undefined> {
    const ns = r.metadata.namespace;
    const now = this.host.now();
    const gen = r.metadata.generation ?? 0;
    const key = `restore/${ns}/${r.metadata.name}`;
    const base: RestoreStatus = { ...(r.status ?? {}), observedGeneration: gen };
    if (r.status?.phase === "Completed" || r.status?.phase === "Failed") return undefined;
    const fail = (reason: string, message: string): RestoreStatus => operationStatus(base, { phase: "Failed", reason, message }, now, gen);
    const wait = (phase: "Pending" | "Running", reason: string, message: string, ms: number): RestoreStatus => {
      this.host.enqueue(key, ms);
      return operationStatus(base, { phase, reason, message }, now, gen);
    };
    if (!repoSpec) return wait("Pending", "RepositoryNotFound", `ReplicatorRepository ${spec.repository} not found; create it`, 15_000);
    const claimName = spec.volume.claimName;
    let pvc = this.host.pvc(ns, claimName);

    // 1. The volume: created once, from the chosen backup's snapshot.
    if (!base.backupName) {
      const store = await this.host.openStore(ns, repoSpec);
      if (!store) return fail("NeedsS3Repository", "restoring a volumesnapshot backup needs an S3 repository (the operator lists it)");
      let backups: BackupEntry[];
      try {
        // Throws on a storage fault (no partial listing): "latest" is never an older backup picked on a fault.
        ({ backups } = await new Repository(store, spec.cluster).list());
      } catch (err) {
        const reason = (err as { reason?: string }).reason === "StorageUnreachable" ? "StorageUnreachable" : "StorageError";
        return wait("Pending", reason, `could not list ${store.location}/${spec.cluster}: ${oneLine(err)}; retrying`, 30_000);
      }
      const snapshots = backups.filter((b) => b.manifest.kind === "snapshot");
      let chosen: BackupEntry;
      try {
        const sel: Selector = spec.before ? { kind: "before", time: new Date(spec.before) } : spec.backup === "latest" ? { kind: "latest" } : { kind: "name", name: spec.backup };
        chosen = selectBackup(snapshots, sel, `${store.location}/${spec.cluster} (volumesnapshot backups)`);
      } catch (err) {
        return fail((err as { reason?: string }).reason ?? "BackupNotFound", oneLine(err));
      }
      const rec = await this.usableRecord(ns, chosen);
      if (!rec) {
        return fail(
          "SnapshotUnavailable",
          `backup ${chosen.name}'s VolumeSnapshot ${recordOf(chosen.manifest.details)?.namespace ?? "?"}/${recordOf(chosen.manifest.details)?.name ?? "?"} is not in namespace ${ns} or not readyToUse; a PVC can only be restored from a snapshot in its own namespace`,
        );
      }
      if (pvc && pvc.metadata.annotations?.[SEEDED_FROM_ANNOTATION] !== chosen.name) {
        return fail("VolumeExists", `PersistentVolumeClaim ${claimName} already exists; restore into a new claim name`);
      }
      if (!pvc) {
        const body = buildPvcFromSnapshot({
          namespace: ns,
          name: claimName,
          template: { storageClassName: spec.volume.storageClassName ?? rec.source.storageClassName, size: spec.volume.size ?? rec.source.size, accessModes: spec.volume.accessModes },
          snapshot: rec.name,
          backupName: chosen.name,
          position: chosen.manifest.replication,
          restoreSize: rec.restoreSize,
          labels: { "replicator.dev/cluster": spec.cluster, "replicator.dev/restore": r.metadata.name },
        });
        await this.host.rest.create(pvcPath(ns), body).catch((err: unknown) => {
          if (!isAlreadyExists(err)) throw err;
        });
        pvc = body;
        await this.host.event(r, "Normal", "VolumeCreated", `PersistentVolumeClaim ${claimName} created from VolumeSnapshot ${rec.name} (${chosen.name})`);
      }
      base.backupName = chosen.name;
      const pos = positionText(chosen.manifest.replication);
      if (pos) base.position = pos;
      base.startedAt ??= now.toISOString();
    }

    // 2. The server on it.
    const targetRef = spec.target;
    const target = selectServerPod(targetRef, this.host.pods(ns));
    const pods = this.host.pods(ns).filter((p) => (p.spec?.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === claimName));
    if (!target.ok) return wait("Running", "WaitingForServer", `PersistentVolumeClaim ${claimName} holds ${base.backupName ?? ""}; waiting for the target server to run on it (${target.message})`, 5_000);
    if (!pods.some((p) => p.metadata.name === target.pod)) {
      return fail("TargetNotOnVolume", `target pod ${target.pod} does not mount PersistentVolumeClaim ${claimName}; restore a snapshot into a new claim and start the server on it`);
    }
    base.targetPod = target.pod;
    const recorded = seedPositionOf((pvc ?? this.host.pvc(ns, claimName))?.metadata.annotations);
    if (spec.replicateFrom) {
      const m = selectServerPod(spec.replicateFrom, this.host.pods(ns));
      if (!m.ok) return wait("Running", "MasterNotReady", `replicateFrom: ${m.message}`, 5_000);
      if (!recorded) return fail("NoPosition", `backup ${base.backupName ?? ""} recorded no replication position; it cannot seed a slave`);
      const repl = await this.host.secret(ns, spec.replicateFrom.credentialsSecret.name);
      const endpoint: Endpoint = {
        engine: "mysql",
        host: this.host.masterAddress(ns, m),
        port: spec.replicateFrom.port,
        user: repl(spec.replicateFrom.credentialsSecret.userKey) ?? "",
        password: repl(spec.replicateFrom.credentialsSecret.passwordKey),
      };
      try {
        const c = await this.host.connectWith(ns, targetRef.credentialsSecret, target.address, targetRef.port, `target ${target.pod}`);
        try {
          const seeded = await seedClone(c, endpoint, recorded);
          base.position = positionText(seeded.position) ?? base.position;
          base.replicating = true;
        } finally {
          c.destroy();
        }
      } catch (err) {
        return fail((err as { reason?: string }).reason ?? "ReplicationFailed", oneLine(err));
      }
    }
    await this.host.markPvc(ns, claimName, base.backupName ?? "restored");
    base.finishedAt = now.toISOString();
    const message = `restored ${base.backupName ?? ""} into volume ${claimName}; ${target.pod} runs on it${base.replicating ? " and replicates" : ""}`;
    await this.host.event(r, "Normal", "RestoreSucceeded", message);
    this.host.metrics.restoreFinished(ns, "succeeded");
    return operationStatus(base, { phase: "Completed", reason: "RestoreSucceeded", message }, now, gen);
  }
}

export type RestoreSpecWithVolume = {
  repository: string;
  cluster: string;
  backup: string;
  before?: string | undefined;
  target: ServerRef;
  replicateFrom?: ServerRef | undefined;
  volume: { claimName: string; storageClassName?: string | undefined; size?: string | undefined; accessModes?: string[] | undefined };
};

/** The method's options: spec.options lockTimeoutSeconds, readyTimeoutSeconds, volumeSnapshotClassName. */
export function snapshotOptions(spec: BackupSpec): { lockTimeoutS: number; readyTimeoutS: number; className: string | undefined } | { error: string } {
  const o = spec.options;
  const num = (k: string, dflt: number): number | string => {
    const v = o[k];
    if (v === undefined) return dflt;
    const n = Number(v);
    return Number.isInteger(n) && n >= 1 ? n : `spec.options.${k}: must be a whole number of seconds >= 1 (got "${v}")`;
  };
  const lock = num("lockTimeoutSeconds", DEFAULT_LOCK_TIMEOUT_S);
  const ready = num("readyTimeoutSeconds", DEFAULT_READY_TIMEOUT_S);
  if (typeof lock === "string") return { error: lock };
  if (typeof ready === "string") return { error: ready };
  return { lockTimeoutS: lock, readyTimeoutS: ready, className: o.volumeSnapshotClassName || undefined };
}

/** Seed a server running on a cloned volume: stop replication, work out where the clone is, CHANGE MASTER there, start. */
export async function seedClone(c: Conn, master: Endpoint, recorded: ReplicationPosition): Promise<{ position: ReplicationPosition; resumed: boolean }> {
  await c.query("STOP SLAVE").catch(() => undefined);
  const [g] = await queryRows<{ b: string | null; s: string | null }>(c, "SELECT @@gtid_binlog_pos AS b, @@gtid_slave_pos AS s");
  const sp = seedPosition(recorded, { gtidBinlogPos: g?.b ?? "", gtidSlavePos: g?.s ?? "" });
  if (!sp.ok) throw failed("CloneBehind", sp.message);
  await configureReplica(c, master, sp.position, { timeoutMs: 30_000 });
  return { position: sp.position, resumed: sp.resumed };
}

function pickPosition(p: ReplicationPosition | undefined): { role?: string; gtid?: string; file?: string; position?: number } | undefined {
  if (!p) return undefined;
  return {
    role: p.role,
    ...(p.gtid ? { gtid: p.gtid } : {}),
    ...(p.file ? { file: p.file } : {}),
    ...(p.position !== undefined ? { position: p.position } : {}),
  };
}
