// Pure planning of a point-in-time restore: which archived binlogs form a
// continuous chain, where the target falls, which backup to start from, and
// the one-line errors for a gap, a target past the archive's end, or no
// backup before the target.
import { badInput } from "../lib/errors.js";
import type { BackupEntry } from "../storage/catalog.js";
import type { ServerArchive } from "./archive.js";
import { formatGtid, formatGtidState, includes, notAfter, parseGtidState, sameState, type Gtid, type GtidState } from "./gtid.js";
import { compareBinlogNames, gtidOf, nextBinlogName, parseBinlogName, stateOf, type BinlogIndex } from "./layout.js";

export type Target = { kind: "time"; time: Date } | { kind: "gtid"; gtid: Gtid };

/** The base a point-in-time restore starts from: a logical backup (into --target) or a physical one (into --datadir). */
export type BaseKind = "logical" | "physical";

export function describeTarget(t: Target): string {
  return t.kind === "time" ? t.time.toISOString() : `GTID ${formatGtid(t.gtid)}`;
}

/**
 * Pure: the GTID state just before a file's first transaction. Its
 * GTID_LIST, except where that list lacks the domain of the file's first
 * GTID: a server seeded from a backup (gtid_slave_pos set, its own binlog
 * empty) writes an empty GTID_LIST into its first binlog although its first
 * transaction continues another server's history; then the file begins
 * after the sequence number before that GTID, not at nothing.
 */
export function startStateOf(f: BinlogIndex): GtidState {
  const s = stateOf(f.startState);
  const g = gtidOf(f.firstGtid);
  if (g && !s.has(g.domain) && g.seq > 1) s.set(g.domain, { ...g, seq: g.seq - 1 });
  return s;
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
    const i = chain.findIndex((f) => !includes(startStateOf(f), g) && includes(stateOf(f.endState), g));
    if (i >= 0) return i;
    for (let k = 1; k < chain.length; k++) {
      const a = chain[k - 1] as BinlogIndex;
      const b = chain[k] as BinlogIndex;
      if (!includes(stateOf(a.endState), g) && includes(stateOf(b.startState), g)) {
        throw badInput("ArchiveGap", `cannot restore to GTID ${formatGtid(g)}: ${gapBetween(a, b, where) ?? "it is not archived"}`);
      }
    }
    if (chain[0] && includes(startStateOf(chain[0]), g)) {
      throw badInput("ArchiveGap", `cannot restore to GTID ${formatGtid(g)}: the archive ${where} begins after it (at GTID ${formatGtidState(startStateOf(chain[0]))}, ${chain[0].file})`);
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
 * Pure: the newest backup of `kind` whose GTID position is at or before
 * `stopState` (the state just before the target). Backups without a GTID
 * position cannot start a replay.
 */
export function selectBackupBefore(backups: BackupEntry[], stopState: GtidState, target: Target, where: string, kind: BaseKind = "logical"): BackupChoice {
  const withGtid = backups.filter((b) => b.manifest.replication?.gtid !== undefined && b.manifest.kind === kind);
  const usable = withGtid
    .map((b) => ({ backup: b, position: parseGtidState(b.manifest.replication?.gtid, `GTID position of ${b.name}`) }))
    .filter((c) => notAfter(c.position, stopState))
    .sort((a, b) => a.backup.time.getTime() - b.backup.time.getTime());
  const best = usable[usable.length - 1];
  if (!best) {
    const why = backups.length === 0 ? "there is no backup" : withGtid.length === 0 ? `no ${kind} backup has a GTID position` : `every ${kind} backup with a GTID position is later than GTID ${formatGtidState(stopState) || "(none)"}`;
    const into = kind === "logical" ? "--target (a running server)" : "--datadir (a stopped server's data directory)";
    throw badInput("NoBackup", `cannot restore to ${describeTarget(target)}: ${why} in ${where}; a point-in-time restore into ${into} starts from a ${kind} backup taken before the target`);
  }
  return best;
}

/** Pure: the chain file where replay from `position` starts (the first whose transactions the backup lacks), or chain.length when none. */
export function findStartFile(chain: BinlogIndex[], position: GtidState, stopFile: number, backup: string, where: string): number {
  const j = chain.findIndex((f) => !notAfter(stateOf(f.endState), position));
  const start = j < 0 ? chain.length : j;
  if (start > stopFile) return start;
  const first = chain[start] as BinlogIndex;
  if (!notAfter(startStateOf(first), position)) {
    const before = start > 0 ? (chain[start - 1] as BinlogIndex) : undefined;
    const detail = before ? gapBetween(before, first, where) : undefined;
    throw badInput(
      "ArchiveGap",
      detail
        ? `cannot replay from backup ${backup} (GTID ${formatGtidState(position) || "(none)"}): ${detail}`
        : `cannot replay from backup ${backup}: the archive ${where} begins at GTID ${formatGtidState(startStateOf(first)) || "(none)"} (${first.file}, ${first.firstEventTime ?? "?"}), after the backup's position ${formatGtidState(position) || "(none)"}; the transactions between are not archived`,
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

/** One server's archive as a restore reads it: its chain (buildChain) and where it is, for messages. */
export interface Chain {
  serverId: number;
  where: string;
  files: BinlogIndex[];
}

/**
 * One stretch of a replay, within one server's chain: the files start..stop,
 * from the first transaction not in `from` up to the point where the state
 * equals `until` (the next chain's start), or, in the last leg (`until`
 * undefined), up to the target.
 */
export interface Leg {
  chain: Chain;
  from: GtidState;
  start: number;
  stop: number;
  until: GtidState | undefined;
}

/** Pure: the first file holding a transaction not in `x`, or -1. */
function firstAfter(files: BinlogIndex[], x: GtidState, from = 0): number {
  for (let i = from; i < files.length; i++) if (!notAfter(stateOf((files[i] as BinlogIndex).endState), x)) return i;
  return -1;
}

/** Pure: the last k ≥ i such that files i..k continue each other (same name sequence, end state = next start state). */
function contiguousEnd(files: BinlogIndex[], i: number, where: string): number {
  let k = i;
  while (k + 1 < files.length && gapBetween(files[k] as BinlogIndex, files[k + 1] as BinlogIndex, where) === undefined) k++;
  return k;
}

const stateText = (s: GtidState): string => formatGtidState(s) || "(none)";

/**
 * Pure: the replay from `position` (the backup's) to the target, over the
 * chains of one or more servers. One chain that covers the whole range is
 * taken when there is one (`stopFiles`: per server id, the file of its
 * chain that holds the target, for the chains that do). Otherwise, after a
 * switchover, chains are stitched: a leg of one chain runs up to the state
 * at which another chain begins (its first file's start state, reached in
 * this one without a gap), and that chain goes on from there; the replay
 * checks that the state is reached exactly. No route: with one chain, its
 * own gap line; with several, one line naming where the archives stop
 * connecting and what is missing.
 */
export function planRoute(chains: Chain[], position: GtidState, stopFiles: Map<number, number>, backup: string, target: Target): Leg[] {
  let single: Error | undefined;
  for (const c of chains) {
    const stop = stopFiles.get(c.serverId);
    if (stop === undefined) continue;
    try {
      const start = findStartFile(c.files, position, stop, backup, c.where);
      return start > stop ? [] : [{ chain: c, from: position, start, stop, until: undefined }];
    } catch (err) {
      if ((err as { reason?: string }).reason !== "ArchiveGap") throw err;
      single ??= err as Error;
    }
  }
  const reached: Reach[] = [];
  const legs = findRoute(chains, position, (c, s, e) => {
    const stop = stopFiles.get(c.serverId);
    return stop !== undefined && stop >= s && stop <= e ? stop : undefined;
  }, reached);
  if (legs) return legs;
  if (chains.length <= 1 && single) throw single;
  // The furthest the archives reach from the backup's position, and the nearest point after it where any archive holds transactions again.
  const far = reached.find((r) => reached.every((o) => notAfter(o.state, r.state)));
  const end = far?.state ?? position;
  const resumes = chains
    .flatMap((c) => c.files.map((f) => ({ c, f, at: startStateOf(f) })))
    .filter((r) => !notAfter(r.at, end));
  const next = resumes.find((r) => resumes.every((o) => notAfter(r.at, o.at)));
  const span = (c: Chain): string => {
    const first = c.files[0];
    const last = c.files[c.files.length - 1];
    return first && last ? `${c.where} holds GTID ${stateText(startStateOf(first))} .. ${last.endState || "(none)"} (${first.file} .. ${last.object})` : `${c.where} is empty`;
  };
  throw badInput(
    "ArchiveGap",
    `cannot restore from backup ${backup} (GTID ${stateText(position)}) to ${describeTarget(target)}: the binlog archives do not connect: ` +
      (far ? `from the backup's position they reach GTID ${stateText(far.state)} (${far.chain.where} ends there, ${far.file.file})` : "no archive holds the first transaction after the backup's position") +
      `, and the transactions after it${next ? ` up to GTID ${stateText(next.at)} (where ${next.c.where} begins again, ${next.f.file})` : ""} are missing; ` +
      `the archives: ${chains.map(span).join("; ")}`,
  );
}

/** How far a chain reaches without a gap from where a route enters it (for the line when none connects). */
export interface Reach {
  state: GtidState;
  chain: Chain;
  file: BinlogIndex;
}

/**
 * Pure: legs from `position` over `chains` to a file where the route may
 * end (`endIn(chain, s, e)`: the index in s..e, the stretch of the chain
 * that continues from s without a gap, or undefined), stitching chains
 * where the next one's first file begins; undefined when none connects.
 * `reached` collects how far each entered chain got. Shared by the
 * point-in-time restore (the end: the file holding the target) and the
 * seed bridge (the end: the first file whose end state the master serves).
 */
export function findRoute(chains: Chain[], position: GtidState, endIn: (c: Chain, s: number, e: number) => number | undefined, reached: Reach[] = []): Leg[] | undefined {
  const stitch = (x: GtidState, used: Set<Chain>): Leg[] | undefined => {
    const open: { c: Chain; s: number; e: number }[] = [];
    for (const c of chains) {
      if (used.has(c)) continue;
      const s = firstAfter(c.files, x);
      if (s < 0 || !notAfter(startStateOf(c.files[s] as BinlogIndex), x)) continue;
      const e = contiguousEnd(c.files, s, c.where);
      const stop = endIn(c, s, e);
      if (stop !== undefined) return [{ chain: c, from: x, start: s, stop, until: undefined }];
      reached.push({ state: stateOf((c.files[e] as BinlogIndex).endState), chain: c, file: c.files[e] as BinlogIndex });
      open.push({ c, s, e });
    }
    for (const { c, s, e } of open) {
      const end = stateOf((c.files[e] as BinlogIndex).endState);
      for (const d of chains) {
        const head = d.files[0];
        if (d === c || used.has(d) || !head) continue;
        const at = startStateOf(head);
        if (notAfter(at, x) || !notAfter(at, end)) continue;
        // The file in which the state passes `at` (or the one that ends exactly there).
        let k = firstAfter(c.files, at, s);
        if (k < 0 || k > e) k = e;
        else if (k > s && sameState(stateOf((c.files[k - 1] as BinlogIndex).endState), at)) k--;
        const rest = stitch(at, new Set([...used, c]));
        if (rest) return [{ chain: c, from: x, start: s, stop: k, until: at }, ...rest];
      }
    }
    return undefined;
  };
  return stitch(position, new Set());
}
