// Retention of the binlog archive: archived binlogs older than the position
// of the oldest kept backup go with it (`replicator prune`).
//
// The rule (pure, selectArchiveRetention): an archived binlog of a server is
// deletable when every one of its transactions is already in EVERY remaining
// backup that has a GTID position: its end state is at or before each
// backup's position, compared per domain by sequence number (a domain the
// backup does not know keeps the file). Only a prefix of each server's chain
// of complete files goes (the first file some backup still needs stops the
// walk), never the newest complete file (the archiver resumes after it) and
// never a partial object (the binlog the master still writes). With no
// remaining backup that has a GTID position, nothing goes; an unusable backup
// (corrupt or newer-format manifest) no newer than the oldest such backup
// holds the archive back, since its position cannot be read.
//
// Faults are not verdicts: the archive is read in full (every index) BEFORE
// prune deletes anything; a listing fault or an index that cannot be read or
// parsed throws, and prune deletes nothing. A running point-in-time restore
// holds a lease on its base backup until its replay is done
// (restore-until.ts), so that backup remains, and by the rule every binlog
// it replays is kept.
import { failed, isReplicatorError, ReplicatorError } from "../lib/errors.js";
import type { BackupEntry, UnusableEntry } from "../storage/catalog.js";
import { parseBackupName } from "../storage/catalog.js";
import { withRetries } from "../storage/object-store.js";
import type { Repository } from "../storage/repository.js";
import { archivedServers, readServerArchive, type ServerArchive } from "./archive.js";
import { formatGtidState, notAfter, parseGtidState, type GtidState } from "./gtid.js";
import { compareBinlogNames, INDEX_SUFFIX, parseBinlogName, PARTIAL_SUFFIX, serverPrefix, stateOf, type BinlogIndex } from "./layout.js";

/** A backup that bounds the archive: its name, time and GTID position. */
export interface KeptPosition {
  name: string;
  time: Date;
  position: GtidState;
}

export interface ArchiveRemoval {
  serverId: number;
  file: string;
  /** The objects that go, index first: `<file>.index.json`, `<file>`. */
  keys: string[];
  lastGtid: string | undefined;
  endState: string;
  lastEventTime: string | undefined;
}

export interface ArchiveRetentionPlan {
  /** The oldest remaining backup with a GTID position (what the archive must still reach back to). */
  oldest: { name: string; position: string } | undefined;
  remove: ArchiveRemoval[];
  /** Data objects without an index that sort before the first kept file of their server (a prune cut short). */
  leftovers: { serverId: number; key: string }[];
  /** Why nothing (more) goes, when something holds the archive back; one line each. */
  heldBack: string[];
}

/** The remaining backups that a replay could start from: those with a GTID position. */
export function keptPositions(remaining: BackupEntry[]): KeptPosition[] {
  return remaining
    .filter((b) => b.manifest.replication?.gtid !== undefined && b.manifest.replication.gtid.trim() !== "")
    .map((b) => ({ name: b.name, time: b.time, position: parseGtidState(b.manifest.replication?.gtid, `GTID position of ${b.name}`) }))
    .sort((a, b) => a.time.getTime() - b.time.getTime() || (a.name < b.name ? -1 : 1));
}

/** Pure: every transaction of `f` is in every kept backup. */
export function coveredByAll(f: BinlogIndex, kept: KeptPosition[]): boolean {
  const end = stateOf(f.endState);
  return kept.length > 0 && kept.every((k) => notAfter(end, k.position));
}

/**
 * Pure: which archived binlogs go, given the archives of every server and
 * the backups that remain after prune (and the unusable ones, which remain too).
 */
export function selectArchiveRetention(archives: ServerArchive[], remaining: BackupEntry[], unusable: UnusableEntry[], prefixOf: (serverId: number) => string): ArchiveRetentionPlan {
  const kept = keptPositions(remaining);
  const plan: ArchiveRetentionPlan = { oldest: undefined, remove: [], leftovers: [], heldBack: [] };
  const oldest = kept[0];
  if (!oldest) {
    if (archives.some((a) => a.complete.length > 0)) {
      plan.heldBack.push(
        remaining.length === 0 ? "no backup remains: the binlog archive is kept whole" : "no remaining backup has a GTID position: the binlog archive is kept whole",
      );
    }
    return plan;
  }
  plan.oldest = { name: oldest.name, position: formatGtidState(oldest.position) };
  const holding = unusable.filter((u) => {
    const t = parseBackupName(u.name)?.time;
    return t === undefined || t.getTime() <= oldest.time.getTime();
  });
  if (holding.length > 0) {
    plan.heldBack.push(
      `backup ${holding.map((u) => u.name).join(", ")} is unusable (${holding[0]?.reason ?? "?"}) and not newer than ${oldest.name}; its position cannot be read, so the binlog archive is kept whole until it is fixed or deleted`,
    );
    return plan;
  }
  for (const a of [...archives].sort((x, y) => x.serverId - y.serverId)) {
    const prefix = prefixOf(a.serverId);
    const chain = [...a.complete].sort((x, y) => compareBinlogNames(x.file, y.file));
    // The newest complete file stays: the archiver resumes after it.
    let i = 0;
    for (; i < chain.length - 1; i++) {
      const f = chain[i] as BinlogIndex;
      if (!coveredByAll(f, kept)) break;
      plan.remove.push({
        serverId: a.serverId,
        file: f.file,
        keys: [`${prefix}${f.object}${INDEX_SUFFIX}`, `${prefix}${f.object}`],
        lastGtid: f.lastGtid,
        endState: f.endState,
        lastEventTime: f.lastEventTime,
      });
    }
    const firstKept = chain[i];
    if (firstKept) {
      const base = parseBinlogName(firstKept.file)?.base;
      for (const name of a.unindexed) {
        if (name.endsWith(PARTIAL_SUFFIX)) continue;
        const p = parseBinlogName(name);
        if (p && p.base === base && compareBinlogNames(name, firstKept.file) < 0) plan.leftovers.push({ serverId: a.serverId, key: `${prefix}${name}` });
      }
    }
  }
  return plan;
}

/** Every server's archive, every index read: throws the fault (named) when any cannot be listed, read or parsed. */
export async function readWholeArchive(repo: Repository): Promise<ServerArchive[]> {
  try {
    const out: ServerArchive[] = [];
    for (const sid of await archivedServers(repo.store, repo.cluster)) out.push(await readServerArchive(repo.store, repo.cluster, sid));
    return out;
  } catch (err) {
    if (!isReplicatorError(err)) throw err;
    throw new ReplicatorError(err.kind, err.reason, `binlog archive retention: ${err.message}; nothing was deleted (no backup, no binlog)`, { cause: err, ...(err.detail !== undefined ? { detail: err.detail } : {}) });
  }
}

/** Delete what the plan names, index before data (a file without its index is no longer in the archive). */
export async function applyArchiveRetention(repo: Repository, plan: ArchiveRetentionPlan): Promise<ArchiveRemoval[]> {
  const done: ArchiveRemoval[] = [];
  for (const r of plan.remove) {
    try {
      for (const key of r.keys) await withRetries(() => repo.store.delete([key]));
    } catch (err) {
      const removed = done.length > 0 ? `; removed before the fault: ${done.map((d) => `${d.serverId}/${d.file}`).join(", ")}` : "";
      throw failed(
        isReplicatorError(err) ? err.reason : "StorageError",
        `binlog archive retention: deleting ${repo.where}/binlogs/${r.serverId}/${r.file} failed: ${(err as Error).message}${removed}`,
        { cause: err },
      );
    }
    done.push(r);
  }
  for (const l of plan.leftovers) await withRetries(() => repo.store.delete([l.key]));
  return done;
}


export interface ArchiveRetentionResult {
  plan: ArchiveRetentionPlan;
  /** What was deleted (or, in a dry run, would be). */
  deleted: ArchiveRemoval[];
}

/**
 * After `repo.prune`: the backups that remain now (a fresh listing, minus
 * `expired` for a dry run), then the binlogs of `archive` (read before the
 * prune) that none of them needs.
 */
export async function pruneArchive(repo: Repository, archive: ServerArchive[], expired: string[], dryRun: boolean): Promise<ArchiveRetentionResult> {
  const empty: ArchiveRetentionPlan = { oldest: undefined, remove: [], leftovers: [], heldBack: [] };
  if (archive.length === 0) return { plan: empty, deleted: [] };
  let listing;
  try {
    listing = await repo.list();
  } catch (err) {
    if (!isReplicatorError(err)) throw err;
    const gone = !dryRun && expired.length > 0 ? `backups deleted: ${expired.join(", ")}; ` : "";
    throw new ReplicatorError(err.kind, err.reason, `binlog archive retention: listing the remaining backups failed: ${err.message}; ${gone}no binlog was deleted`, { cause: err });
  }
  const gone = new Set(expired);
  const remaining = listing.backups.filter((b) => !gone.has(b.name));
  const plan = selectArchiveRetention(archive, remaining, listing.corrupt, (sid) => serverPrefix(repo.cluster, sid));
  if (dryRun) return { plan, deleted: plan.remove };
  return { plan, deleted: await applyArchiveRetention(repo, plan) };
}

/**
 * Retention of backups and of the binlog archive together, as `prune`,
 * `backup --retain` and the operator's retention run it: the whole archive is
 * read first (a fault there deletes nothing at all), then the backups are
 * pruned, then the binlogs that no remaining backup needs are trimmed.
 */
export async function pruneWithArchive(
  repo: Repository,
  opts: Parameters<Repository["prune"]>[0],
): Promise<{ plan: Awaited<ReturnType<Repository["prune"]>>; binlogs: ArchiveRetentionResult }> {
  const archive = await readWholeArchive(repo);
  const plan = await repo.prune(opts);
  const binlogs = await pruneArchive(repo, archive, plan.expire, opts.dryRun ?? false);
  return { plan, binlogs };
}
