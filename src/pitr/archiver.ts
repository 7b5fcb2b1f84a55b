// `replicator binlog-archive`: a replication client of the master
// (`mariadb-binlog --read-from-remote-server --raw`) writing into a private
// temp dir; each binlog is uploaded when it closes, and the open one every
// flush interval as a partial object that the next flush supersedes.
//
// Resume: the archive itself says where to go on (the binlog after its last
// complete file), so a restarted archiver neither skips nor repeats a file.
// A gap (the master no longer has that binlog, or its GTID state does not
// continue the archive's) stops the archiver with one line; it is never
// papered over by starting from whatever the master has.
import { mkdtemp, readdir, rm, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { badInput, oneLine } from "../lib/errors.js";
import { spawnTool } from "../lib/exec.js";
import type { Logger } from "../lib/log.js";
import { withConn } from "../db/connection.js";
import { writeDefaultsFile } from "../db/defaults-file.js";
import { describeEndpoint, type Endpoint } from "../db/endpoint.js";
import type { Repository } from "../storage/repository.js";
import { archivedServers, readServerArchive, uploadBinlog } from "./archive.js";
import { describeState, scanBinlogFile, type BinlogScan } from "./binlog-file.js";
import { sameState } from "./gtid.js";
import { compareBinlogNames, nextBinlogName, parseBinlogName, stateOf, type BinlogIndex } from "./layout.js";

export const BINLOG_TOOL = "mariadb-binlog";

export interface ArchiveRequest {
  repo: Repository;
  master: Endpoint;
  /** Archive what the master has now, then exit (the open binlog as a partial object). */
  once: boolean;
  flushIntervalMs: number;
  log: Logger;
  signal: AbortSignal;
}

export interface ArchivedFile {
  file: string;
  complete: boolean;
  size: number;
  lastGtid: string | undefined;
}

export interface ArchiveResult {
  operation: "binlog-archive";
  master: string;
  serverId: number;
  repository: string;
  archived: ArchivedFile[];
  /** The GTID state and time the archive now reaches. */
  endState: string | undefined;
  lastEventTime: string | undefined;
}

export type StartDecision = { kind: "start"; file: string } | { kind: "gap"; message: string };

/**
 * Pure: where to resume, given the archive's last complete binlog and the
 * master's binlogs (oldest first).
 */
export function decideStart(serverId: number, last: BinlogIndex | undefined, masterLogs: string[], where: string): StartDecision {
  const oldest = masterLogs[0];
  const newest = masterLogs[masterLogs.length - 1];
  if (!oldest || !newest) return { kind: "gap", message: `the master (server ${serverId}) lists no binlogs; is log_bin on?` };
  if (!last) return { kind: "start", file: oldest };
  const next = nextBinlogName(last.file);
  if (masterLogs.includes(next)) return { kind: "start", file: next };
  const ends = `the archive ${where} ends with ${last.file} at GTID ${last.endState || "(none)"}${last.lastEventTime ? ` (${last.lastEventTime})` : ""}`;
  if (compareBinlogNames(oldest, next) > 0) {
    return {
      kind: "gap",
      message: `binlog archive gap: ${ends}, but the master (server ${serverId}) no longer has ${next}${compareBinlogNames(oldest, nextBinlogName(next)) > 0 ? ` .. the binlog before ${oldest}` : ""} (its oldest is ${oldest}); those transactions are lost for point-in-time recovery: take a new backup, and archive the master's binlogs from then on`,
    };
  }
  return {
    kind: "gap",
    message: `binlog archive gap: ${ends}, but the master (server ${serverId}) has binlogs ${oldest} .. ${newest}, which do not continue it (was the master reset, or is this another server?)`,
  };
}

/** Pure: why `file` (scanned) does not continue the archive's last complete binlog, or undefined when it does. */
export function continuityProblem(serverId: number, prev: BinlogIndex | undefined, file: string, scan: BinlogScan, where: string): string | undefined {
  if (!prev) return undefined;
  const ends = `the archive ${where} ends with ${prev.file} at GTID ${prev.endState || "(none)"}`;
  if (file !== nextBinlogName(prev.file)) {
    return `binlog archive gap: ${ends}, but the next binlog received from server ${serverId} is ${file}, not ${nextBinlogName(prev.file)}`;
  }
  if (!sameState(stateOf(prev.endState), scan.startState)) {
    return `binlog archive gap: ${ends}, but ${file} from server ${serverId} starts at GTID ${describeState(scan.startState)}: the transactions between are not in the archive; take a new backup`;
  }
  return undefined;
}

async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  await new Promise<void>((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Read through a call, so that a check after an await is not narrowed away. */
function isAborted(signal: AbortSignal): boolean {
  return signal.aborted;
}

interface MasterBinlogs {
  serverId: number;
  logs: string[];
}

async function readMasterBinlogs(master: Endpoint): Promise<MasterBinlogs> {
  return withConn(master, "read the master's binlog list", async (c) => {
    const [vars] = await c.query("SELECT @@server_id AS sid, @@log_bin AS logBin");
    const v = (vars as { sid?: unknown; logBin?: unknown }[])[0];
    if (Number(v?.logBin) !== 1) {
      throw badInput("BinaryLoggingOff", `binary logging is off on ${describeEndpoint(master)}: there is nothing to archive; set log_bin and server_id`);
    }
    const [rows] = await c.query("SHOW BINARY LOGS");
    const logs = (rows as { Log_name?: unknown }[]).map((r) => String(r.Log_name)).filter((n) => parseBinlogName(n) !== undefined);
    logs.sort(compareBinlogNames);
    return { serverId: Number(v?.sid), logs };
  });
}

export async function runBinlogArchive(req: ArchiveRequest): Promise<ArchiveResult> {
  const { repo, master, log, signal } = req;
  const archived: ArchivedFile[] = [];
  let serverId = 0;
  let prev: BinlogIndex | undefined;
  let reach: { state: string; time: string | undefined } | undefined;
  let failures = 0;
  for (;;) {
    const began = Date.now();
    try {
      const m = await readMasterBinlogs(master);
      if (serverId !== 0 && m.serverId !== serverId) {
        // A switchover behind the same address: the new master's binlogs go to a chain of their own (never appended to the old one's).
        log.warn({ was: serverId, now: m.serverId }, "the master is another server now: archiving it into its own chain");
      }
      serverId = m.serverId;
      const where = `${repo.where}/binlogs/${serverId}`;
      const archive = await readServerArchive(repo.store, repo.cluster, serverId);
      prev = archive.complete[archive.complete.length - 1];
      if (!prev && archive.partial.length === 0) {
        const others = (await archivedServers(repo.store, repo.cluster)).filter((sid) => sid !== m.serverId);
        // A switchover: reported, never papered over by appending to the old master's chain.
        if (others.length > 0) log.warn({ serverId: m.serverId, others }, "a new master: its binlogs begin a chain of their own; a restore across the switchover stitches the chains where this one begins");
      }
      const decision = decideStart(serverId, prev, m.logs, where);
      if (decision.kind === "gap") throw badInput("ArchiveGap", decision.message);
      log.info({ serverId, start: decision.file, archivedThrough: prev?.file }, "binlog archive session starting");
      await session(decision.file, where, m.serverId);
      failures = 0;
      if (req.once || signal.aborted) break;
    } catch (err) {
      const reason = (err as { reason?: string }).reason;
      if (req.once || signal.aborted || reason === "ArchiveGap" || reason === "BinaryLoggingOff" || reason === "AccessDenied" || reason === "MissingPrivilege") throw err;
      // A session that ran a while (a master restarted after hours) starts the backoff afresh.
      if (Date.now() - began >= 60_000) failures = 0;
      failures++;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(failures, 6));
      log.warn({ err: oneLine(err), retryInMs: delay }, "binlog archive session ended; reconnecting");
      await sleep(delay, signal);
      if (isAborted(signal)) break;
    }
  }
  return {
    operation: "binlog-archive",
    master: describeEndpoint(master),
    serverId,
    repository: repo.where,
    archived,
    endState: reach?.state ?? prev?.endState,
    lastEventTime: reach?.time ?? prev?.lastEventTime,
  };

  async function session(startFile: string, where: string, sid: number): Promise<void> {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-binlogs-"));
    const defaults = await writeDefaultsFile(master);
    const partialSizes = new Map<string, number>();
    let lastFlush = Date.now();
    const tick = async (final: boolean): Promise<void> => {
      const files = (await readdir(dir)).filter((f) => parseBinlogName(f) !== undefined).sort(compareBinlogNames);
      for (const [i, file] of files.entries()) {
        const local = path.join(dir, file);
        const isLast = i === files.length - 1;
        const scan = await scanBinlogFile(local);
        // A binlog is closed when it ends with ROTATE/STOP, or when a newer one
        // was started (a master that crashed never wrote its STOP event).
        const closed = scan.closed || !isLast;
        if (closed) {
          const problem = continuityProblem(sid, prev, file, scan, where);
          if (problem) throw badInput("ArchiveGap", problem);
          prev = await uploadBinlog(repo.store, repo.cluster, sid, local, file, scan, true, new Date());
          reach = { state: prev.endState, time: prev.lastEventTime };
          archived.push({ file, complete: true, size: scan.size, lastGtid: prev.lastGtid });
          partialSizes.delete(file);
          log.info({ file, size: scan.size, lastGtid: prev.lastGtid }, "binlog archived");
          await unlink(local);
        } else if ((final || Date.now() - lastFlush >= req.flushIntervalMs) && scan.size > (partialSizes.get(file) ?? 4)) {
          const problem = continuityProblem(sid, prev, file, scan, where);
          if (problem) throw badInput("ArchiveGap", problem);
          const idx = await uploadBinlog(repo.store, repo.cluster, sid, local, file, scan, false, new Date());
          reach = { state: idx.endState, time: idx.lastEventTime };
          partialSizes.set(file, scan.size);
          const at = archived.findIndex((a) => a.file === file && !a.complete);
          const entry = { file, complete: false, size: scan.size, lastGtid: idx.lastGtid };
          if (at >= 0) archived[at] = entry;
          else archived.push(entry);
          log.debug({ file, size: scan.size }, "open binlog flushed as a partial object");
        }
      }
      if (final || Date.now() - lastFlush >= req.flushIntervalMs) lastFlush = Date.now();
    };
    const child = spawnTool(
      BINLOG_TOOL,
      [
        `--defaults-extra-file=${defaults.path}`,
        ...defaults.args,
        "--read-from-remote-server",
        "--raw",
        `--result-file=${dir}/`,
        req.once ? "--to-last-log" : "--stop-never",
        startFile,
      ],
      { signal, what: `read the binlogs of ${describeEndpoint(master)} from ${startFile}` },
    );
    try {
      let exited = false;
      const hasExited = (): boolean => exited;
      void child.exit.then(() => { exited = true; });
      while (!hasExited()) {
        if (isAborted(signal)) {
          // Wait for the child itself: sleep() returns at once once aborted,
          // and a loop of settled promises would starve the event loop that
          // delivers the child's exit (seen: a SIGTERM'd archiver spinning).
          child.kill();
          await child.exit;
          break;
        }
        await Promise.race([child.exit, sleep(1000, signal)]);
        if (!hasExited() && !isAborted(signal)) await tick(false);
      }
      // Whatever arrived is archived, even when the child failed or was stopped.
      await tick(true);
      if (!signal.aborted) await child.done;
    } finally {
      child.kill();
      await child.exit;
      await defaults.cleanup();
      await rm(dir, { recursive: true, force: true });
    }
  }
}
