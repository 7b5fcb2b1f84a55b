// The restore controller's rules, pure.
import type { RepositorySpec, RestoreSpec, RestoreStatus } from "../../../api/v1alpha1.js";
import { operationStatus } from "../../conditions.js";
import { selectServerPod, type AgentResult, type JobLike, type PodLike } from "../../observe.js";
import { positionText } from "../../../storage/catalog.js";
import { followJob, usableRepository, type RepositoryObserved } from "../shared.js";

export interface RestoreObserved {
  spec: { ok: true; value: RestoreSpec } | { ok: false; message: string };
  status: RestoreStatus | undefined;
  generation: number;
  repository: RepositoryObserved;
  job: JobLike | undefined;
  jobPods: PodLike[];
  pods: PodLike[];
}

export type RestorePlan =
  | { kind: "done" }
  | { kind: "invalid"; message: string }
  | { kind: "wait"; reason: string; message: string; requeueMs: number }
  | { kind: "createJob"; targetPod: string; targetAddress: string; master: { pod: string; address: string } | undefined; repo: RepositorySpec; spec: RestoreSpec }
  | { kind: "running"; jobName: string }
  | { kind: "succeeded"; jobName: string; result: AgentResult }
  | { kind: "failed"; jobName: string; reason: string; message: string };

export function decideRestore(o: RestoreObserved): RestorePlan {
  if (o.status?.phase === "Completed" || o.status?.phase === "Failed") return { kind: "done" };
  if (!o.spec.ok) return { kind: "invalid", message: o.spec.message };
  const spec = o.spec.value;
  if (spec.before && spec.backup !== "latest") return { kind: "invalid", message: "spec: set backup or before, not both" };
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
  return { kind: "createJob", targetPod: target.pod, targetAddress: target.address, master, repo: repo.repo, spec };
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
      const pos = positionText(r.replication);
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
