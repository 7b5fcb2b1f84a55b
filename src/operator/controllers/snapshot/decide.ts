// The volumesnapshot method's rules, pure: where a cloned server resumes
// replication, which spare volume a StatefulSet keeps ready for its next
// slave, and what to do for a pod whose volume is a clone.
import { parseMariaGtid } from "../../../db/replication.js";
import type { ReplicationPosition } from "../../../storage/catalog.js";

// ------------------------------------------------------------ GTID positions

/** The per-domain maximum of MariaDB GTID positions ("D-S-N,..."); empty ones are ignored. */
export function maxGtid(...positions: (string | undefined)[]): string {
  const best = new Map<number, { server: number; seq: bigint }>();
  for (const p of positions) {
    if (!p?.trim()) continue;
    for (const [domain, g] of parseMariaGtid(p)) {
      const cur = best.get(domain);
      if (!cur || g.seq > cur.seq) best.set(domain, g);
    }
  }
  return [...best.entries()]
    .sort(([a], [b]) => a - b)
    .map(([d, g]) => `${d}-${g.server}-${g.seq}`)
    .join(",");
}

/** The domains in which `have` is behind `want`, described; empty when `have` covers `want`. */
export function gtidBehind(have: string, want: string): string[] {
  const h = parseMariaGtid(have);
  const out: string[] = [];
  for (const [domain, w] of parseMariaGtid(want)) {
    const g = h.get(domain);
    if (!g || g.seq < w.seq) out.push(`domain ${domain}: ${g ? g.seq : "none"} < ${w.seq}`);
  }
  return out;
}

/**
 * Where a server running on a cloned volume resumes replication. The clone
 * holds the source's data at the snapshot's point in time, and the source's
 * GTID state with it: its binlog state (a master's own position) and, for a
 * slave's clone, mysql.gtid_slave_pos (transactional, so consistent with the
 * data). The recorded position is where the source was when the snapshot was
 * cut; the clone must not be behind it. Taking the per-domain maximum of all
 * three makes this safe to redo: once the clone has replicated further (an
 * operator restarted before it wrote the PVC marker), it resumes from where
 * it is instead of applying events twice.
 */
export function seedPosition(
  recorded: ReplicationPosition,
  clone: { gtidBinlogPos: string; gtidSlavePos: string },
): { ok: true; position: ReplicationPosition; resumed: boolean } | { ok: false; message: string } {
  if (!recorded.gtid) {
    // No GTIDs: only the recorded binlog coordinates (not redo-safe, see docs/volumesnapshot.md).
    if (!recorded.file) return { ok: false, message: "the snapshot recorded no replication position; it cannot seed a slave" };
    return { ok: true, position: recorded, resumed: false };
  }
  const cloned = maxGtid(clone.gtidBinlogPos, clone.gtidSlavePos);
  const behind = gtidBehind(cloned, recorded.gtid);
  if (behind.length > 0) {
    return {
      ok: false,
      message: `the cloned volume is behind the position its snapshot recorded (${behind.join("; ")}): it is not a clone of that snapshot, or the snapshot is not crash-consistent`,
    };
  }
  const gtid = maxGtid(recorded.gtid, cloned);
  return { ok: true, position: { ...recorded, gtid }, resumed: gtid !== maxGtid(recorded.gtid) };
}

// ------------------------------------------------------------ the spare volume

export interface SpareObserved {
  /** The StatefulSet's spec.replicas: the next slave is ordinal `replicas`. */
  replicas: number;
  /** The spare claim `<template>-<sts>-<replicas>`. */
  claimName: string;
  /** That claim, if it exists. */
  pvc: { annotations: Record<string, string>; deleting: boolean } | undefined;
  /** A pod of that ordinal exists (the claim is in use or about to be). */
  podExists: boolean;
  /** The newest snapshot backup that can seed a slave now, if any. */
  candidate: { backup: string } | undefined;
  seededFromAnnotation: string;
  provisionedAnnotation: string;
}

export type SparePlan =
  | { kind: "none"; why: string }
  | { kind: "create"; backup: string }
  /**
   * An unused spare cloned from an older snapshot. The operator deletes no
   * volume: it checks that the spare can still seed a slave (the master
   * still has the binlogs after its position) and says so if not.
   */
  | { kind: "stale"; from: string; to: string }
  | { kind: "wait"; why: string };

/**
 * Keep the next ordinal's data claim pre-created from the newest usable
 * snapshot, so that a scale-up finds its volume already cloned: the
 * StatefulSet controller uses an existing claim of the right name as it is.
 */
export function decideSpare(o: SpareObserved): SparePlan {
  if (o.replicas < 1) return { kind: "none", why: "no master yet: ordinal 0 is never a clone" };
  if (o.podExists) return { kind: "none", why: `a pod already uses ${o.claimName}` };
  if (o.pvc?.deleting) return { kind: "wait", why: `${o.claimName} is being deleted` };
  if (o.pvc) {
    const seeded = o.pvc.annotations[o.seededFromAnnotation];
    // A volume that was used (marked), or not made by us: it holds data; never touch it.
    if (o.pvc.annotations[o.provisionedAnnotation] || !seeded) return { kind: "none", why: `${o.claimName} exists and is not a spare` };
    if (o.candidate && o.candidate.backup > seeded) return { kind: "stale", from: seeded, to: o.candidate.backup };
    return { kind: "none", why: `${o.claimName} is the spare, from ${seeded}` };
  }
  if (!o.candidate) return { kind: "none", why: "no snapshot backup can seed a slave" };
  return { kind: "create", backup: o.candidate.backup };
}

// ------------------------------------------------------------ a pod on a cloned volume

export interface SeededObserved {
  claimName: string;
  backup: string;
  recorded: ReplicationPosition | undefined;
  podReady: boolean;
  /** The result of configuring replication, once tried. */
  configured?: { ok: true; position: string; resumed: boolean } | { ok: false; message: string } | undefined;
}

export type SeededPlan =
  | { kind: "wait"; reason: string; message: string; requeueMs: number }
  | { kind: "configure" }
  | { kind: "markProvisioned"; message: string }
  | { kind: "retry"; reason: string; message: string };

export function decideSeeded(o: SeededObserved): SeededPlan {
  if (!o.recorded) {
    return { kind: "retry", reason: "ProvisionFailed", message: `volume ${o.claimName} was cloned from ${o.backup} but records no replication position` };
  }
  if (!o.podReady) {
    return { kind: "wait", reason: "Provisioning", message: `volume ${o.claimName} is a clone of snapshot backup ${o.backup}; waiting for the server to start on it`, requeueMs: 2_000 };
  }
  if (!o.configured) return { kind: "configure" };
  if (!o.configured.ok) return { kind: "retry", reason: "ProvisionFailed", message: o.configured.message };
  return {
    kind: "markProvisioned",
    message: `cloned from snapshot backup ${o.backup}; replicating from ${o.configured.position}${o.configured.resumed ? " (where the clone had already got to)" : ""}`,
  };
}
