// Decision steps that backups and restores share, pure: is the repository
// usable, and where is the operation's Job.
import type { RepositorySpec } from "../../api/v1alpha1.js";
import { agentResult, jobState, type AgentResult, type JobLike, type PodLike } from "../observe.js";

export type RepositoryObserved = { found: false } | { found: true; spec: { ok: true; value: RepositorySpec } | { ok: false; message: string } };

export type WaitPlan = { kind: "wait"; reason: string; message: string; requeueMs: number };

/** The repository's spec, or the wait that says why it cannot be used. */
export function usableRepository(name: string, r: RepositoryObserved): { ok: true; repo: RepositorySpec } | { ok: false; wait: WaitPlan } {
  if (!r.found) return { ok: false, wait: { kind: "wait", reason: "RepositoryNotFound", message: `ReplicatorRepository ${name} not found; create it`, requeueMs: 15_000 } };
  if (!r.spec.ok) return { ok: false, wait: { kind: "wait", reason: "RepositoryInvalid", message: `ReplicatorRepository ${name}: ${r.spec.message}`, requeueMs: 30_000 } };
  return { ok: true, repo: r.spec.value };
}

export type JobOutcome =
  | { kind: "running"; jobName: string }
  | { kind: "succeeded"; jobName: string; result: AgentResult }
  | { kind: "failed"; jobName: string; reason: string; message: string };

/** Follow an existing Job: its state, and the agent's result from its pods' termination messages. */
export function followJob(job: JobLike, jobPods: PodLike[], operation: "backup" | "restore"): JobOutcome {
  const jobName = job.metadata.name;
  const s = jobState(job);
  const result = agentResult(jobPods);
  switch (s.state) {
    case "running":
      return { kind: "running", jobName };
    case "succeeded":
      if (!result?.ok) return { kind: "failed", jobName, reason: "PluginFailed", message: `the ${operation} Job succeeded but reported no result` };
      return { kind: "succeeded", jobName, result };
    case "failed":
      return { kind: "failed", jobName, reason: result?.reason ?? s.reason, message: result?.error ?? s.message };
  }
}

/** A key a Secret must hold, and the field or annotation that asks for it (for the message). */
export interface SecretNeed {
  key: string;
  field: string;
}

/**
 * Pure: what is wrong with a Secret for the use `needs` describe, in one line
 * that names the Secret, the missing key and the fix; undefined when nothing
 * is. `keys` are the Secret's key names (never values), undefined when it
 * does not exist.
 */
export function secretProblem(name: string, keys: string[] | undefined, needs: SecretNeed[], where: string, fix: string): string | undefined {
  const wanted = [...new Set(needs.map((n) => n.key))];
  if (keys === undefined) return `Secret ${name} (${where}) not found; create it with the keys ${wanted.join(" and ")}`;
  const missing = needs.find((n) => !keys.includes(n.key));
  if (!missing) return undefined;
  const has = keys.length > 0 ? `its keys are ${[...keys].sort().join(", ")}` : "it has no keys";
  return `Secret ${name} (${where}) has no key "${missing.key}" (${missing.field}); ${has}. ${fix}`;
}
