// The restore controller's rules, pure.
import type { RepositorySpec, RestoreSpec, RestoreStatus } from "../../../api/v1alpha1.js";
import { operationStatus } from "../../conditions.js";
import { selectServerPod, type AgentResult, type JobLike, type PodLike } from "../../observe.js";
import { parseTime, positionText } from "../../../storage/catalog.js";
import { oneLine } from "../../../lib/errors.js";
import { followJob, usableRepository, type RepositoryObserved } from "../shared.js";

/** A stored backup, as far as choosing one to restore into a running server needs it. */
export interface RestoreCandidate {
  name: string;
  time: Date;
  method: string;
  kind: "logical" | "physical" | "snapshot";
  hasPosition: boolean;
  /** The source's role when it was taken: standalone means binary logging was off. */
  sourceRole: string;
  source: string;
}

/**
 * Read before a Job is created: the problem with a credentials Secret (if
 * any), and the repository's backups; `unlisted` when the operator cannot
 * list the repository itself (a filesystem repository: the Job chooses).
 */
export type RestorePreflight =
  | { secretProblem: string }
  | { secretProblem?: undefined; catalog: { kind: "listed"; backups: RestoreCandidate[] } | { kind: "unlisted" } | { kind: "error"; reason: string; message: string } };

export interface RestoreObserved {
  spec: { ok: true; value: RestoreSpec } | { ok: false; message: string };
  status: RestoreStatus | undefined;
  generation: number;
  repository: RepositoryObserved;
  job: JobLike | undefined;
  jobPods: PodLike[];
  pods: PodLike[];
  /** Only read once a Job is to be created. */
  preflight?: RestorePreflight | undefined;
}

export type RestorePlan =
  | { kind: "done" }
  | { kind: "invalid"; message: string }
  | { kind: "wait"; reason: string; message: string; requeueMs: number }
  | { kind: "needPreflight" }
  /** `backup`: the backup chosen for the Job (`latest` and `before` resolved to a name), or undefined: the Job chooses. */
  | { kind: "createJob"; targetPod: string; targetAddress: string; master: { pod: string; address: string } | undefined; repo: RepositorySpec; spec: RestoreSpec; backup?: string | undefined }
  | { kind: "running"; jobName: string }
  | { kind: "succeeded"; jobName: string; result: AgentResult }
  | { kind: "failed"; jobName: string; reason: string; message: string };

export function decideRestore(o: RestoreObserved): RestorePlan {
  if (o.status?.phase === "Completed" || o.status?.phase === "Failed") return { kind: "done" };
  if (!o.spec.ok) return { kind: "invalid", message: o.spec.message };
  const spec = o.spec.value;
  if (spec.before && spec.backup !== "latest") return { kind: "invalid", message: "spec: set backup or before, not both" };
  const pitr = pointInTimeProblem(spec);
  if (pitr) return { kind: "invalid", message: pitr };
  const repo = usableRepository(spec.repository, o.repository);
  if (!repo.ok) return repo.wait;
  if (o.job) return followJob(o.job, o.jobPods, "restore");
  const target = selectServerPod(spec.target, o.pods);
  if (!target.ok) return { kind: "wait", reason: target.reason === "SourceNotFound" ? "TargetNotFound" : "TargetNotReady", message: target.message, requeueMs: 5_000 };
  let master: { pod: string; address: string } | undefined;
  if (spec.replicateFrom) {
    const m = selectServerPod(spec.replicateFrom, o.pods);
    if (!m.ok) return { kind: "wait", reason: "MasterNotReady", message: `replicateFrom: ${m.message}`, requeueMs: 5_000 };
    master = { pod: m.pod, address: m.address };
  }
  if (!o.preflight) return { kind: "needPreflight" };
  if (o.preflight.secretProblem !== undefined) return { kind: "wait", reason: "SecretInvalid", message: o.preflight.secretProblem, requeueMs: 15_000 };
  const catalog = o.preflight.catalog;
  if (catalog.kind === "error") return { kind: "wait", reason: catalog.reason, message: catalog.message, requeueMs: 30_000 };
  const job = { kind: "createJob" as const, targetPod: target.pod, targetAddress: target.address, master, repo: repo.repo, spec };
  // A point-in-time restore chooses its base backup itself (the newest logical one before the target, by the archive).
  if (catalog.kind === "unlisted" || isPointInTime(spec)) return job;
  const chosen = selectServerBackup(spec, catalog.backups, target.pod);
  if (!chosen.ok) return chosen.plan;
  return { ...job, backup: chosen.backup };
}

export function isPointInTime(spec: RestoreSpec): boolean {
  return spec.until !== undefined || spec.untilGtid !== undefined;
}

/** Pure: the target of a point-in-time restore as the status shows it. */
export function untilText(spec: RestoreSpec): string | undefined {
  return spec.until ?? (spec.untilGtid !== undefined ? `GTID ${spec.untilGtid}` : undefined);
}

/** Pure: what is wrong with spec.until/untilGtid (the API server's CEL rules say the same; this also covers the time's format). */
export function pointInTimeProblem(spec: RestoreSpec): string | undefined {
  if (!isPointInTime(spec)) return undefined;
  if (spec.until !== undefined && spec.untilGtid !== undefined) return "spec: set until or untilGtid, not both";
  const other = [spec.backup !== "latest" ? "backup" : "", spec.before ? "before" : "", spec.replicateFrom ? "replicateFrom" : "", spec.volume ? "volume" : ""].filter(Boolean);
  if (other.length > 0) return `spec: until/untilGtid choose the base backup themselves; remove ${other.join(", ")}`;
  if (spec.until !== undefined) {
    try {
      parseTime(spec.until);
    } catch (err) {
      return `spec.until: ${oneLine(err)}`;
    }
  }
  return undefined;
}

/**
 * Pure: the backup a restore into a running server uses. `latest` (and
 * `before`) mean the newest backup that can be loaded into a running server
 * (logical), with a replication position when the target is to replicate; a
 * physical one is never chosen for it, and one named explicitly is refused
 * with the way it can be restored. A name not in the list is left to the Job
 * (it says which backups there are).
 */
export function selectServerBackup(
  spec: RestoreSpec,
  backups: RestoreCandidate[],
  targetPod: string,
): { ok: true; backup: string | undefined } | { ok: false; plan: Extract<RestorePlan, { kind: "wait" | "invalid" }> } {
  const where = `cluster ${spec.cluster} in repository ${spec.repository}`;
  if (spec.backup !== "latest" && !spec.before) {
    const named = backups.find((b) => b.name === spec.backup);
    if (named && named.kind !== "logical") {
      return {
        ok: false,
        plan: {
          kind: "invalid",
          message: `backup ${named.name} is ${named.kind} (${named.method}): it cannot be loaded into the running server ${targetPod}; restore a logical backup (kubectl replicator list shows the method of each), or let a provisioned StatefulSet's init container restore it into a new slave (docs/provisioning.md)`,
        },
      };
    }
    return { ok: true, backup: named?.name };
  }
  const before = spec.before ? Date.parse(spec.before) : undefined;
  const window = backups.filter((b) => b.kind !== "snapshot" && (before === undefined || b.time.getTime() <= before)).sort((a, b) => a.time.getTime() - b.time.getTime());
  const newest = window.at(-1);
  const logical = window.filter((b) => b.kind === "logical");
  const usable = spec.replicateFrom ? logical.filter((b) => b.hasPosition) : logical;
  const pick = usable.at(-1);
  if (pick) return { ok: true, backup: pick.name };
  const at = spec.before ? ` at or before ${spec.before}` : "";
  const take = `kubectl replicator backup ${spec.replicateFrom?.statefulSet ?? "STATEFULSET"} --method mysqldump`;
  let message: string;
  if (!newest) {
    message = `no backup of ${where}${at}; take one: ${take}`;
  } else if (logical.length === 0) {
    message = `no logical backup of ${where}${at}: the running server ${targetPod} can load only a logical (mysqldump) backup, and the newest, ${newest.name}, is ${newest.kind} (${newest.method}); take a logical one (${take}, or a ReplicatorBackup with method: mysqldump), or seed a new slave from the ${newest.kind} backup with a provisioned StatefulSet (docs/provisioning.md)`;
  } else {
    const last = logical.at(-1);
    const cause = last?.sourceRole === "standalone" ? `binary logging was off on ${last.source} when it was taken` : "it records none";
    message = `no logical backup of ${where}${at} has a replication position, which spec.replicateFrom needs (the newest, ${last?.name ?? ""}: ${cause}); set log_bin and server_id on the master and take a new backup: ${take}`;
  }
  return { ok: false, plan: { kind: "wait", reason: "NoRestorableBackup", message, requeueMs: 60_000 } };
}

export function computeRestoreStatus(prev: RestoreStatus | undefined, plan: RestorePlan, now: Date, generation: number, jobName?: string): RestoreStatus | undefined {
  const s: RestoreStatus = { ...(prev ?? {}), observedGeneration: generation };
  switch (plan.kind) {
    case "done":
      return undefined;
    case "invalid":
      return operationStatus(s, { phase: "Failed", reason: "InvalidSpec", message: plan.message }, now, generation);
    case "needPreflight":
      return undefined;
    case "wait":
      return operationStatus(s, { phase: "Pending", reason: plan.reason, message: plan.message }, now, generation);
    case "createJob":
      s.targetPod = plan.targetPod;
      if (plan.backup) s.backupName = plan.backup;
      if (untilText(plan.spec)) s.until = untilText(plan.spec);
      s.startedAt = now.toISOString();
      return operationStatus(s, { phase: "Running", reason: "Running", message: `restore Job ${jobName ?? ""} started on ${plan.targetPod}`, jobName }, now, generation);
    case "running":
      return operationStatus(s, { phase: "Running", reason: "Running", message: `restore Job ${plan.jobName} is running`, jobName: plan.jobName }, now, generation);
    case "succeeded": {
      const r = plan.result;
      if (r.name) s.backupName = r.name;
      const pitr = pointInTimeOf(r);
      if (pitr) {
        s.backupName = pitr.backup;
        s.until = pitr.until;
        s.pointInTime = pitr.status;
      }
      const pos = positionText(r.replication);
      if (pos) s.position = pos;
      s.replicating = r.replicating === true;
      if (typeof r.secondsBehindMaster === "number") s.secondsBehindMaster = r.secondsBehindMaster;
      s.finishedAt = now.toISOString();
      const message = pitr
        ? `restored ${pitr.backup} and replayed ${pitr.status.replayed ?? 0} transaction(s) of the binlog archive up to ${pitr.until}`
        : `restored ${r.name ?? ""}${s.replicating ? ", replicating" : ""}`;
      return operationStatus(s, { phase: "Completed", reason: "RestoreSucceeded", message, jobName: plan.jobName }, now, generation);
    }
    case "failed":
      s.finishedAt = now.toISOString();
      return operationStatus(s, { phase: "Failed", reason: plan.reason, message: plan.message, jobName: plan.jobName }, now, generation);
  }
}

/** Pure: a point-in-time restore's result (the agent's PitrResult: plan, replayed), or undefined for an ordinary one. */
export function pointInTimeOf(r: AgentResult): { backup: string; until: string; status: NonNullable<RestoreStatus["pointInTime"]> } | undefined {
  if (r.pointInTime !== true) return undefined;
  const plan = (r.plan ?? {}) as { backup?: unknown; until?: unknown; fromGtid?: unknown; stopGtid?: unknown; stopTime?: unknown; binlogs?: { file?: unknown }[] };
  const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
  const status: NonNullable<RestoreStatus["pointInTime"]> = {};
  const from = str(plan.fromGtid);
  const stop = str(plan.stopGtid);
  const stopTime = str(plan.stopTime);
  if (from) status.fromGtid = from;
  if (stop) status.stopGtid = stop;
  if (stopTime) status.stopTime = stopTime;
  if (Array.isArray(plan.binlogs)) status.binlogs = plan.binlogs.map((b) => String(b.file));
  if (typeof r.replayed === "number") status.replayed = r.replayed;
  return { backup: str(plan.backup) ?? "", until: str(plan.until) ?? "", status };
}
