// Pure readings of Kubernetes objects that several controllers share:
// which pod is a StatefulSet's master, a Job's state, and the agent's result
// from a pod's termination message.
import type { ServerRef } from "../api/v1alpha1.js";

export interface PodLike {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; ownerReferences?: { kind: string; name: string }[]; deletionTimestamp?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: { name: string; ready?: boolean; state?: { terminated?: { exitCode: number; message?: string; reason?: string; finishedAt?: string } } }[];
  };
}

export interface JobLike {
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; ownerReferences?: { kind: string; name: string; uid: string }[] };
  status?: { active?: number; succeeded?: number; failed?: number; conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

export const ROLE_LABEL = "replicator.dev/role";

export function ordinalOf(podName: string): number {
  const m = /-(\d+)$/.exec(podName);
  return m?.[1] ? Number(m[1]) : -1;
}

export function isPodReady(p: PodLike): boolean {
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

export type ServerSelection =
  | { ok: true; pod: string; address: string; role: "master" | "slave" }
  | { ok: false; reason: "SourceNotFound" | "SourceNotReady"; message: string };

/** The master among a StatefulSet's pods (sorted by ordinal): the one labelled replicator.dev/role=master, else ordinal 0. */
export function masterOf<P extends PodLike>(members: P[]): P | undefined {
  return members.find((p) => p.metadata.labels?.[ROLE_LABEL] === "master") ?? members.find((p) => ordinalOf(p.metadata.name) === 0) ?? members[0];
}

/** The master's pod name of a StatefulSet, ready or not (a master blocked in an init container still is the master). */
export function masterPodName(sts: string, pods: PodLike[]): string | undefined {
  const members = pods
    .filter((p) => p.metadata.ownerReferences?.some((o) => o.kind === "StatefulSet" && o.name === sts) && !p.metadata.deletionTimestamp)
    .sort((a, b) => ordinalOf(a.metadata.name) - ordinalOf(b.metadata.name));
  return masterOf(members)?.metadata.name;
}

/**
 * Pick the pod a ServerRef names. For a StatefulSet the master is the pod
 * labelled replicator.dev/role=master, else ordinal 0; a slave is any other
 * ready pod (the highest ordinal first, the one least likely to be promoted).
 */
export function selectServerPod(ref: ServerRef, pods: PodLike[]): ServerSelection {
  if (ref.pod) {
    const p = pods.find((x) => x.metadata.name === ref.pod);
    if (!p) return { ok: false, reason: "SourceNotFound", message: `pod ${ref.pod} not found` };
    if (!p.status?.podIP || !isContainersReady(p)) return { ok: false, reason: "SourceNotReady", message: `pod ${ref.pod} is not ready` };
    const role = p.metadata.labels?.[ROLE_LABEL] === "slave" || (p.metadata.labels?.[ROLE_LABEL] === undefined && ordinalOf(p.metadata.name) > 0) ? "slave" : "master";
    return { ok: true, pod: p.metadata.name, address: p.status.podIP, role };
  }
  const sts = ref.statefulSet ?? "";
  const members = pods
    .filter((p) => p.metadata.ownerReferences?.some((o) => o.kind === "StatefulSet" && o.name === sts) && !p.metadata.deletionTimestamp)
    .sort((a, b) => ordinalOf(a.metadata.name) - ordinalOf(b.metadata.name));
  if (members.length === 0) return { ok: false, reason: "SourceNotFound", message: `StatefulSet ${sts} has no pods` };
  const master = masterOf(members);
  if (ref.role === "master") {
    if (!master?.status?.podIP || !isContainersReady(master)) {
      return { ok: false, reason: "SourceNotReady", message: `master ${master?.metadata.name ?? "?"} of StatefulSet ${sts} is not ready` };
    }
    return { ok: true, pod: master.metadata.name, address: master.status.podIP, role: "master" };
  }
  const slaves = members.filter((p) => p !== master && p.status?.podIP && isPodReady(p)).reverse();
  const s = slaves[0];
  if (!s?.status?.podIP) return { ok: false, reason: "SourceNotReady", message: `StatefulSet ${sts} has no ready slave` };
  return { ok: true, pod: s.metadata.name, address: s.status.podIP, role: "slave" };
}

/** All containers ready (readiness gates aside: a slave being provisioned is still a server). */
export function isContainersReady(p: PodLike): boolean {
  const cs = p.status?.containerStatuses ?? [];
  return p.status?.phase === "Running" && cs.length > 0 && cs.every((c) => c.ready === true);
}

export type JobState =
  | { state: "running" }
  | { state: "succeeded" }
  | { state: "failed"; reason: string; message: string };

export function jobState(job: JobLike): JobState {
  const cond = (t: string) => job.status?.conditions?.find((c) => c.type === t && c.status === "True");
  if (cond("Complete") || (job.status?.succeeded ?? 0) > 0) return { state: "succeeded" };
  const f = cond("Failed");
  if (f) return { state: "failed", reason: f.reason ?? "JobFailed", message: f.message ?? "the Job failed" };
  return { state: "running" };
}

export interface AgentResult {
  ok: boolean;
  reason?: string;
  error?: string;
  name?: string;
  size?: number;
  sha256?: string;
  method?: string;
  role?: string;
  replication?: { role?: string; gtid?: string; file?: string; position?: number };
  startedAt?: string;
  finishedAt?: string;
  replicating?: boolean;
  secondsBehindMaster?: number | null;
  [k: string]: unknown;
}

/** The newest agent result among a Job's pods (their termination messages). */
export function agentResult(pods: PodLike[]): AgentResult | undefined {
  let best: { at: string; r: AgentResult } | undefined;
  for (const p of pods) {
    for (const c of p.status?.containerStatuses ?? []) {
      const t = c.state?.terminated;
      if (!t?.message) continue;
      let r: AgentResult;
      try {
        r = JSON.parse(t.message) as AgentResult;
      } catch {
        r = { ok: false, reason: "PluginFailed", error: lastLine(t.message) };
      }
      const at = t.finishedAt ?? "";
      if (!best || at >= best.at) best = { at, r };
    }
  }
  return best?.r;
}

function lastLine(s: string): string {
  return s.trim().split("\n").filter(Boolean).pop()?.slice(0, 500) ?? s;
}


/** Pure: a pod's stable DNS name under its StatefulSet's governing Service, or its IP. */
export function stableAddress(mode: "dns" | "podIP", pod: string, namespace: string, serviceName: string | undefined, podIP: string): string {
  return mode === "dns" && serviceName ? `${pod}.${serviceName}.${namespace}.svc` : podIP;
}

/** The port a MariaDB server listens on when nothing says otherwise. */
export const DEFAULT_SERVER_PORT = 3306;
export const PORT_ANNOTATION = "replicator.dev/port";

/**
 * The one place a server's port is read from, for every operation the
 * operator runs against a pod it did not get a ServerRef for (provisioning,
 * offline/online): the pod's `replicator.dev/port` annotation, else its
 * StatefulSet's, else the port of its container port named mysql or mariadb,
 * else 3306. An annotation that is not a port is an error, never 3306.
 */
export function serverPortOf(
  pod: { metadata: { annotations?: Record<string, string> }; spec?: { containers?: { ports?: { name?: string; containerPort?: number }[] }[] } } | undefined,
  sts: { metadata: { annotations?: Record<string, string> } } | undefined,
): { port: number } | { error: string } {
  const raw = pod?.metadata.annotations?.[PORT_ANNOTATION] ?? sts?.metadata.annotations?.[PORT_ANNOTATION];
  if (raw !== undefined) {
    const port = Number(raw);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return { error: `annotation ${PORT_ANNOTATION}: invalid port "${raw}"` };
    return { port };
  }
  for (const c of pod?.spec?.containers ?? []) {
    const named = c.ports?.find((p) => p.name === "mysql" || p.name === "mariadb");
    if (named?.containerPort) return { port: named.containerPort };
  }
  return { port: DEFAULT_SERVER_PORT };
}
