// The backup controller's rules, pure: what to do next for a
// ReplicatorBackup given what was observed, and the status that follows.
import type { BackupSpec, BackupStatus, RepositorySpec } from "../../../api/v1alpha1.js";
import { formatBytes, positionText } from "../../../storage/catalog.js";
import { operationStatus, setCondition } from "../../conditions.js";
import { jobState, selectServerPod, type AgentResult, type JobLike, type PodLike } from "../../observe.js";
import { followJob, usableRepository, type RepositoryObserved } from "../shared.js";

export interface BackupObserved {
  spec: { ok: true; value: BackupSpec } | { ok: false; message: string };
  status: BackupStatus | undefined;
  generation: number;
  repository: RepositoryObserved;
  job: JobLike | undefined;
  jobPods: PodLike[];
  /** Pods in the namespace, for resolving the source. */
  pods: PodLike[];
  /** Other backup Jobs still running against each pod: pod name → job names. */
  busyPods: Map<string, string[]>;
  /** The resource mirrors a backup found in storage (annotation replicator.dev/imported). */
  imported: boolean;
  /** The Job mounts a PersistentVolumeClaim (a physical backup reads the server's data volume). */
  jobHoldsVolume?: boolean;
  /** Read once a Job is to be created: what is wrong with the credentials Secrets the Job reads ("" when nothing). */
  secretProblem?: string | undefined;
}

/** On a ReplicatorBackup: True when the backup records a replication position, so it can seed a slave. */
export const POSITION_CONDITION = "ReplicationPosition";

export type BackupPlan =
  /** `releaseJob`: a finished Job whose pods still mount the source's data volume; delete it (its outcome is recorded). */
  | { kind: "done"; releaseJob?: string }
  | { kind: "invalid"; message: string }
  | { kind: "wait"; reason: string; message: string; requeueMs: number }
  | { kind: "needPreflight" }
  | { kind: "createJob"; sourcePod: string; sourceAddress: string; sourceRole: "master" | "slave"; cluster: string; repo: RepositorySpec; spec: BackupSpec }
  | { kind: "running"; jobName: string }
  | { kind: "succeeded"; jobName: string; result: AgentResult; repo: RepositorySpec; spec: BackupSpec }
  | { kind: "failed"; jobName: string; reason: string; message: string; spec: BackupSpec; sourcePod: string | undefined };

export function decideBackup(o: BackupObserved): BackupPlan {
  if (o.status?.phase === "Completed" || o.status?.phase === "Failed") {
    // Terminal. A new generation of a failed spec does not re-run: create a new resource.
    // A finished Job that mounts the source's data volume would keep it in use
    // (a PVC deleted meanwhile hangs in Terminating) until its TTL: it goes as soon
    // as the cache shows the outcome recorded, so no later reconcile misses the Job.
    if (o.job && o.jobHoldsVolume && jobState(o.job).state !== "running") return { kind: "done", releaseJob: o.job.metadata.name };
    return { kind: "done" };
  }
  if (!o.spec.ok) return { kind: "invalid", message: o.spec.message };
  const spec = o.spec.value;
  if (o.imported) return { kind: "done" };
  if (!spec.source) return { kind: "invalid", message: "spec.source: Required" };
  const source = spec.source;
  const usable = usableRepository(spec.repository, o.repository);
  if (!usable.ok) return usable.wait;
  const repo = usable.repo;
  if (o.job) {
    const sourcePod = o.job.metadata.labels?.["replicator.dev/source-pod"];
    const out = followJob(o.job, o.jobPods, "backup");
    switch (out.kind) {
      case "running":
        return out;
      case "succeeded":
        if (!out.result.name) return { kind: "failed", jobName: out.jobName, reason: "PluginFailed", message: "the backup Job succeeded but reported no result", spec, sourcePod };
        return { ...out, repo, spec };
      case "failed":
        return { ...out, spec, sourcePod };
    }
  }
  const sel = selectServerPod(source, o.pods);
  if (!sel.ok) return { kind: "wait", reason: sel.reason, message: sel.message, requeueMs: 5_000 };
  const busy = o.busyPods.get(sel.pod) ?? [];
  if (busy.length > 0) {
    return { kind: "wait", reason: "Queued", message: `waiting for ${busy.join(", ")} on pod ${sel.pod}: two backups of one server never run at once`, requeueMs: 5_000 };
  }
  if (o.secretProblem === undefined) return { kind: "needPreflight" };
  if (o.secretProblem) return { kind: "wait", reason: "SecretInvalid", message: o.secretProblem, requeueMs: 15_000 };
  const cluster = spec.cluster ?? source.statefulSet ?? source.pod ?? sel.pod;
  return { kind: "createJob", sourcePod: sel.pod, sourceAddress: sel.address, sourceRole: sel.role, cluster, repo, spec };
}

export function computeBackupStatus(prev: BackupStatus | undefined, plan: BackupPlan, now: Date, generation: number, jobName?: string): BackupStatus | undefined {
  const s: BackupStatus = { ...(prev ?? {}), observedGeneration: generation };
  switch (plan.kind) {
    case "done":
    case "needPreflight":
      return undefined;
    case "invalid":
      return operationStatus(s, { phase: "Failed", reason: "InvalidSpec", message: plan.message }, now, generation);
    case "wait":
      return operationStatus(s, { phase: "Pending", reason: plan.reason, message: plan.message }, now, generation);
    case "createJob":
      s.sourcePod = plan.sourcePod;
      s.cluster = plan.cluster;
      s.method = plan.spec.method ?? plan.repo.method;
      s.startedAt = now.toISOString();
      return operationStatus(s, { phase: "Running", reason: "Running", message: `backup Job ${jobName ?? ""} started on ${plan.sourcePod}`, jobName }, now, generation);
    case "running":
      return operationStatus(s, { phase: "Running", reason: "Running", message: `backup Job ${plan.jobName} is running`, jobName: plan.jobName }, now, generation);
    case "succeeded": {
      const r = plan.result;
      if (r.name !== undefined) s.backupName = r.name;
      if (r.method !== undefined) s.method = r.method;
      if (r.size !== undefined) {
        s.size = r.size;
        s.sizeHuman = formatBytes(r.size);
      }
      if (r.sha256 !== undefined) s.sha256 = r.sha256;
      const pos = positionText(r.replication);
      if (pos) s.position = pos;
      if (r.replication) {
        s.replication = {};
        if (r.replication.role) s.replication.role = r.replication.role;
        if (r.replication.gtid) s.replication.gtid = r.replication.gtid;
        if (r.replication.file) s.replication.file = r.replication.file;
        if (r.replication.position !== undefined) s.replication.position = r.replication.position;
      }
      if (r.startedAt) s.startedAt = r.startedAt;
      s.finishedAt = r.finishedAt ?? now.toISOString();
      const verdict = positionVerdict(r, s.sourcePod);
      const message = verdict.ok ? `backup ${r.name ?? ""} stored` : `backup ${r.name ?? ""} stored, but ${verdict.message}`;
      operationStatus(s, { phase: "Completed", reason: "BackupSucceeded", message, jobName: plan.jobName }, now, generation);
      s.conditions = setCondition(s.conditions, { type: POSITION_CONDITION, status: verdict.ok ? "True" : "False", reason: verdict.reason, message: verdict.message }, now, generation);
      return s;
    }
    case "failed":
      s.finishedAt = now.toISOString();
      return operationStatus(s, { phase: "Failed", reason: plan.reason, message: plan.message, jobName: plan.jobName }, now, generation);
  }
}

/**
 * Pure: can this backup seed a slave? A backup without a replication position
 * is kept (it restores data, e.g. of a standalone server) but is never used to
 * provision a slave; the reason names the cause and the fix.
 */
export function positionVerdict(r: Pick<AgentResult, "replication" | "role" | "method">, server: string | undefined): { ok: boolean; reason: string; message: string } {
  const pos = positionText(r.replication);
  if (r.replication && pos) return { ok: true, reason: "PositionRecorded", message: `replication position ${pos}: it can seed a slave` };
  const where = server ?? "the source";
  if (r.role === "standalone") {
    return {
      ok: false,
      reason: "BinaryLoggingOff",
      message: `binary logging is off on ${where}: the backup has no replication position; set log_bin and server_id in ${where}'s server configuration and take a new backup to seed slaves (this one restores data only)`,
    };
  }
  return { ok: false, reason: "NoPosition", message: `the ${r.method ?? ""} backup of ${where} records no replication position: it restores data only and cannot seed a slave` };
}
