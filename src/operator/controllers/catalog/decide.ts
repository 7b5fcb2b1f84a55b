// The catalog sync's rules, pure: given what storage listed (or the fault that
// stopped the listing) and the ReplicatorBackup resources that mirror it, what
// is created, what is deleted, and what is flagged unusable.
//
// A fault is never a verdict: when any listing failed nothing is created or
// deleted; a backup whose manifest was read and found corrupt (or of a newer
// format) keeps its resource, flagged; only a backup absent from a complete,
// successful listing loses its Completed resource.

/** One cluster's listing as Repository.list() returned it. */
export interface ClusterListing {
  cluster: string;
  backups: { name: string; finishedAt: string }[];
  /** Read, and found unusable: never a storage fault (Repository.list() throws those). */
  corrupt: { name: string; reason?: string; error: string }[];
}

export type CatalogObserved =
  | { ok: true; clusters: ClusterListing[] }
  /** The listing failed (the cluster names, or any one cluster's backups): the reason and message of the fault. */
  | { ok: false; reason: string; message: string };

/** A ReplicatorBackup of this repository, as the sync reads it. */
export interface MirrorResource {
  name: string;
  cluster: string | undefined;
  backupName: string | undefined;
  phase: string | undefined;
  /** The reason of its `Usable` condition when that is False (set by an earlier sync). */
  unusableReason: string | undefined;
}

export interface Unusable {
  cluster: string;
  backup: string;
  /** CorruptManifest or UnknownFormat (the storage layer's reason). */
  reason: string;
  message: string;
  /** The resource that mirrors it, when there is one (it is kept, and flagged). */
  resource: string | undefined;
}

export type CatalogPlan =
  | { kind: "fault"; reason: string; message: string }
  | {
      kind: "sync";
      /** Backups to mirror as new resources (old enough, no resource yet). */
      create: { cluster: string; backup: string }[];
      /** Completed resources whose backup is really gone. */
      delete: { resource: string; cluster: string; backup: string }[];
      /** Backups that are in storage but cannot be used: their resources stay, flagged. */
      unusable: Unusable[];
      /** Resources flagged unusable before whose backup now reads well. */
      usableAgain: string[];
      /** Readable, complete backups in storage. */
      total: number;
    };

/** The condition reason of a listing failure: the storage layer's own (StorageUnreachable/StorageError) or StorageError. */
export function faultReason(err: unknown): "StorageUnreachable" | "StorageError" {
  const r = (err as { reason?: unknown } | undefined)?.reason;
  return r === "StorageUnreachable" ? r : "StorageError";
}

export function decideCatalogSync(o: CatalogObserved, existing: MirrorResource[], now: Date, importGraceMs: number): CatalogPlan {
  if (!o.ok) return { kind: "fault", reason: o.reason, message: o.message };
  const create: { cluster: string; backup: string }[] = [];
  const del: { resource: string; cluster: string; backup: string }[] = [];
  const unusable: Unusable[] = [];
  const usableAgain: string[] = [];
  let total = 0;
  for (const l of o.clusters) {
    total += l.backups.length;
    const mine = existing.filter((r) => r.cluster === l.cluster && r.backupName);
    const byBackup = new Map(mine.map((r) => [r.backupName ?? "", r]));
    const readable = new Set(l.backups.map((b) => b.name));
    const unreadable = new Set(l.corrupt.map((c) => c.name));
    for (const b of l.backups) {
      const r = byBackup.get(b.name);
      if (r) {
        if (r.unusableReason) usableAgain.push(r.name);
        continue;
      }
      // A backup this operator just made may be in storage before its resource records it.
      const finished = Date.parse(b.finishedAt);
      if (Number.isFinite(finished) && now.getTime() - finished < importGraceMs) continue;
      create.push({ cluster: l.cluster, backup: b.name });
    }
    for (const c of l.corrupt) {
      const reason = c.reason ?? "CorruptManifest";
      unusable.push({ cluster: l.cluster, backup: c.name, reason, message: `backup ${c.name} cannot be used: ${c.error}`, resource: byBackup.get(c.name)?.name });
    }
    for (const r of mine) {
      if (r.phase !== "Completed" || !r.backupName) continue;
      // Absent, or incomplete (no manifest: being deleted, or never finished). A corrupt one stays.
      if (!readable.has(r.backupName) && !unreadable.has(r.backupName)) del.push({ resource: r.name, cluster: l.cluster, backup: r.backupName });
    }
  }
  return { kind: "sync", create, delete: del, unusable, usableAgain, total };
}

/** The Ready condition message of a successful sync. */
export function syncMessage(plan: Extract<CatalogPlan, { kind: "sync" }>): string {
  const base = `${plan.total} backup(s) in storage`;
  if (plan.unusable.length === 0) return base;
  const shown = plan.unusable.slice(0, 3).map((u) => `${u.cluster}/${u.backup} (${u.reason})`);
  return `${base}; ${plan.unusable.length} unusable: ${shown.join(", ")}${plan.unusable.length > 3 ? ", ..." : ""}`;
}
