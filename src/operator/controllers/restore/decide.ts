// The restore controller's rules, pure.
import type { RepositorySpec, RestoreSpec, RestoreStatus } from "../../../api/v1alpha1.js";
import { operationStatus } from "../../conditions.js";
import { agentResult, formatPositionShort, jobState, selectServerPod, type AgentResult, type JobLike, type PodLike } from "../../observe.js";

export interface RestoreObserved {
  spec: { ok: true; value: RestoreSpec } | { ok: false; message: string };
  status: RestoreStatus | undefined;
  generation: number;
  repository: { found: false } | { found: true; spec: { ok: true; value: RepositorySpec } | { ok: false; message: string } };
  job: JobLike | undefined;
  jobPods: PodLike[];
  pods: PodLike[];
}

export type RestorePlan =
  | { kind: "done" }
  | { kind: "invalid"; message: string }
  | { kind: "wait"; reason: string; message: string; requeueMs: number }
  | { kind: "createJob"; targetPod: string; targetAddress: string; masterAddress: string | undefined; repo: RepositorySpec; spec: RestoreSpec }
  | { kind: "running"; jobName: string }
  | { kind: "succeeded"; jobName: string; result: AgentResult }
  | { kind: "failed"; jobName: string; reason: string; message: string };

export function decideRestore(o: RestoreObserved): RestorePlan {
  if (o.status?.phase === "Completed" || o.status?.phase === "Failed") return { kind: "done" };
  if (!o.spec.ok) return { kind: "invalid", message: o.spec.message };
  const spec = o.spec.value;
  if (spec.before && spec.backup !== "latest") return { kind: "invalid", message: "spec: set backup or before, not both" };
  if (!o.repository.found) {
    return { kind: "wait", reason: "RepositoryNotFound", message: `ReplicatorRepository ${spec.repository} not found; create it`, requeueMs: 15_000 };
  }
  if (!o.repository.spec.ok) {
    return { kind: "wait", reason: "RepositoryInvalid", message: `ReplicatorRepository ${spec.repository}: ${o.repository.spec.message}`, requeueMs: 30_000 };
  }
  if (o.job) {
    const s = jobState(o.job);
    const result = agentResult(o.jobPods);
    switch (s.state) {
      case "running":
        return { kind: "running", jobName: o.job.metadata.name };
      case "succeeded":
        if (!result?.ok) return { kind: "failed", jobName: o.job.metadata.name, reason: "PluginFailed", message: "the restore Job succeeded but reported no result" };
        return { kind: "succeeded", jobName: o.job.metadata.name, result };
      case "failed":
        return { kind: "failed", jobName: o.job.metadata.name, reason: result?.reason ?? s.reason, message: result?.error ?? s.message };
    }
  }
  const target = selectServerPod(spec.target, o.pods);
  if (!target.ok) return { kind: "wait", reason: target.reason === "SourceNotFound" ? "TargetNotFound" : "TargetNotReady", message: target.message, requeueMs: 5_000 };
  let masterAddress: string | undefined;
  if (spec.replicateFrom) {
    const m = selectServerPod(spec.replicateFrom, o.pods);
    if (!m.ok) return { kind: "wait", reason: "MasterNotReady", message: `replicateFrom: ${m.message}`, requeueMs: 5_000 };
    masterAddress = m.address;
  }
  return { kind: "createJob", targetPod: target.pod, targetAddress: target.address, masterAddress, repo: o.repository.spec.value, spec };
}

export function computeRestoreStatus(prev: RestoreStatus | undefined, plan: RestorePlan, now: Date, generation: number, jobName?: string): RestoreStatus | undefined {
  const s: RestoreStatus = { ...(prev ?? {}), observedGeneration: generation };
  switch (plan.kind) {
    case "done":
      return undefined;
    case "invalid":
      return operationStatus(s, { phase: "Failed", reason: "InvalidSpec", message: plan.message }, now, generation);
    case "wait":
      return operationStatus(s, { phase: "Pending", reason: plan.reason, message: plan.message }, now, generation);
    case "createJob":
      s.targetPod = plan.targetPod;
      s.startedAt = now.toISOString();
      return operationStatus(s, { phase: "Running", reason: "Running", message: `restore Job ${jobName ?? ""} started on ${plan.targetPod}`, jobName }, now, generation);
    case "running":
      return operationStatus(s, { phase: "Running", reason: "Running", message: `restore Job ${plan.jobName} is running`, jobName: plan.jobName }, now, generation);
    case "succeeded": {
      const r = plan.result;
      if (r.name) s.backupName = r.name;
      const pos = formatPositionShort(r.replication);
      if (pos) s.position = pos;
      s.replicating = r.replicating === true;
      if (typeof r.secondsBehindMaster === "number") s.secondsBehindMaster = r.secondsBehindMaster;
      s.finishedAt = now.toISOString();
      const message = `restored ${r.name ?? ""}${s.replicating ? ", replicating" : ""}`;
      return operationStatus(s, { phase: "Completed", reason: "RestoreSucceeded", message, jobName: plan.jobName }, now, generation);
    }
    case "failed":
      s.finishedAt = now.toISOString();
      return operationStatus(s, { phase: "Failed", reason: plan.reason, message: plan.message, jobName: plan.jobName }, now, generation);
  }
}
