// Pure reads of a pod for the provision init container path: does the pod
// take a plan, which plan does it carry, and what did its init container say.
import { provisionPlanSchema } from "../../../api/provision-plan.js";
import { PLAN_ANNOTATION, type ProvisionObserved } from "./decide.js";

export interface ProvisionPod {
  metadata: { annotations?: Record<string, string> };
  spec?: {
    volumes?: { downwardAPI?: { items?: { fieldRef?: { fieldPath?: string } }[] } }[];
    initContainers?: { name: string; command?: string[]; args?: string[] }[];
  };
  status?: {
    initContainerStatuses?: {
      name: string;
      state?: { terminated?: { exitCode: number; message?: string } };
      lastState?: { terminated?: { exitCode: number; message?: string } };
    }[];
  };
}

const PLAN_FIELD = `metadata.annotations['${PLAN_ANNOTATION}']`;

/** The pod mounts the plan annotation (a downward-API volume item), so an init container waits for it. */
export function takesPlan(pod: ProvisionPod): boolean {
  return (pod.spec?.volumes ?? []).some((v) => v.downwardAPI?.items?.some((i) => i.fieldRef?.fieldPath?.replace(/"/g, "'") === PLAN_FIELD) ?? false);
}

export function podPlan(pod: ProvisionPod): ProvisionObserved["plan"] {
  const text = pod.metadata.annotations?.[PLAN_ANNOTATION];
  if (!text) return undefined;
  try {
    const r = provisionPlanSchema.safeParse(JSON.parse(text));
    if (!r.success) return undefined;
    return r.data.action === "restore" ? { action: "restore", backup: r.data.backup } : { action: "none" };
  } catch {
    return undefined;
  }
}

/**
 * The result of the pod's `replicator provision` init container, from its
 * termination message: the current run's, or the last failed run's while it
 * waits to be restarted.
 */
export function provisionInitResult(pod: ProvisionPod): ProvisionObserved["init"] {
  const c = (pod.spec?.initContainers ?? []).find((ic) => [...(ic.command ?? []), ...(ic.args ?? [])].includes("provision"));
  if (!c) return undefined;
  const st = pod.status?.initContainerStatuses?.find((s) => s.name === c.name);
  const t = st?.state?.terminated ?? st?.lastState?.terminated;
  if (!t) return undefined;
  let msg: { ok?: boolean; action?: string; error?: string } = {};
  try {
    msg = JSON.parse(t.message ?? "{}") as typeof msg;
  } catch {
    // Not ours, or cut short: the exit code decides.
  }
  if (t.exitCode !== 0) return { ok: false, error: msg.error ?? `exit code ${t.exitCode}` };
  return { ok: true, action: msg.action };
}
