// Seeding a slave beyond the binlogs its master has purged: when the master
// can no longer serve a backup's GTID position, the binlog archive may hold
// the transactions in between. The bridge is the stretch of archived
// (complete) binlogs from the first transaction the backup lacks through the
// end of the first file whose end state the master can serve from (the same
// servability check as an ordinary seed, against that state). The seed then
// loads the backup, replays the bridge (replay.ts, kept out of the target's
// binlog), sets gtid_slave_pos to the bridge's end state and replicates from
// there: no transaction is skipped or applied twice.
//
// Everything is planned from the indexes and every file is downloaded and
// checked (size, sha256) before anything is loaded, so a bridge that cannot
// be built leaves the target untouched. BinlogsPurged is the verdict only
// when neither the master nor the archive holds a transaction the backup
// lacks, and its line names the missing range; a storage fault reading the
// archive stays a storage fault.
import { mkdir, mkdtemp, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { badInput, failed } from "../lib/errors.js";
import { decideGtidServable, type MasterHorizon } from "../db/replication.js";
import type { Endpoint } from "../db/endpoint.js";
import type { Repository } from "../storage/repository.js";
import { archivedServers, downloadBinlog, readServerArchive, type ServerArchive } from "./archive.js";
import type { ArchiveIndexCache } from "./archive-index-cache.js";
import { scanBinlogFile } from "./binlog-file.js";
import { advance, formatGtid, formatGtidState, includes, notAfter, parseGtidState, sameState, type GtidState } from "./gtid.js";
import { nextBinlogName, parseBinlogName, stateOf, type BinlogIndex } from "./layout.js";
import { buildChain, findRoute, startStateOf } from "./plan.js";
import { replayBinlogs } from "./replay.js";

/** One server's committed (complete) archived binlogs, in order. */
export interface ArchiveChain {
  serverId: number;
  /** Where it is, for messages: <repository>/<cluster>/binlogs/<server_id>. */
  where: string;
  chain: BinlogIndex[];
  /** The open binlog's partial object exists (never the end of a bridge: it may end mid-transaction). */
  hasPartial: boolean;
  /**
   * The partial object of the binlog after the last complete one: after a
   * switchover the old master's last binlog may be archived only so. A leg
   * that hands over to a newer master's archive may end inside it (cut
   * before its first transaction past the handover); a bridge never ends in it.
   */
  partial?: BinlogIndex | undefined;
}

/** One server's archive as the seed planning reads it (also the operator's, through its index cache). */
export function archiveChainOf(serverId: number, where: string, a: ServerArchive): ArchiveChain {
  const tail = buildChain(a)[a.complete.length];
  return { serverId, where, chain: a.complete, hasPartial: a.partial.length > 0, ...(tail ? { partial: tail } : {}) };
}

export interface BridgePlan {
  backup: string;
  /** The backup's GTID position. */
  from: string;
  serverId: number;
  where: string;
  /** The archived binlogs replayed, in order: from the one holding the first transaction the backup lacks. */
  files: BinlogIndex[];
  /** The GTID state after the last file: the slave's gtid_slave_pos once the bridge is replayed. */
  endState: string;
  master: MasterHorizon;
  /**
   * After a switchover, the archives of two or more servers stitched (plan.ts
   * findRoute): each leg's files (together `files`), and where a leg hands
   * over to the next (the next archive's start state). serverId/where are
   * then the last leg's.
   */
  legs?: BridgeLeg[];
}

export interface BridgeLeg {
  serverId: number;
  where: string;
  files: BinlogIndex[];
  until: string | undefined;
}

export type BridgeDecision = { ok: true; plan: BridgePlan } | { ok: false; message: string };

/** Pure: a GTID state the master can serve a slave from (the ordinary seed's check). */
export function masterCanServe(state: GtidState, master: MasterHorizon): boolean {
  return decideGtidServable(formatGtidState(state), master.oldestStart, master.current).ok;
}

/** Pure: per domain of `bound`, the lower of `bound` and `other` (the end of a missing stretch). */
function lowerOf(bound: GtidState, other: GtidState | undefined): GtidState {
  const out: GtidState = new Map();
  for (const [d, g] of bound) {
    const o = other?.get(d);
    out.set(d, o && o.seq < g.seq ? o : g);
  }
  return out;
}

const text = (s: GtidState | string): string => (typeof s === "string" ? s : formatGtidState(s)) || "(none)";

/**
 * Pure: the bridge from `position` (the backup's GTID position, which the
 * master cannot serve) over one of `archives` to a state the master can
 * serve, or the one line naming what is missing.
 */
export function decideBridge(archives: ArchiveChain[], position: string, master: MasterHorizon, backup: string, archiveRoot: string): BridgeDecision {
  const pos = parseGtidState(position, `GTID position of ${backup}`);
  const oldest = stateOf(master.oldestStart);
  const missing = (lo: GtidState, hiBound: GtidState | undefined, archiveSays: string): string =>
    `cannot seed a replica from ${backup} (GTID ${text(pos)}): the master has purged binlogs the backup needs and the binlog archive does not hold them either: ` +
    `the transactions after GTID ${text(lo)} through GTID ${text(lowerOf(oldest, hiBound))} are missing (${archiveSays}; the master's oldest binlog ${master.oldestFile || "?"} begins after GTID ${text(master.oldestStart)}); ` +
    "take a new backup, or raise the master's binlog retention (expire_logs_days / binlog_expire_logs_seconds) and keep `replicator binlog-archive` running so that the archive bridges such a gap";
  if (archives.length === 0) return { ok: false, message: missing(pos, undefined, `there is no binlog archive in ${archiveRoot}`) };
  // The archive that gets furthest decides the message (after a switchover, each master has its own).
  let best: { reach: number; message: string } | undefined;
  const fail = (reach: number, message: string): void => {
    if (!best || reach > best.reach) best = { reach, message };
  };
  for (const a of archives) {
    const { chain, where } = a;
    const partial = a.hasPartial ? " (the open binlog's partial object is never replayed for a seed)" : "";
    const last = chain[chain.length - 1];
    const start = chain.findIndex((f) => !notAfter(stateOf(f.endState), pos));
    if (!last || start < 0) {
      const ends = last ? `the archive ${where} ends at GTID ${text(last.endState)} (${last.file}), not after the backup's position${partial}` : `the archive ${where} holds no complete binlog${partial}`;
      fail(0, missing(pos, undefined, ends));
      continue;
    }
    const first = chain[start] as BinlogIndex;
    const begins = startStateOf(first);
    if (!notAfter(begins, pos)) {
      const before = start > 0 ? (chain[start - 1] as BinlogIndex) : undefined;
      const says = before
        ? `the archive ${where} has a gap: ${missingFiles(before.file, first.file)}after ${before.file} (GTID ${text(before.endState)}) up to ${first.file} (GTID ${text(first.startState)})`
        : `the archive ${where} begins at ${first.file} (GTID ${text(begins)}), after the backup's position`;
      fail(1, missing(pos, begins, says));
      continue;
    }
    for (let k = start; k < chain.length; k++) {
      const f = chain[k] as BinlogIndex;
      const end = stateOf(f.endState);
      if (masterCanServe(end, master)) {
        return { ok: true, plan: { backup, from: text(pos), serverId: a.serverId, where, files: chain.slice(start, k + 1), endState: formatGtidState(end), master } };
      }
      const next = chain[k + 1];
      if (!next) {
        fail(2 + k, missing(end, undefined, `the archive ${where} ends at GTID ${text(f.endState)} (${f.file}${f.lastEventTime ? `, ${f.lastEventTime}` : ""})${partial}`));
        break;
      }
      if (next.file !== nextBinlogName(f.file) || !sameState(stateOf(next.startState), end)) {
        fail(2 + k, missing(end, stateOf(next.startState), `the archive ${where} has a gap: ${missingFiles(f.file, next.file)}after ${f.file} (GTID ${text(f.endState)}) up to ${next.file} (GTID ${text(next.startState)})`));
        break;
      }
    }
  }
  // After a switchover: the old master's archive up to where the new master's begins, then the new one's.
  if (archives.length > 1) {
    const legs = findRoute(archives.map((a) => ({ serverId: a.serverId, where: a.where, files: a.partial ? [...a.chain, a.partial] : a.chain })), pos, (c, s, e) => {
      for (let k = s; k <= e; k++) {
        const f = c.files[k] as BinlogIndex;
        if (f.complete && masterCanServe(stateOf(f.endState), master)) return k;
      }
      return undefined;
    });
    const last = legs?.[legs.length - 1];
    const lastFile = last?.chain.files[last.stop];
    if (legs && last && lastFile) {
      const parts = legs.map((l) => ({ serverId: l.chain.serverId, where: l.chain.where, files: l.chain.files.slice(l.start, l.stop + 1), until: l.until && formatGtidState(l.until) }));
      return {
        ok: true,
        plan: { backup, from: text(pos), serverId: last.chain.serverId, where: last.chain.where, files: parts.flatMap((p) => p.files), endState: lastFile.endState, master, legs: parts },
      };
    }
  }
  return { ok: false, message: (best as { message: string } | undefined)?.message ?? missing(pos, undefined, `no archive in ${archiveRoot} reaches it`) };
}

/** "mysql-bin.000004 .. mysql-bin.000006 missing, " for the files between `after` and `before` (none when they are neighbours). */
function missingFiles(after: string, before: string): string {
  const first = nextBinlogName(after);
  if (first === before) return "";
  const pa = parseBinlogName(first);
  const pb = parseBinlogName(before);
  if (pa && pb && pb.n - 1 > pa.n) return `${first} .. ${pb.base}.${String(pb.n - 1).padStart(pb.width, "0")} missing, `;
  return `${first} missing, `;
}

/** Every server's complete archived binlogs. A storage fault is thrown as it is: never "no archive". */
export async function readArchiveChains(repo: Repository, cache?: ArchiveIndexCache): Promise<ArchiveChain[]> {
  const out: ArchiveChain[] = [];
  for (const sid of await archivedServers(repo.store, repo.cluster)) {
    out.push(archiveChainOf(sid, `${repo.where}/binlogs/${sid}`, await readServerArchive(repo.store, repo.cluster, sid, cache)));
  }
  return out;
}

/** The bridge for a backup the master cannot serve, or BinlogsPurged naming the missing range. */
export async function planSeedBridge(repo: Repository, master: MasterHorizon, position: string, backup: string): Promise<BridgePlan> {
  const d = decideBridge(await readArchiveChains(repo), position, master, backup, `${repo.where}/binlogs`);
  if (!d.ok) throw badInput("BinlogsPurged", d.message);
  return d.plan;
}

/** A bridge downloaded and checked, ready to replay. */
export interface PreparedBridge {
  plan: BridgePlan;
  /** Local copies, in order. */
  files: string[];
  /** Offset of the first transaction the backup lacks, in the first file. */
  start: number;
  fromGtid: string;
  /** Transactions the replay applies. */
  transactions: number;
  cleanup(): Promise<void>;
}

/**
 * Download every file of the bridge (each checked against its index: size and
 * sha256) and find where in the first one the backup's position ends. Run
 * before anything is loaded: a damaged or missing archive file then leaves
 * the target untouched.
 */
export async function prepareBridge(repo: Repository, plan: BridgePlan): Promise<PreparedBridge> {
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-bridge-"));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  try {
    const pos = parseGtidState(plan.from === "(none)" ? "" : plan.from);
    const files: string[] = [];
    let start: number | undefined;
    let fromGtid = "";
    let transactions = 0;
    const legs = plan.legs ?? [{ serverId: plan.serverId, where: plan.where, files: plan.files, until: undefined }];
    let handover: GtidState | undefined;
    for (const leg of legs) for (const [i, f] of leg.files.entries()) {
      // Per server: two servers' binlogs may have the same names.
      const local = path.join(dir, String(leg.serverId), f.file);
      await mkdir(path.dirname(local), { recursive: true });
      await downloadBinlog(repo.store, repo.cluster, f, local);
      files.push(local);
      if (handover && i === 0) await checkTakesOver(local, handover, leg.where, f);
      if (leg.until !== undefined && i === leg.files.length - 1) {
        handover = stateOf(leg.until);
        await cutAtHandover(local, f, handover, leg.where);
      }
      const scan = await scanBinlogFile(local);
      if (start === undefined) {
        const e = scan.gtids.find((x) => !includes(pos, x.gtid));
        if (!e) throw failed("CorruptArchive", `${plan.where}/${f.file}: its index says it ends at GTID ${f.endState}, after the backup's position ${plan.from}, but it holds no such transaction; the archive is inconsistent`);
        start = e.offset;
        fromGtid = formatGtid(e.gtid);
        transactions += scan.gtids.filter((x) => x.offset >= e.offset).length;
      } else {
        transactions += scan.gtids.length;
      }
    }
    if (start === undefined) throw failed("CorruptArchive", `the bridge from ${plan.from} holds no binlog`);
    return { plan, files, start, fromGtid, transactions, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * The next archive begins at `until`: cut the local copy of the old one's
 * file just before its first transaction past that state (a binlog prefix
 * of whole events, as a partial object is), so that one `mariadb-binlog`
 * over every file replays each transaction once. The state must be reached
 * exactly there, else the archives do not continue each other.
 */
async function cutAtHandover(local: string, f: BinlogIndex, until: GtidState, where: string): Promise<void> {
  const scan = await scanBinlogFile(local);
  const state = startStateOf(f);
  const past = scan.gtids.find((x) => {
    if (!includes(until, x.gtid)) return true;
    advance(state, x.gtid);
    return false;
  });
  if (!sameState(state, until)) {
    throw badInput("BinlogsPurged", `cannot bridge over the binlog archives: the next archive begins at GTID ${text(until)}, but ${where}/${f.file} never holds exactly that state (it reaches ${text(state)} there)`);
  }
  if (!past && !f.complete) {
    // Its last transaction may be cut short: only a transaction after it proves it whole.
    throw badInput("BinlogsPurged", `cannot bridge over the binlog archives: the next archive begins at GTID ${text(until)}, where ${where}/${f.object} (the open binlog's partial object) ends; archive that server once more (\`replicator binlog-archive --once\`) if it still runs`);
  }
  if (past) await truncate(local, past.offset);
}

/** The first file of a leg after a handover replays from its start: each of its transactions must be past the handover state. */
async function checkTakesOver(local: string, from: GtidState, where: string, f: BinlogIndex): Promise<void> {
  const dup = (await scanBinlogFile(local)).gtids.find((x) => includes(from, x.gtid));
  if (dup) throw badInput("BinlogsPurged", `cannot bridge over the binlog archives: ${where}/${f.file} holds GTID ${formatGtid(dup.gtid)}, before the state ${text(from)} at which it takes over`);
}

/**
 * Replay a prepared bridge into the target (after the backup is loaded), kept
 * out of the target's own binlog; `flushPrivileges` for a temporary server
 * with --skip-grant-tables (replay.ts).
 */
export async function replayBridge(b: PreparedBridge, target: Endpoint, signal: AbortSignal, failure: (cause: Error) => string, opts: { flushPrivileges?: boolean } = {}): Promise<void> {
  await replayBinlogs({ target, files: b.files, start: b.start, stop: undefined, skipTargetBinlog: true, signal, failure, ...opts });
}
