// Snapshot backups: the operator takes a volumesnapshot backup itself (./backup.ts runs one), no Job;
// the backup controller asks here whether one runs, starts it, and records its outcome.
import { API_VERSION, backupSpecSchema, validateSpec, type BackupSpec, type ReplicatorBackup } from "../../../api/v1alpha1.js";
import { queryRows } from "../../../db/connection.js";
import { oneLine } from "../../../lib/errors.js";
import { buildBackupName, type ReplicationPosition } from "../../../storage/catalog.js";
import { Repository } from "../../../storage/repository.js";
import { dataVolumeOf } from "../../builders/jobs.js";
import { operationStatus, sameStatus } from "../../conditions.js";
import type { BackupPlan } from "../backup/decide.js";
import { isNotFound } from "../../../kube/rest.js";
import { runSnapshotBackup, type SnapshotBackupResult } from "./backup.js";
import { SNAPSHOT_METHOD, volumeSnapshotName, vsPath } from "./volumesnapshot.js";
import type { SnapshotHost } from "./host.js";

const DEFAULT_LOCK_TIMEOUT_S = 60;
const DEFAULT_READY_TIMEOUT_S = 600;

type Outcome = Extract<BackupPlan, { kind: "succeeded" } | { kind: "failed" }>;

interface Running {
  pod: string;
  backupName: string;
  done: Promise<void>;
}

export function isSnapshotBackup(method: string | undefined): boolean {
  return method === SNAPSHOT_METHOD;
}

export class SnapshotBackups {
  private readonly running = new Map<string, Running>();
  private readonly outcomes = new Map<string, Outcome>();
  /** Backups whose outcome was recorded by this process: a stale cache must not run them again. */
  private readonly settled = new Set<string>();

  constructor(private readonly host: SnapshotHost) {}

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
}

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

function pickPosition(p: ReplicationPosition | undefined): { role?: string; gtid?: string; file?: string; position?: number } | undefined {
  if (!p) return undefined;
  return {
    role: p.role,
    ...(p.gtid ? { gtid: p.gtid } : {}),
    ...(p.file ? { file: p.file } : {}),
    ...(p.position !== undefined ? { position: p.position } : {}),
  };
}
