// `replicator restore --until TIME | --until-gtid GTID`: the newest backup
// before the target, restored by the ordinary restore path, then the
// archived binlogs replayed from the backup's GTID position up to (not
// including) the target: `mariadb-binlog --start-position --stop-position
// FILES | mariadb`. Every archived file is downloaded and its size and
// sha256 checked against its index before anything is restored.
//
// Two shapes, as the ordinary restore has:
// - --target URL: the newest logical backup, loaded into the running server,
//   which the replay then writes into.
// - --datadir DIR: the newest physical backup, restored into the data
//   directory of a stopped server; then a temporary mariadbd on it (no
//   networking, a private socket, no grant tables, no binlog of its own: the
//   method's withTemporaryServer) takes the replay through its socket, its
//   gtid_slave_pos is set to the GTID state after the replay (what a later
//   CHANGE MASTER ... MASTER_USE_GTID=slave_pos starts from), and it shuts
//   down cleanly. The data directory's restore sentinel stays until then, so
//   a failed replay leaves a directory marked as unfinished, never data that
//   looks whole.
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { badInput, isReplicatorError } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import { describeEndpoint, type Endpoint } from "../db/endpoint.js";
import type { DatadirReplay, RestoreResult } from "../agent/restore.js";
import type { BackupEntry } from "../storage/catalog.js";
import type { Repository } from "../storage/repository.js";
import { archivedServers, downloadBinlog, readServerArchive } from "./archive.js";
import { scanBinlogFile, type BinlogScan } from "./binlog-file.js";
import { advance, formatGtid, formatGtidState, type GtidState } from "./gtid.js";
import type { BinlogIndex } from "./layout.js";
import { replaySegments } from "./replay.js";
import { buildChain, describeTarget, findStopFile, planRoute, selectBackupBefore, type BaseKind, type Chain, type Target } from "./plan.js";
import { countLeg, prepareLegs } from "./replay-route.js";

export interface PitrRequest {
  repo: Repository;
  /** The running server to restore into (logical backups). */
  target: Endpoint | undefined;
  /** The data directory of a stopped server to restore into (physical backups). */
  datadir: string | undefined;
  until: Target;
  dryRun: boolean;
  /**
   * Restore the named backup through the ordinary restore path (agent/restore.ts
   * runRestore); a physical one runs `datadirReplay` on its prepared data directory.
   */
  restoreBackup: (name: string, datadirReplay?: DatadirReplay) => Promise<RestoreResult>;
  clientCommand?: string;
  log: Logger;
  signal: AbortSignal;
}

export interface PitrPlan {
  backup: string;
  /** logical: into --target; physical: into --datadir, the replay through a temporary server. */
  kind: BaseKind;
  backupPosition: string;
  serverId: number;
  /** The archived binlogs replayed, in order (after a switchover, of more than one server). */
  binlogs: { serverId: number; file: string; object: string; size: number; complete: boolean }[];
  /** Replay from this GTID (the first the backup lacks) ... */
  fromGtid: string | undefined;
  fromTime: string | undefined;
  /** ... up to, not including, this one (undefined: to the end of the last file). */
  stopGtid: string | undefined;
  stopTime: string | undefined;
  until: string;
  /** The GTID state once the replay is done (physical: the restored data's gtid_slave_pos). */
  endState: string;
}

export interface PitrResult {
  operation: "restore";
  pointInTime: true;
  dryRun: boolean;
  plan: PitrPlan;
  restore?: RestoreResult;
  /** Transactions replayed from the archive. */
  replayed: number;
  durationMs: number;
}

interface Stop {
  offset: number | undefined;
  gtid: string | undefined;
  time: number | undefined;
  state: GtidState;
}

/** Pure: where in a scanned stop file the replay ends, and the GTID state just before. */
export function stopIn(scan: BinlogScan, target: Target): Stop {
  const state: GtidState = new Map(scan.startState);
  const floor = target.kind === "time" ? Math.floor(target.time.getTime() / 1000) : 0;
  for (const e of scan.gtids) {
    const hit = target.kind === "gtid" ? e.gtid.domain === target.gtid.domain && e.gtid.seq >= target.gtid.seq : e.time >= floor;
    if (hit) return { offset: e.offset, gtid: formatGtid(e.gtid), time: e.time, state };
    advance(state, e.gtid);
  }
  return { offset: undefined, gtid: undefined, time: undefined, state };
}

/** Pure: which base a point-in-time restore starts from, given where it restores into. */
export function baseKindOf(target: Endpoint | undefined, datadir: string | undefined): BaseKind {
  if (target && datadir !== undefined) {
    throw badInput(
      "InvalidArguments",
      "a point-in-time restore goes into a running server (--target URL, from a logical backup) or into a stopped server's data directory (--datadir DIR, from a physical backup): give one, not both",
    );
  }
  if (target) return "logical";
  if (datadir !== undefined) return "physical";
  throw badInput("MissingSetting", "a point-in-time restore needs --target URL (a running server, from a logical backup) or --datadir DIR (a stopped server's data directory, from a physical backup)");
}

export async function runPointInTimeRestore(req: PitrRequest): Promise<PitrResult> {
  const started = Date.now();
  const { repo, until, log } = req;
  const kind = baseKindOf(req.target, req.datadir);
  const where = `${repo.where}/binlogs`;
  const servers = await archivedServers(repo.store, repo.cluster);
  if (servers.length === 0) throw badInput("NoArchive", `no binlog archive in ${where}; run \`replicator binlog-archive\` against the master first`);
  // Each server's chain (after a switchover, each master has its own), and in those that hold the target, the file holding it.
  const chains: Chain[] = [];
  const stopFiles = new Map<number, number>();
  let firstError: unknown;
  for (const id of servers) {
    const c: Chain = { serverId: id, where: `${where}/${id}`, files: buildChain(await readServerArchive(repo.store, repo.cluster, id)) };
    chains.push(c);
    try {
      stopFiles.set(id, findStopFile(c.files, until, c.where));
    } catch (err) {
      firstError ??= err;
    }
  }
  const holder = chains.find((c) => stopFiles.has(c.serverId));
  if (!holder) throw firstError;
  const { serverId: sid, files: chain } = holder;
  const stopFile = stopFiles.get(sid) as number;
  const whereSid = `${where}/${sid}`;
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-pitr-"));
  try {
    const local = (f: BinlogIndex): string => path.join(dir, f.file);
    const stopIdx = chain[stopFile] as BinlogIndex;
    await downloadBinlog(repo.store, repo.cluster, stopIdx, local(stopIdx));
    const stop = stopIn(await scanBinlogFile(local(stopIdx)), until);
    const { backups } = await repo.list();
    let choice;
    try {
      choice = selectBackupBefore(backups, stop.state, until, repo.where, kind);
    } catch (err) {
      throw explainUnrecoverable(err, backups, chain, whereSid, kind);
    }
    // One chain that covers [backup, target), else chains stitched where the next one begins (plan.ts planRoute).
    const legs = await prepareLegs(repo, planRoute(chains, choice.position, stopFiles, choice.backup.name, until), until, dir, !req.dryRun);
    const active = legs.filter((l) => l.fromGtid !== undefined);
    // The state once the replay is done: the backup's position advanced by every transaction before the target.
    const end = new Map(choice.position);
    for (const g of stop.state.values()) advance(end, g);
    const plan: PitrPlan = {
      backup: choice.backup.name,
      kind,
      backupPosition: formatGtidState(choice.position),
      serverId: legs[legs.length - 1]?.serverId ?? sid,
      binlogs: active.flatMap((l) => l.files.map((f) => ({ serverId: l.serverId, file: f.file, object: f.object, size: f.size, complete: f.complete }))),
      fromGtid: active[0]?.fromGtid,
      fromTime: active[0]?.fromTime,
      stopGtid: stop.gtid,
      stopTime: stop.time !== undefined ? new Date(stop.time * 1000).toISOString() : undefined,
      until: describeTarget(until),
      endState: formatGtidState(end),
    };
    if (req.dryRun) return { operation: "restore", pointInTime: true, dryRun: true, plan, replayed: 0, durationMs: Date.now() - started };

    // Every file is downloaded and its sha256 checked before anything is
    // restored: a missing or damaged archive file leaves the target as it was.
    // (prepareLegs downloaded them all.)
    let replayed = 0;
    for (const l of active) replayed += await countLeg(l);
    const replayInto = async (target: Endpoint, extra: { skipTargetBinlog?: boolean; flushPrivileges?: boolean }, failure: (cause: Error) => string): Promise<void> => {
      // One leg after the other: after a switchover, the old master's binlogs up to where the new one's archive begins, then the new one's;
      // all through one session (a temporary server with its grant tables loaded would not let a second one in).
      if (active.length === 0) return;
      await replaySegments({ target, segments: active.map((l) => ({ files: l.locals, start: l.start, stop: l.stop })), clientCommand: req.clientCommand, signal: req.signal, failure, ...extra });
    };

    log.info({ backup: plan.backup, kind, binlogs: plan.binlogs.length, from: plan.fromGtid, stop: plan.stopGtid ?? "end" }, "point-in-time restore: restoring the base backup");
    // The base backup is leased until the replay is done (the ordinary restore's
    // own lease ends with it): prune keeps a leased backup, and so, by the
    // archive's retention rule, every binlog replayed from its position.
    const lease = await repo.acquireLease(choice.backup.name, "point-in-time restore", `${hostname()}:${process.pid}`);
    try {
      let restore: RestoreResult;
      if (kind === "physical") {
        // Inside the ordinary datadir restore, before its sentinel goes: a
        // temporary server on the prepared data takes the replay, without a
        // binlog of its own (the replayed transactions keep the master's
        // GTIDs and leave none of the temporary server's), then records the
        // end state as gtid_slave_pos.
        restore = await req.restoreBackup(choice.backup.name, async (server) => {
          if (lease.signal.aborted) throw lease.signal.reason as Error;
          await replayInto(server.endpoint, { skipTargetBinlog: true, flushPrivileges: true }, (cause) => `replaying the archived binlogs into the restored data failed: ${cause.message}`);
          await server.query("SET GLOBAL gtid_slave_pos = ?", [plan.endState]);
          // The archived master's coordinates, applied: what the data is now at.
          return { role: "slave", gtid: plan.endState, sourceServerId: plan.serverId };
        });
      } else {
        restore = await req.restoreBackup(choice.backup.name);
        if (lease.signal.aborted) throw lease.signal.reason as Error;
        const target = req.target as Endpoint;
        await replayInto(target, {}, (cause) => `backup ${restore.name} was restored into ${describeEndpoint(target)}, but replaying the archived binlogs failed: ${cause.message}; the target holds the backup plus part of the replay: restore again`);
      }
      log.info({ replayed, until: plan.until, endState: plan.endState }, "point-in-time restore done");
      return { operation: "restore", pointInTime: true, dryRun: false, plan, restore, replayed, durationMs: Date.now() - started };
    } finally {
      await lease.release().catch((err: unknown) => { log.warn({ err }, "could not release the point-in-time restore's lease; it expires by itself"); });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * NoBackup, with the range that is missing: where the repository's
 * recoverable history now begins (its oldest backup of the kind with a GTID
 * position, and the archive's first file), so that a target before it (e.g.
 * after retention pruned older backups and binlogs) fails with one line that says why.
 */
function explainUnrecoverable(err: unknown, backups: BackupEntry[], chain: BinlogIndex[], whereSid: string, kind: BaseKind): unknown {
  if (!isReplicatorError(err) || err.reason !== "NoBackup") return err;
  const oldest = backups
    .filter((b) => b.manifest.kind === kind && b.manifest.replication?.gtid !== undefined)
    .sort((a, b) => a.time.getTime() - b.time.getTime())[0];
  const head = chain[0];
  if (!oldest || !head) return err;
  return badInput(
    "NoBackup",
    `${err.message}; the earliest recoverable point is backup ${oldest.name} (GTID ${oldest.manifest.replication?.gtid ?? "?"}, ${oldest.manifest.finishedAt}), ` +
      `and the archive ${whereSid} begins at ${head.file} (GTID ${head.startState || "(none)"}, ${head.firstEventTime ?? "?"}): everything before is missing (pruned by retention, or never archived)`,
    { cause: err },
  );
}
