// The replay of a point-in-time restore as legs (plan.ts planRoute): one leg
// per server chain, in order; after a switchover the old master's leg ends
// where the new master's archive begins. Each leg's files are downloaded
// (size and sha256 checked against their indexes), and its start and stop
// offsets found from their events: the first transaction not in the leg's
// `from` state, and the target (last leg) or the first transaction past the
// next chain's start state, which must be reached exactly there (else the
// two archives do not continue each other and nothing is replayed).
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { badInput } from "../lib/errors.js";
import type { Repository } from "../storage/repository.js";
import { downloadBinlog } from "./archive.js";
import { scanBinlogFile, type BinlogScan } from "./binlog-file.js";
import { advance, formatGtid, formatGtidState, includes, sameState, type GtidState } from "./gtid.js";
import type { BinlogIndex } from "./layout.js";
import { startStateOf, type Leg, type Target } from "./plan.js";

export interface ReadyLeg {
  serverId: number;
  where: string;
  files: BinlogIndex[];
  /** Local copies, in order (only the first and last until `downloadAll`). */
  locals: string[];
  /** Offset of the first event replayed in the first file, and of the event before which the last file's replay ends (undefined: its end). */
  start: number | undefined;
  stop: number | undefined;
  /** The first transaction replayed, undefined when the leg replays nothing. */
  fromGtid: string | undefined;
  fromTime: string | undefined;
  /** The target's transaction, in the last leg. */
  stopGtid: string | undefined;
  stopTime: string | undefined;
}

/** Pure: the offset of the first transaction at or past the target in a scanned file, and that transaction. */
function targetIn(scan: BinlogScan, target: Target): { offset: number; gtid: string; time: number } | undefined {
  const floor = target.kind === "time" ? Math.floor(target.time.getTime() / 1000) : 0;
  const e = scan.gtids.find((x) => (target.kind === "gtid" ? x.gtid.domain === target.gtid.domain && x.gtid.seq >= target.gtid.seq : x.time >= floor));
  return e ? { offset: e.offset, gtid: formatGtid(e.gtid), time: e.time } : undefined;
}

/**
 * Download the first and last file of every leg (all files with
 * `downloadAll`) into `dir` and find each leg's offsets. A handover state
 * not reached exactly in the old chain's file is ArchiveGap, naming both archives.
 */
export async function prepareLegs(repo: Repository, legs: Leg[], target: Target, dir: string, downloadAll: boolean): Promise<ReadyLeg[]> {
  const out: ReadyLeg[] = [];
  for (const leg of legs) {
    const files = leg.chain.files.slice(leg.start, leg.stop + 1);
    const sub = path.join(dir, String(leg.chain.serverId));
    await mkdir(sub, { recursive: true });
    const locals = files.map((f) => path.join(sub, f.file));
    for (const [i, f] of files.entries()) {
      if (downloadAll || i === 0 || i === files.length - 1) await downloadBinlog(repo.store, repo.cluster, f, locals[i] as string);
    }
    const firstScan = await scanBinlogFile(locals[0] as string);
    const lastScan = files.length === 1 ? firstScan : await scanBinlogFile(locals[locals.length - 1] as string);
    const first = firstScan.gtids.find((x) => !includes(leg.from, x.gtid));
    const ready: ReadyLeg = {
      serverId: leg.chain.serverId, where: leg.chain.where, files, locals,
      start: first?.offset, stop: undefined, fromGtid: first ? formatGtid(first.gtid) : undefined, fromTime: first ? new Date(first.time * 1000).toISOString() : undefined,
      stopGtid: undefined, stopTime: undefined,
    };
    if (leg.until) {
      // The handover: replay up to the first transaction past the next chain's start state, which must be exactly the state there.
      const until = leg.until;
      const lastIdx = files[files.length - 1] as BinlogIndex;
      const state: GtidState = startStateOf(lastIdx);
      const past = lastScan.gtids.find((x) => {
        if (!includes(until, x.gtid)) return true;
        advance(state, x.gtid);
        return false;
      });
      if (!sameState(state, until)) {
        throw badInput(
          "ArchiveGap",
          `the binlog archives ${leg.chain.where} and the next one do not continue each other: the next begins at GTID ${formatGtidState(until) || "(none)"}, but ${leg.chain.where}/${lastIdx.file} never holds exactly that state (it reaches ${formatGtidState(state) || "(none)"} there); a point-in-time restore across them is not possible`,
        );
      }
      if (!past && !lastIdx.complete) {
        // Its last transaction may be cut short: only a transaction after it proves it whole.
        throw badInput(
          "ArchiveGap",
          `the binlog archive ${leg.chain.where} hands over to the next at GTID ${formatGtidState(until) || "(none)"}, where its open binlog's partial object ${lastIdx.object} ends; archive that server once more (\`replicator binlog-archive --once\`) if it still runs`,
        );
      }
      ready.stop = past?.offset;
    } else {
      const t = targetIn(lastScan, target);
      ready.stop = t?.offset;
      ready.stopGtid = t?.gtid;
      ready.stopTime = t ? new Date(t.time * 1000).toISOString() : undefined;
    }
    // Nothing of this leg to replay: its first new transaction is at or past its end.
    if (!first || (files.length === 1 && ready.stop !== undefined && first.offset >= ready.stop)) {
      ready.fromGtid = undefined;
      ready.fromTime = undefined;
    }
    out.push(ready);
  }
  return out;
}

/** Transactions a prepared leg replays (its files downloaded). */
export async function countLeg(leg: ReadyLeg): Promise<number> {
  if (leg.fromGtid === undefined) return 0;
  let n = 0;
  for (const [i, local] of leg.locals.entries()) {
    const from = i === 0 ? (leg.start ?? 0) : 0;
    const to = i === leg.locals.length - 1 ? leg.stop : undefined;
    n += (await scanBinlogFile(local)).gtids.filter((g) => g.offset >= from && (to === undefined || g.offset < to)).length;
  }
  return n;
}
