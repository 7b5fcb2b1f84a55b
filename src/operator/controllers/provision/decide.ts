// Self-provisioning slaves, the pure rules. A StatefulSet annotated
// `replicator.dev/provision: latest` (or a backup name) gets every slave
// whose data volume carries no `replicator.dev/provisioned` marker restored
// from a stored backup, pointed at the master, and only then marked Ready
// through the readiness gate `replicator.dev/provisioned`. The marker on the
// PVC is the recovery.conf of Kubernetes: once written, the volume is never
// provisioned again (not after a pod restart, an operator restart, or a
// scale down and up that keeps the PVC).
import type { RestoreStatus } from "../../../api/v1alpha1.js";
import { serverPortOf } from "../../observe.js";

export const PROVISION_ANNOTATION = "replicator.dev/provision";
export const PROVISIONED_ANNOTATION = "replicator.dev/provisioned";
export const PROVISIONED_AT_ANNOTATION = "replicator.dev/provisioned-at";
export const GATE_CONDITION = "replicator.dev/provisioned";
/**
 * The operator's decision for a pod whose init container restores physical
 * backups (`replicator provision`), read through a downward-API volume:
 * JSON of a ProvisionPlanDoc (src/agent/provision.ts).
 */
export const PLAN_ANNOTATION = "replicator.dev/provision-plan";

export interface ProvisionSettings {
  /** "latest" or a backup name. */
  backup: string;
  repository: string;
  cluster: string;
  credentialsSecret: string;
  replicationSecret: string;
  dataVolume: string;
  port: number;
}

/** Pure: read a StatefulSet's provisioning annotations. */
export function provisionSettings(
  sts: { metadata: { name: string; annotations?: Record<string, string> }; spec?: { volumeClaimTemplates?: { metadata?: { name?: string } }[] } },
): ProvisionSettings | { error: string } | undefined {
  const a = sts.metadata.annotations ?? {};
  const backup = a[PROVISION_ANNOTATION];
  if (backup === undefined) return undefined;
  const dataVolume = a["replicator.dev/data-volume"] ?? sts.spec?.volumeClaimTemplates?.[0]?.metadata?.name;
  if (!dataVolume) return { error: `StatefulSet ${sts.metadata.name} has no volumeClaimTemplates: a provisioned slave needs a data volume to mark` };
  const p = serverPortOf(undefined, sts);
  if ("error" in p) return { error: p.error };
  const port = p.port;
  return {
    backup: backup.trim() || "latest",
    repository: a["replicator.dev/repository"] ?? "default",
    cluster: a["replicator.dev/cluster"] ?? sts.metadata.name,
    credentialsSecret: a["replicator.dev/credentials-secret"] ?? `${sts.metadata.name}-credentials`,
    replicationSecret: a["replicator.dev/replication-secret"] ?? `${sts.metadata.name}-replication`,
    dataVolume,
    port,
  };
}

export type SeedChoice =
  | { ok: true; backup: string; position: string; kind: "logical" | "physical" | "snapshot"; bridge?: SeedBridgeNote | undefined }
  | {
      ok: false;
      reason: "NoBackup" | "BinaryLoggingOff" | "BinlogsPurged" | "BridgeNeedsServer" | "MasterNotReady" | "StorageUnreachable" | "StorageError" | "NeedsInitContainer" | "SecretInvalid";
      message: string;
    };

/** The master has purged binlogs a backup needs, and the binlog archive bridges them: the restore replays these first. */
export interface SeedBridgeNote {
  binlogs: string[];
  /** The GTID state after the bridge: where replication from the master resumes. */
  through: string;
}

/** One stored backup, newest first, with what the master (and, when it has purged binlogs, the archive) says about it. */
export interface SeedCandidate {
  backup: string;
  position: string;
  kind: "logical" | "physical" | "snapshot";
  serve: { ok: boolean; reason?: string | undefined };
  /** Only when the master has purged binlogs the backup's GTID position needs: can the archive bridge them? */
  bridge?: { ok: true; binlogs: string[]; through: string; where: string } | { ok: false; message: string } | undefined;
}

/**
 * Pure: a candidate seeds a slave, or undefined. The archive's bridge is
 * replayed into a server: the running one after a logical load, or, for a
 * physical backup, a temporary server on the restored data directory in the
 * init container (`replicator provision` plans the same bridge). A volume
 * snapshot has neither.
 */
export function seedFrom(c: SeedCandidate): SeedChoice | undefined {
  if (c.serve.ok) return { ok: true, backup: c.backup, position: c.position, kind: c.kind };
  if (c.bridge?.ok && c.kind !== "snapshot") return { ok: true, backup: c.backup, position: c.position, kind: c.kind, bridge: { binlogs: c.bridge.binlogs, through: c.bridge.through } };
  return undefined;
}

/**
 * Pure: the newest candidate that can seed a slave (the master serves its
 * position, or the binlog archive bridges what the master purged), or why
 * none can, from the newest one's verdict: BinlogsPurged names the missing
 * range when neither the master nor the archive holds it.
 */
export function chooseSeed(candidates: SeedCandidate[]): SeedChoice {
  for (const c of candidates) {
    const ok = seedFrom(c);
    if (ok) return ok;
  }
  const newest = candidates[0];
  if (!newest) return { ok: false, reason: "NoBackup", message: "no stored backup has a replication position" };
  if (newest.bridge?.ok) {
    return {
      ok: false,
      reason: "BridgeNeedsServer",
      message:
        `no stored backup can seed a slave: the master has purged binlogs the newest, ${newest.backup}, needs; the binlog archive ${newest.bridge.where} holds them (${newest.bridge.binlogs.join(", ")}), ` +
        `but ${newest.backup} is a ${newest.kind} backup, which has no server to replay them into; take a logical or physical backup, or a new backup`,
    };
  }
  // The bridge's line names the backup and the missing range.
  if (newest.bridge) return { ok: false, reason: "BinlogsPurged", message: `no stored backup can seed a slave: ${newest.bridge.message}` };
  return { ok: false, reason: "BinlogsPurged", message: `no stored backup can seed a slave: the newest, ${newest.backup}: ${newest.serve.reason ?? ""}` };
}

/** What the pod's own server says about replication, read before a logical backup is loaded into it. */
export type TargetReplication = { configured: false } | { configured: true; master: string; io: boolean; sql: boolean } | { error: string };

export interface ProvisionObserved {
  podReady: boolean;
  isMaster: boolean;
  pvc: { name: string; uid: string; annotations: Record<string, string> } | undefined;
  restore: { name: string; status: RestoreStatus | undefined } | undefined;
  /** The gate condition's status on the pod now. */
  gate: "True" | "False" | undefined;
  /** Only computed when a restore must be started. */
  seed: SeedChoice | undefined;
  /** The pod mounts the plan annotation for a `replicator provision` init container. */
  takesPlan?: boolean;
  /** The plan annotation now on the pod: restore a backup in the init container, or nothing to do there. */
  plan?: { action: "restore"; backup: string } | { action: "none" } | undefined;
  /** The provision init container's result (termination message), once it has run. */
  init?: { ok: boolean; action?: string | undefined; error?: string | undefined } | undefined;
  /** Only computed after a physical restore, once the server runs: is it replicating? */
  replicating?: { ok: boolean; message: string } | undefined;
  /** Only computed before a restore is started: is the pod's server already a slave? */
  target?: TargetReplication | undefined;
}

export type ProvisionPlan =
  | { kind: "wait"; reason: string; message: string; requeueMs: number; gate: "False" | "keep" }
  | { kind: "needSeed" }
  | { kind: "markMaster" }
  | { kind: "openGate"; message: string }
  | { kind: "createRestore"; backup: string; position: string; bridge?: SeedBridgeNote }
  | { kind: "markProvisioned"; backup: string; message: string }
  | { kind: "retry"; reason: string; message: string }
  /** Write the plan annotation the init container waits for. */
  | { kind: "setPlan"; plan: { action: "restore"; backup: string; position: string } | { action: "none"; reason: string }; then?: "markMaster" }
  | { kind: "needReplicationCheck" }
  | { kind: "needTargetCheck" };

export function decideProvision(o: ProvisionObserved): ProvisionPlan {
  if (!o.pvc) return { kind: "wait", reason: "VolumeMissing", message: "the pod's data volume claim does not exist yet", requeueMs: 2_000, gate: "False" };
  const marker = o.pvc.annotations[PROVISIONED_ANNOTATION];
  // A pod with the init container must never be left waiting for a plan it will not get.
  const needsNonePlan = o.takesPlan === true && o.plan === undefined;
  if (marker) {
    if (needsNonePlan) return { kind: "setPlan", plan: { action: "none", reason: `volume ${o.pvc.name} was provisioned from ${marker}` } };
    // Consumed: never act again on this volume.
    return o.gate === "True" ? { kind: "wait", reason: "Provisioned", message: "provisioned", requeueMs: 0, gate: "keep" } : { kind: "openGate", message: `volume ${o.pvc.name} was provisioned from ${marker}` };
  }
  if (o.isMaster) return needsNonePlan ? { kind: "setPlan", plan: { action: "none", reason: "the master" }, then: "markMaster" } : { kind: "markMaster" };
  if (o.takesPlan && o.plan?.action === "restore") return decidePhysical(o, o.plan.backup);
  if (o.takesPlan && o.plan === undefined) {
    // The init container blocks the server until it has a plan: decide now, without waiting for the server.
    if (!o.seed) return { kind: "needSeed" };
    if (!o.seed.ok) return { kind: "wait", reason: o.seed.reason, message: o.seed.message, requeueMs: 15_000, gate: "False" };
    if (o.seed.kind === "physical") return { kind: "setPlan", plan: { action: "restore", backup: o.seed.backup, position: o.seed.position } };
    return { kind: "setPlan", plan: { action: "none", reason: `${o.seed.backup} is a logical backup: it is loaded once the server runs` } };
  }
  if (o.restore) {
    const s = o.restore.status;
    if (s?.phase === "Completed") {
      if (!s.replicating) return { kind: "retry", reason: "NotReplicating", message: `restore ${o.restore.name} completed but replication did not start` };
      return { kind: "markProvisioned", backup: s.backupName ?? "unknown", message: `restored ${s.backupName ?? ""} at ${s.position ?? "-"}; replicating` };
    }
    if (s?.phase === "Failed") {
      // Data in the server is not a fault a retry can clear: say so once and wait for a human.
      if (s.conditions?.find((c) => c.type === "Ready")?.reason === "TargetNotEmpty") {
        return {
          kind: "wait",
          reason: "TargetNotEmpty",
          message: `restore ${o.restore.name} found data in the pod's server (${s.message ?? ""}): a slave is provisioned only into an empty server. Delete the pod and PVC ${o.pvc.name} to provision it afresh, or annotate the PVC ${PROVISIONED_ANNOTATION}=manual to keep its data as it is`,
          requeueMs: 30_000,
          gate: "False",
        };
      }
      return { kind: "retry", reason: "ProvisionFailed", message: `restore ${o.restore.name} failed: ${s.message ?? "unknown error"}` };
    }
    return { kind: "wait", reason: "Provisioning", message: `restoring into the pod (${o.restore.name}: ${s?.phase ?? "Pending"})`, requeueMs: 5_000, gate: "False" };
  }
  if (!o.podReady) return { kind: "wait", reason: "ServerNotReady", message: "waiting for the pod's database server to start", requeueMs: 2_000, gate: "False" };
  if (!o.seed) return { kind: "needSeed" };
  if (!o.seed.ok) return { kind: "wait", reason: o.seed.reason, message: o.seed.message, requeueMs: 15_000, gate: "False" };
  if (o.seed.kind !== "logical") {
    return {
      kind: "wait",
      reason: "NeedsInitContainer",
      message: `${o.seed.backup} is a ${o.seed.kind} backup: it is restored before the server starts, by the replicator provision init container; add it to the StatefulSet (docs/provisioning.md) or take a logical backup`,
      requeueMs: 30_000,
      gate: "False",
    };
  }
  // A server that already replicates (an init script ran CHANGE MASTER before the operator acted) is never loaded over.
  if (!o.target) return { kind: "needTargetCheck" };
  if ("error" in o.target) return { kind: "wait", reason: "ServerUnreachable", message: `cannot read the pod's replication status before restoring: ${o.target.error}`, requeueMs: 15_000, gate: "False" };
  if (o.target.configured) return alreadyReplicating(o.target, o.pvc.name);
  return { kind: "createRestore", backup: o.seed.backup, position: o.seed.position, ...(o.seed.bridge ? { bridge: o.seed.bridge } : {}) };
}

function alreadyReplicating(t: { master: string; io: boolean; sql: boolean }, pvc: string): ProvisionPlan {
  return {
    kind: "wait",
    reason: "AlreadyReplicating",
    message:
      `the server is already a slave of ${t.master} (IO thread ${t.io ? "running" : "stopped"}, SQL thread ${t.sql ? "running" : "stopped"}), configured before the operator acted (an init script or a manual CHANGE MASTER), so no backup is loaded into it. ` +
      `Remove CHANGE MASTER from the pod's init scripts (the operator points each new slave at the master at its backup's position), then delete the pod and PVC ${pvc} to provision it; ` +
      `or keep this slave as it is: kubectl annotate pvc ${pvc} ${PROVISIONED_ANNOTATION}=manual`,
    requeueMs: 30_000,
    gate: "False",
  };
}

/** A physical backup restored by the pod's init container: follow it until the server replicates. */
function decidePhysical(o: ProvisionObserved, backup: string): ProvisionPlan {
  if (o.init && !o.init.ok) {
    return { kind: "wait", reason: "ProvisionFailed", message: `the provision init container failed: ${o.init.error ?? "unknown error"}; it is retried and redoes the restore`, requeueMs: 10_000, gate: "False" };
  }
  if (!o.init) return { kind: "wait", reason: "Provisioning", message: `restoring ${backup} in the pod's init container`, requeueMs: 5_000, gate: "False" };
  if (o.init.action !== "restored") {
    return {
      kind: "wait",
      reason: "VolumeNotEmpty",
      message: `the init container did not restore ${backup}: the data directory already held data but the volume has no ${PROVISIONED_ANNOTATION} marker; delete the PVC to provision it, or annotate it ${PROVISIONED_ANNOTATION}=manual`,
      requeueMs: 30_000,
      gate: "False",
    };
  }
  if (!o.podReady) return { kind: "wait", reason: "ServerNotReady", message: `restored ${backup}; waiting for the server to start`, requeueMs: 2_000, gate: "False" };
  if (!o.replicating) return { kind: "needReplicationCheck" };
  if (!o.replicating.ok) return { kind: "wait", reason: "NotReplicating", message: `restored ${backup}, but ${o.replicating.message}`, requeueMs: 5_000, gate: "False" };
  return { kind: "markProvisioned", backup, message: `restored ${backup} before the server started; replicating` };
}
