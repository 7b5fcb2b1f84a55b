// Conditions, the Kubernetes way: lastTransitionTime moves only when the
// status flips. Pure.
import type { Condition } from "../api/v1alpha1.js";

export interface ConditionInput {
  type: string;
  status: "True" | "False" | "Unknown";
  reason: string;
  message: string;
}

export function setCondition(existing: Condition[] | undefined, c: ConditionInput, now: Date, generation?: number): Condition[] {
  const list = [...(existing ?? [])];
  const i = list.findIndex((x) => x.type === c.type);
  const prev = i >= 0 ? list[i] : undefined;
  const next: Condition = {
    type: c.type,
    status: c.status,
    reason: c.reason,
    message: c.message,
    lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : now.toISOString(),
  };
  if (generation !== undefined) next.observedGeneration = generation;
  if (i >= 0) list[i] = next;
  else list.push(next);
  return list;
}

export function getCondition(list: Condition[] | undefined, type: string): Condition | undefined {
  return list?.find((c) => c.type === type);
}

/** Deep-equal for status objects, ignoring key order. */
export function sameStatus(a: unknown, b: unknown): boolean {
  return stable(a) === stable(b);
}

function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v)
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stable((v as Record<string, unknown>)[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(v);
}

/** The status fields every operation resource (backup, restore) shares. */
export interface OperationStatus {
  phase?: "Pending" | "Running" | "Completed" | "Failed" | undefined;
  message?: string | undefined;
  jobName?: string | undefined;
  finishedAt?: string | undefined;
  conditions?: Condition[] | undefined;
}

/**
 * Pure: the status of an operation in one of the states backups and restores
 * share. `Ready` always follows; `Succeeded` is set on terminal states.
 */
export function operationStatus<S extends OperationStatus>(
  s: S,
  state: { phase: "Pending" | "Running" | "Completed" | "Failed"; reason: string; message: string; jobName?: string | undefined },
  now: Date,
  generation: number,
): S {
  s.phase = state.phase;
  s.message = state.message;
  if (state.jobName !== undefined) s.jobName = state.jobName;
  const ok = state.phase === "Completed";
  s.conditions = setCondition(s.conditions, { type: "Ready", status: ok ? "True" : "False", reason: state.reason, message: state.message }, now, generation);
  if (state.phase === "Completed" || state.phase === "Failed") {
    s.finishedAt ??= now.toISOString();
    s.conditions = setCondition(s.conditions, { type: "Succeeded", status: ok ? "True" : "False", reason: state.reason, message: state.message }, now, generation);
  }
  return s;
}
