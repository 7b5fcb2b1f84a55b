// Pure planning of a point-in-time restore: which archived binlogs form a
// continuous chain, where the target falls, which backup to start from, and
// the one-line errors for a gap, a target past the archive's end, or no
// backup before the target.
import { badInput } from "../lib/errors.js";
import type { BackupEntry } from "../storage/catalog.js";
import type { ServerArchive } from "./archive.js";
import { formatGtid, formatGtidState, includes, notAfter, parseGtidState, sameState, type Gtid, type GtidState } from "./gtid.js";
import { compareBinlogNames, nextBinlogName, parseBinlogName, stateOf, type BinlogIndex } from "./layout.js";

export type Target = { kind: "time"; time: Date } | { kind: "gtid"; gtid: Gtid };

export function describeTarget(t: Target): string {
  return t.kind === "time" ? t.time.toISOString() : `GTID ${formatGtid(t.gtid)}`;
}

/** The committed binlogs of one server in order, plus the partial object of the binlog after the last one. */
export function buildChain(a: ServerArchive): BinlogIndex[] {
  const chain = [...a.complete];
  const last = chain[chain.length - 1];
  const want = last ? nextBinlogName(last.file) : undefined;
  const partial = want ? a.partial.find((p) => p.file === want) : a.partial[a.partial.length - 1];
  if (partial) chain.push(partial);
  return chain;
}

/** Pure: the missing stretch between two neighbours of a chain, as one line, or undefined when b continues a. */
export function gapBetween(a: BinlogIndex, b: BinlogIndex, where: string): string | undefined {
  if (b.file === nextBinlogName(a.file) && sameState(stateOf(a.endState), stateOf(b.startState))) return undefined;
  const missing = b.file === nextBinlogName(a.file) ? "" : `${missingNames(a.file, b.file)}, `;
  return (
    `the binlog archive ${where} has a gap: ${missing}GTIDs after ${a.endState || "(none)"} up to ${b.startState || "(none)"} ` +
    `(${a.lastEventTime ?? "?"} .. ${b.firstEventTime ?? "?"}) are missing`
  );
}

function missingNames(after: string, before: string): string {
  const first = nextBinlogName(after);
  const pa = parseBinlogName(first);
  const pb = parseBinlogName(before);
  if (pa && pb && pb.n - 1 > pa.n) return `${first} .. ${pb.base}.${String(pb.n - 1).padStart(pb.width, "0")}`;
  return first;
}

/** The chain file in which the archive reaches `target` (index-level), or an error line. */
export function findStopFile(chain: BinlogIndex[], target: Target, where: string): number {
  const last = chain[chain.length - 1];
  const reach = last ? `the archive ${where} reaches ${last.lastEventTime ?? "?"} (GTID ${last.endState || "(none)"}, ${last.object})` : `the archive ${where} is empty`;
  if (target.kind === "gtid") {
    const g = target.gtid;
    const i = chain.findIndex((f) => !includes(stateOf(f.startState), g) && includes(stateOf(f.endState), g));
    if (i >= 0) return i;
    for (let k = 1; k < chain.length; k++) {
      const a = chain[k - 1] as BinlogIndex;
      const b = chain[k] as BinlogIndex;
      if (!includes(stateOf(a.endState), g) && includes(stateOf(b.startState), g)) {
        throw badInput("ArchiveGap", `cannot restore to GTID ${formatGtid(g)}: ${gapBetween(a, b, where) ?? "it is not archived"}`);
      }
    }
    if (chain[0] && includes(stateOf(chain[0].startState), g)) {
      throw badInput("ArchiveGap", `cannot restore to GTID ${formatGtid(g)}: the archive ${where} begins after it (at GTID ${chain[0].startState}, ${chain[0].file})`);
    }
    throw badInput("ArchiveBehind", `cannot restore to GTID ${formatGtid(g)}: ${reach}; run \`replicator binlog-archive --once\` or wait for the archiver's next flush`);
  }
  const t = target.time.getTime();
  const i = chain.findIndex((f) => f.lastEventTime !== undefined && Date.parse(f.lastEventTime) >= t);
  if (i < 0) {
    throw badInput("ArchiveBehind", `cannot restore to ${target.time.toISOString()}: ${reach}, nothing later; run \`replicator binlog-archive --once\` or wait for the archiver's next flush`);
  }
  return i;
}

export interface BackupChoice {
  backup: BackupEntry;
  position: GtidState;
}

/**
 * Pure: the newest backup whose GTID position is at or before `stopState`
 * (the state just before the target). Backups without a GTID position
 * cannot start a replay.
 */
export function selectBackupBefore(backups: BackupEntry[], stopState: GtidState, target: Target, where: string): BackupChoice {
  const withGtid = backups.filter((b) => b.manifest.replication?.gtid !== undefined && b.manifest.kind === "logical");
  const usable = withGtid
    .map((b) => ({ backup: b, position: parseGtidState(b.manifest.replication?.gtid, `GTID position of ${b.name}`) }))
    .filter((c) => notAfter(c.position, stopState))
    .sort((a, b) => a.backup.time.getTime() - b.backup.time.getTime());
  const best = usable[usable.length - 1];
  if (!best) {
    const why = backups.length === 0 ? "there is no backup" : withGtid.length === 0 ? "no logical backup has a GTID position" : `every logical backup with a GTID position is later than GTID ${formatGtidState(stopState) || "(none)"}`;
    throw badInput("NoBackup", `cannot restore to ${describeTarget(target)}: ${why} in ${where}; a point-in-time restore starts from a logical backup taken before the target`);
  }
  return best;
}

/** Pure: the chain file where replay from `position` starts (the first whose transactions the backup lacks), or chain.length when none. */
export function findStartFile(chain: BinlogIndex[], position: GtidState, stopFile: number, backup: string, where: string): number {
  const j = chain.findIndex((f) => !notAfter(stateOf(f.endState), position));
  const start = j < 0 ? chain.length : j;
  if (start > stopFile) return start;
  const first = chain[start] as BinlogIndex;
  if (!notAfter(stateOf(first.startState), position)) {
    const before = start > 0 ? (chain[start - 1] as BinlogIndex) : undefined;
    const detail = before ? gapBetween(before, first, where) : undefined;
    throw badInput(
      "ArchiveGap",
      detail
        ? `cannot replay from backup ${backup} (GTID ${formatGtidState(position) || "(none)"}): ${detail}`
        : `cannot replay from backup ${backup}: the archive ${where} begins at GTID ${first.startState} (${first.file}, ${first.firstEventTime ?? "?"}), after the backup's position ${formatGtidState(position) || "(none)"}; the transactions between are not archived`,
    );
  }
  for (let k = start + 1; k <= stopFile; k++) {
    const gap = gapBetween(chain[k - 1] as BinlogIndex, chain[k] as BinlogIndex, where);
    if (gap) throw badInput("ArchiveGap", `cannot restore from backup ${backup}: ${gap}, before the target; restore to a point before the gap`);
  }
  return start;
}

export function sortChain(files: BinlogIndex[]): BinlogIndex[] {
  return [...files].sort((a, b) => compareBinlogNames(a.file, b.file));
}
