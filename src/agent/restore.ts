// One restore: pick a backup (latest, named, or newest before a time), check
// the target, check the master can serve the position, stream storage →
// sha256 check → decompression → the method's loader, then make the target
// a replica.
//
// Two shapes, chosen by the method (see plugins/contract.ts):
// - "server" (logical): load into a running, empty server, then optionally
//   CHANGE MASTER and wait until it replicates.
// - "datadir" (physical): write the data directory of a stopped server,
//   then optionally write the replica configuration into it; the server
//   replicates when it is started.
// Both leave a sentinel while they work, so that an interrupted restore is
// redone rather than mistaken for data.
import { hostname } from "node:os";
import { PassThrough, type Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badInput, failed, isReplicatorError, isStreamEcho, oneLine, tail } from "../lib/errors.js";
import { spawnTool, type ToolChild } from "../lib/exec.js";
import type { Logger } from "../lib/log.js";
import { withConn } from "../db/connection.js";
import { describeEndpoint, type Endpoint } from "../db/endpoint.js";
import { configureReplica } from "../db/replication.js";
import { checkCanServe, hasPosition } from "../db/serve-check.js";
import { restoreTargetFor } from "../db/target.js";
import type { BackupMethod, PipedLoader, RestoreContext, ServerRestoreMethod, TemporaryServer } from "../plugins/contract.js";
import { getMethod } from "../plugins/registry.js";
import { parseBackupName, selectBackup, type BackupEntry, type Manifest, type ReplicationPosition, type Selector } from "../storage/catalog.js";
import type { LeaseHandle, Repository } from "../storage/repository.js";
import { planSeedBridge, prepareBridge, replayBridge, type BridgePlan, type PreparedBridge } from "../pitr/bridge.js";
import { buildZstdDecompressArgs, createDecompressor, isZstdInputError, parseZstdDecompressSummary, ZSTD_COMMAND, zstdToolAvailable } from "./compression.js";
import { restoreDatadir } from "./datadir.js";
import { ByteCounter, startProgress } from "./progress.js";

export interface RestoreRequest {
  repo: Repository;
  /** A running server to load into (logical backups). */
  target?: Endpoint | undefined;
  /** The data directory of a stopped server (physical backups). */
  datadir?: string | undefined;
  selector: Selector;
  replicateFrom?: Endpoint | undefined;
  force?: boolean;
  /** Skip the check that the master still has the binlogs (not recommended). */
  skipBinlogCheck?: boolean;
  replicationTimeoutMs?: number;
  /** Check and plan only (the backup, the target, the master, the archive's bridge): nothing is loaded. */
  dryRun?: boolean;
  methodOptions?: Record<string, unknown>;
  progress?: boolean;
  log: Logger;
  signal: AbortSignal;
  /** Resolve a method by name (the conformance kit passes third-party plugins here); the backup's name is for messages. */
  resolveMethod?: (name: string, backup?: string) => BackupMethod;
  /**
   * Physical restores: once the data directory is prepared (before its
   * replica configuration and before its sentinel goes), run this through a
   * temporary server on it (archived binlogs replayed); it returns the
   * position the data is at afterwards.
   */
  datadirReplay?: DatadirReplay;
}

export type DatadirReplay = (server: TemporaryServer, position: ReplicationPosition | undefined) => Promise<ReplicationPosition>;

export interface RestoreResult {
  operation: "restore";
  name: string;
  repository: string;
  method: string;
  /** The server (logical) or data directory (physical) restored into. */
  target: string;
  rawSize: number;
  replication: ReplicationPosition | undefined;
  /** Logical: the target replicates now. */
  replicating: boolean;
  /** Physical: the data directory is configured to replicate when its server starts. */
  replicaConfigured?: boolean;
  replicatingFrom?: string;
  secondsBehindMaster?: number | null;
  /** The master had purged binlogs the backup's position needs: the archived binlogs replayed to bridge the gap. */
  bridge?: SeedBridge;
  /** --dry-run: checked and planned, nothing loaded. */
  dryRun?: boolean;
  durationMs: number;
  warnings: string[];
}

export interface SeedBridge {
  /** The archive the binlogs came from. */
  archive: string;
  binlogs: string[];
  /** The backup's GTID position: the replay starts with the first transaction after it. */
  backupPosition: string;
  /** The first transaction replayed (known once the first file is read: not in a dry run). */
  fromGtid?: string;
  /** The GTID state after the replay: the slave's gtid_slave_pos, from which the master serves it. */
  slavePos: string;
  /** Transactions replayed (not in a dry run). */
  transactions?: number;
  /** The master's oldest binlog, and the last GTID before it. */
  masterOldestBinlog: string;
  masterOldestStart: string;
}

/** Pure: describe what makes a target non-empty, or undefined when it is empty. */
export function describeNonEmpty(tables: { s: string; n: number }[]): string | undefined {
  const withTables = tables.filter((t) => t.n > 0);
  if (withTables.length === 0) return undefined;
  const list = withTables.slice(0, 5).map((t) => `${t.s} (${t.n} table${t.n === 1 ? "" : "s"})`).join(", ");
  return `${withTables.length} database${withTables.length === 1 ? "" : "s"} with tables: ${list}${withTables.length > 5 ? ", ..." : ""}`;
}

/** The stored object, verified and decompressed as it streams. A corrupt object fails the stream with CorruptBackup. */
export interface VerifiedInput {
  input: Readable;
  counter: ByteCounter;
  /** The first stream error: a corrupt object beats the loader's complaint about the garbage it was fed. */
  streamError(): unknown;
  /**
   * After the loader is done: an error when fewer raw bytes came out than the
   * manifest recorded. zlib's zstd decoder ends quietly on a stream cut at a
   * frame boundary, so a short object whose manifest matches it would
   * otherwise pass as complete.
   */
  shortRead(): Error | undefined;
  /**
   * After a loader failed: read on a little (at most `maxBytes` more, `maxMs`)
   * so that damage just past what the loader saw is still reported as damage
   * (a loader often trips over bad bytes a block before the decoder's or the
   * sha256's check does), then stop reading storage: every stage and the
   * download are destroyed. A large object is never downloaded to the end
   * for a failed restore.
   */
  drainBrieflyThenClose(maxBytes: number, maxMs: number): Promise<void>;
}

export async function openBackupInput(repo: Repository, chosen: BackupEntry): Promise<VerifiedInput> {
  const manifest = chosen.manifest;
  const object = manifest.objects[0];
  if (!object) throw badInput("CorruptManifest", `backup ${chosen.name} lists no objects`);
  const counter = new ByteCounter();
  const stored = await repo.openVerified(chosen.name, object.name, manifest);
  const decompress = createDecompressor(manifest.compression);
  let streamError: unknown;
  // Only the decoder's own complaints are verdicts on the bytes; a stream
  // destroyed or closed early (the loader finished or failed, the download
  // broke) is an echo of something else and says nothing about the object.
  decompress.on("error", (err) => {
    if (isStreamEcho(err)) return;
    streamError ??= failed("CorruptBackup", `backup ${chosen.name}: ${object.name} does not decompress (${err.message}); the stored object is corrupt`, { cause: err });
  });
  stored.on("error", (err) => {
    if (!isStreamEcho(err)) streamError ??= err;
  });
  // One pipeline: an error in any stage (a storage fault, a corrupt object)
  // destroys the others, and destroying the output (a failed loader) stops
  // the download at once.
  const input = new PassThrough({ highWaterMark: 1024 * 1024 });
  pipeline(stored, decompress, counter, input).catch((err: unknown) => {
    if (!isStreamEcho(err)) streamError ??= err;
  });
  const shortRead = (): Error | undefined =>
    object.rawSize !== undefined && counter.bytes < object.rawSize
      ? failed("CorruptBackup", `backup ${chosen.name}: ${object.name} decompressed to ${counter.bytes} bytes but the manifest says ${object.rawSize}; the stored object is truncated`)
      : undefined;
  const close = (): void => {
    input.destroy();
    stored.destroy();
  };
  const drainBrieflyThenClose = async (maxBytes: number, maxMs: number): Promise<void> => {
    if (streamError === undefined && !input.readableEnded && !input.destroyed) {
      input.unpipe();
      await drainAtMost(input, maxBytes, maxMs);
    }
    close();
  };
  return { input, counter, streamError: () => streamError, shortRead, drainBrieflyThenClose };
}

/** How far a failed restore reads on to tell a damaged object from a loader error, before it stops reading storage. */
const DRAIN_AFTER_FAILURE_BYTES = 32 * 1024 * 1024;
const DRAIN_AFTER_FAILURE_MS = 10_000;

/**
 * Run a loader over a verified input: a corrupt object or a storage fault is
 * reported as such, whatever the loader said about the bytes it was fed. A
 * failed loader stops the download at once; when the object's damage was not
 * seen before the loader gave up, the message says how to check it.
 */
export async function loadVerified<T>(v: VerifiedInput, load: (input: Readable) => Promise<T>, backup: string): Promise<T> {
  const fromStorage = (): Error | undefined => {
    const e = v.streamError();
    if (e === undefined || !isReplicatorError(e)) return undefined;
    return e;
  };
  let out: T;
  try {
    out = await load(v.input);
  } catch (err) {
    await v.drainBrieflyThenClose(DRAIN_AFTER_FAILURE_BYTES, DRAIN_AFTER_FAILURE_MS);
    const cause = fromStorage();
    if (cause) throw cause;
    if (isReplicatorError(err)) throw err;
    throw failed("LoadFailed", `${oneLine(err)} (if the stored backup is suspect, \`replicator verify ${backup}\` checks it)`, { cause: err });
  }
  const c = fromStorage() ?? v.shortRead();
  if (c) throw c;
  return out;
}

/**
 * The piped load: storage → sha256/size check (in the agent, on the
 * compressed bytes) → `zstd -d` → an OS pipe → the method's loader, with
 * the raw bytes never in the agent, as `zstd -dc | mariadb` in a shell.
 * Reported as loadVerified reports: a storage fault or a failed check beats
 * everything (after a failed loader, storage is read on a little so that
 * damage just past what the loader saw still counts); then a zstd that could
 * not decode its input (CorruptBackup); then the loader's own error; and an
 * object that decodes to fewer raw bytes than the manifest recorded is
 * truncated. Returns the raw size.
 */
export async function loadPiped<C extends { signal: AbortSignal; log: Logger }>(
  repo: Repository,
  chosen: BackupEntry,
  startLoader: (ctx: C) => Promise<PipedLoader>,
  ctx: C,
  progress: boolean,
): Promise<number> {
  const object = chosen.manifest.objects[0];
  if (!object) throw badInput("CorruptManifest", `backup ${chosen.name} lists no objects`);
  const stored = await repo.openVerified(chosen.name, object.name, chosen.manifest);
  let streamError: unknown;
  stored.on("error", (err) => {
    if (!isStreamEcho(err)) streamError ??= err;
  });
  let loader: PipedLoader;
  try {
    loader = await startLoader(ctx);
  } catch (err) {
    stored.destroy();
    throw err;
  }
  let zstd: ToolChild;
  try {
    zstd = spawnTool(ZSTD_COMMAND, buildZstdDecompressArgs(), { stdin: "pipe", stdout: loader.inProcess ? "pipe" : loader.stdin, signal: ctx.signal, what: "decompress the backup" });
  } catch (err) {
    // The loader's pipe is gone when the loader could not start: its own error says why.
    stored.destroy();
    loader.kill();
    loader.stdin.destroy();
    await loader.done;
    throw err;
  }
  if (loader.inProcess && zstd.stdout) {
    // A loader that stops reading (it failed) closes zstd's output too, so zstd stops.
    pipeline(zstd.stdout, loader.stdin).catch(() => { zstd.stdout?.destroy(); });
  } else {
    // This process's copy of the loader's stdin: the loader sees the end when zstd exits.
    loader.stdin.destroy();
  }
  const feed = feedInto(stored, zstd.stdin);
  const stopProgress = progress ? startProgress(`restore ${chosen.name}`, () => feed.bytes()) : () => undefined;
  const [exit, loaderError] = await Promise.all([zstd.exit, loader.done.then(() => undefined, (e: unknown) => e)]).finally(stopProgress);
  if (loaderError !== undefined) await feed.drainThenClose(DRAIN_AFTER_FAILURE_BYTES, DRAIN_AFTER_FAILURE_MS);
  else feed.close();
  if (isReplicatorError(streamError)) throw streamError;
  const zstdFailed = exit.exitCode !== 0;
  if (zstdFailed && isZstdInputError(exit)) {
    const why = tail(exit.stderr, 400).split("\n").filter((l) => l.trim() && !l.startsWith("***")).pop()?.trim() ?? `exit code ${String(exit.exitCode)}`;
    throw failed("CorruptBackup", `backup ${chosen.name}: ${object.name} does not decompress (zstd: ${why}); the stored object is corrupt`, { detail: exit.stderr });
  }
  if (loaderError !== undefined) {
    if (isReplicatorError(loaderError)) throw loaderError;
    throw failed("LoadFailed", `${oneLine(loaderError)} (if the stored backup is suspect, \`replicator verify ${chosen.name}\` checks it)`, { cause: loaderError });
  }
  if (zstdFailed) await zstd.done;
  if (streamError !== undefined) throw failed("StorageError", `backup ${chosen.name}: reading ${object.name} failed (${oneLine(streamError)})`, { cause: streamError });
  const raw = parseZstdDecompressSummary(exit.stderr);
  if (raw === undefined) ctx.log.warn({ stderr: exit.stderr.slice(-300) }, "zstd printed no byte count; the raw size is not checked");
  if (raw !== undefined && object.rawSize !== undefined && raw < object.rawSize) {
    throw failed("CorruptBackup", `backup ${chosen.name}: ${object.name} decompressed to ${raw} bytes but the manifest says ${object.rawSize}; the stored object is truncated`);
  }
  return raw ?? object.rawSize ?? 0;
}

/** The piped shape of a method that reads its input as a stream: it reads the decompressor's output in this process. */
function loaderInAgent(method: ServerRestoreMethod): (ctx: RestoreContext) => Promise<PipedLoader> {
  return (ctx) => {
    const input = new PassThrough({ highWaterMark: 1024 * 1024 });
    const done = method.restore(ctx, input).catch((err: unknown) => {
      input.destroy();
      throw err;
    });
    done.catch(() => undefined);
    return Promise.resolve({ stdin: input, done, kill: () => { input.destroy(); }, inProcess: true });
  };
}

/** Lets `stream` flow (its bytes dropped) until `maxBytes` have passed, `maxMs` have elapsed, or it ends, fails or closes. */
function drainAtMost(stream: Readable, maxBytes: number, maxMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    let seen = 0;
    const done = (): void => {
      clearTimeout(timer);
      stream.off("data", onData);
      resolve();
    };
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen >= maxBytes) done();
    };
    const timer = setTimeout(done, maxMs);
    stream.on("data", onData);
    stream.once("end", done);
    stream.once("error", done);
    stream.once("close", done);
    stream.resume();
  });
}

/**
 * Writes `source` into `sink` with backpressure. A sink that fails (its
 * reader died) leaves the source paused; a source that fails closes the
 * sink, so its reader sees the end (and a cut stream as cut).
 */
function feedInto(source: Readable, sink: Writable | null): { bytes(): number; close(): void; drainThenClose(maxBytes: number, maxMs: number): Promise<void> } {
  let bytes = 0;
  let open = sink !== null;
  const closeSink = (): void => {
    open = false;
    sink?.destroy();
  };
  sink?.on("error", () => {
    open = false;
    source.pause();
  });
  const onData = (chunk: Buffer): void => {
    bytes += chunk.length;
    if (!open || !sink) return;
    if (!sink.write(chunk)) {
      source.pause();
      sink.once("drain", () => { if (open) source.resume(); });
    }
  };
  source.on("data", onData);
  source.once("end", () => { if (open) sink?.end(); });
  source.once("error", closeSink);
  // A small object can fail its check (and be destroyed) before the loader has started: then
  // no "error" comes any more, and the decompressor must still see the end of its input.
  if (source.destroyed && !source.readableEnded) closeSink();
  const close = (): void => {
    closeSink();
    source.destroy();
  };
  const drainThenClose = async (maxBytes: number, maxMs: number): Promise<void> => {
    closeSink();
    if (!source.readableEnded && !source.destroyed) await drainAtMost(source, maxBytes, maxMs);
    source.destroy();
  };
  return { bytes: () => bytes, close, drainThenClose };
}

function requirePosition(manifest: Manifest, name: string): ReplicationPosition {
  if (!hasPosition(manifest.replication)) {
    throw badInput("NoPosition", `backup ${name} recorded no replication position (its source had binary logging or WAL archiving off); it cannot seed a replica`);
  }
  return manifest.replication;
}

export async function runRestore(req: RestoreRequest): Promise<RestoreResult> {
  await req.repo.store.check();
  // The lease is part of the choice: a backup chosen but deleted (by
  // retention or `delete`) before its lease was written is chosen again
  // from a fresh listing, never reported as damaged.
  for (let attempt = 0; ; attempt++) {
    const chosen = await chooseBackup(req);
    let lease: LeaseHandle;
    try {
      lease = await req.repo.acquireLease(chosen.name, "restore", `${hostname()}:${process.pid}`);
    } catch (err) {
      if (isReplicatorError(err) && err.reason === "BackupGone" && req.selector.kind !== "name" && attempt < 3) {
        req.log.warn({ backup: chosen.name }, "the chosen backup was deleted while the restore chose it; choosing again");
        continue;
      }
      throw err;
    }
    // A restore whose lease cannot be renewed stops: its backup may be deleted under it.
    const signal = AbortSignal.any([req.signal, lease.signal]);
    try {
      return await restoreChosen({ ...req, signal }, chosen);
    } catch (err) {
      throw lease.signal.aborted && isReplicatorError(lease.signal.reason) ? lease.signal.reason : err;
    } finally {
      await lease.release().catch((err: unknown) => { req.log.warn({ err }, "could not release the restore lease; it expires by itself"); });
    }
  }
}

/** The backup a restore uses. A storage fault while listing is thrown as it is: never "no backup", never an older one. */
async function chooseBackup(req: RestoreRequest): Promise<BackupEntry> {
  const { backups, corrupt } = await req.repo.list();
  const sel = req.selector;
  if (sel.kind === "name") {
    const bad = corrupt.find((c) => c.name === sel.name);
    if (bad) throw badInput(bad.reason, `backup ${sel.name} cannot be restored: ${bad.error}`);
    return selectBackup(backups, sel, req.repo.where);
  }
  // Volume snapshots live in the cluster, not in the repository's objects: "latest" and
  // "before" mean the latest restorable here (a snapshot named explicitly is explained later).
  const restorable = backups.filter((b) => b.manifest.kind !== "snapshot");
  const pick = restorable.length > 0 ? selectBackup(restorable, sel, req.repo.where) : undefined;
  // "latest" must never quietly mean "an older one": an unusable backup newer than the pick is an error.
  const newest = corrupt
    .filter((c) => (pick === undefined || c.name > pick.name) && (sel.kind !== "before" || (parseBackupName(c.name)?.time.getTime() ?? 0) <= sel.time.getTime()))
    .at(-1);
  if (newest) {
    throw failed(
      newest.reason,
      `the newest backup${sel.kind === "before" ? " before that time" : ""}, ${newest.name}, cannot be used (${newest.error}); name the one to restore with --backup${pick ? ` (e.g. --backup ${pick.name}, the newest usable)` : ""}, or fix or delete ${newest.name}`,
    );
  }
  return pick ?? selectBackup(restorable, sel, req.repo.where);
}

async function restoreChosen(req: RestoreRequest, chosen: BackupEntry): Promise<RestoreResult> {
  if (chosen.manifest.kind === "snapshot") {
    throw badInput(
      "SnapshotBackup",
      `backup ${chosen.name} is a volume snapshot: restore it into a new PVC with a ReplicatorRestore that sets spec.volume (docs/volumesnapshot.md)`,
    );
  }
  const method = req.resolveMethod ? req.resolveMethod(chosen.manifest.method, chosen.name) : getMethod(chosen.manifest.method);
  for (const [what, e] of [["--target", req.target], ["--replicate-from", req.replicateFrom]] as const) {
    if (e && e.engine !== method.engine) {
      throw badInput("EngineMismatch", `backup ${chosen.name} is a ${method.engine} backup (${method.name}) but ${what} is a ${e.engine} server`);
    }
  }
  // The method's options, before anything touches the target (as a backup checks them before it starts).
  method.validateOptions(req.methodOptions ?? {});
  const partial = ["restoreDatabases", "restoreTables"].filter((k) => req.methodOptions?.[k] !== undefined);
  if (partial.length > 0) {
    const flags = partial.map((k) => (k === "restoreTables" ? "--tables" : "--databases")).join(" and ");
    if (method.restoreInto !== "server" || !method.partialRestore) {
      throw badInput("PartialRestoreUnsupported", `backup ${chosen.name} (${method.name}) can only be restored whole; ${flags} needs a mysqldump_parallel backup (or restore this one into a scratch server and copy what you need)`);
    }
    if (req.replicateFrom) throw badInput("InvalidArguments", `${flags} restores part of a backup, which cannot seed a replica; drop --replicate-from, or restore the whole backup`);
  }
  if (method.restoreInto === "datadir") {
    if (!req.datadir) {
      throw badInput(
        "DatadirRequired",
        `backup ${chosen.name} is physical (${method.name}): stop the server and restore into its data directory with --datadir DIR`,
      );
    }
    const replicateFrom = req.replicateFrom;
    const t0 = Date.now();
    let bridgePlan: BridgePlan | undefined;
    if (replicateFrom && !req.skipBinlogCheck) {
      bridgePlan = await requireServable(req.repo, replicateFrom, requirePosition(chosen.manifest, chosen.name), chosen.name);
      if (bridgePlan && !method.withTemporaryServer) {
        throw badInput(
          "BridgeNeedsServer",
          `cannot seed a replica from ${chosen.name}: the master has purged binlogs its position needs (its oldest, ${bridgePlan.master.oldestFile}, begins after GTID ${bridgePlan.master.oldestStart}); ` +
            `the binlog archive ${bridgePlan.where} holds them (${bridgePlan.files.map((f) => f.file).join(", ")}), but replaying them needs a server on the restored data, which the ${method.name} method cannot run: ` +
            "seed from a logical backup (restore --target ... --replicate-from bridges the gap), or take a new backup",
        );
      }
    }
    if (req.dryRun) return dryRunResult(req, chosen, req.datadir, bridgePlan, [], t0);
    if (!bridgePlan) return restoreDatadir({ ...req, datadir: req.datadir, method, chosen });
    // The bridge is downloaded and checked before anything is written; it is
    // replayed through a temporary server on the prepared data directory,
    // before the replica configuration (which then starts at its end state).
    const bridge = await prepareBridge(req.repo, bridgePlan);
    req.log.info({ archive: bridgePlan.where, binlogs: bridge.files.length, from: bridge.fromGtid, slavePos: bridgePlan.endState }, "the master has purged binlogs the backup needs: the binlog archive bridges them");
    try {
      const datadirReplay: DatadirReplay = async (server, position) => {
        await replayBridge(bridge, server.endpoint, req.signal, (cause) => `replaying the archived binlogs that bridge ${chosen.name} to the master failed: ${cause.message}`, { flushPrivileges: true });
        // The data is now at the bridge's end state, in GTIDs only (the backup's file/position are behind it).
        return { role: position?.role ?? "master", gtid: bridgePlan.endState, ...(position?.sourceServerId !== undefined ? { sourceServerId: position.sourceServerId } : {}) };
      };
      const result = await restoreDatadir({ ...req, datadir: req.datadir, method, chosen, datadirReplay });
      return { ...result, bridge: describeBridge(bridgePlan, bridge) };
    } finally {
      await bridge.cleanup();
    }
  }
  if (!req.target) {
    throw badInput(
      "TargetRequired",
      `backup ${chosen.name} is logical (${method.name}): it loads into a running server; pass --target ${method.engine === "postgresql" ? "postgresql" : "mysql"}://USER@HOST:PORT`,
    );
  }
  return restoreIntoServer(req, req.target, method, chosen);
}

/**
 * Can the master serve the backup's position? Undefined when it can; the
 * bridge over the binlog archive when it has purged binlogs the position
 * needs and the archive holds them (GTID positions only); BinlogsPurged,
 * naming the missing range, when neither holds them. A storage fault reading
 * the archive is thrown as it is.
 */
async function requireServable(repo: Repository, master: Endpoint, pos: ReplicationPosition, name: string): Promise<BridgePlan | undefined> {
  const check = await checkCanServe(master, pos);
  if (check.ok) return undefined;
  if (!check.purged || !pos.gtid) throw badInput("BinlogsPurged", `cannot seed a replica from ${name}: ${check.reason ?? "the master cannot serve its position"}`);
  return planSeedBridge(repo, check.purged, pos.gtid, name);
}

function describeBridge(plan: BridgePlan, prepared?: PreparedBridge): SeedBridge {
  return {
    // Stitched across a switchover: each file named with its server's archive.
    archive: plan.legs && plan.legs.length > 1 ? plan.legs.map((l) => l.where).join(" then ") : plan.where,
    binlogs: plan.legs && plan.legs.length > 1 ? plan.legs.flatMap((l) => l.files.map((f) => `${l.serverId}/${f.object}`)) : plan.files.map((f) => f.file),
    backupPosition: plan.from,
    ...(prepared ? { fromGtid: prepared.fromGtid, transactions: prepared.transactions } : {}),
    slavePos: plan.endState,
    masterOldestBinlog: plan.master.oldestFile,
    masterOldestStart: plan.master.oldestStart,
  };
}

/** --dry-run: what a restore would do, after every check it makes before loading. */
function dryRunResult(req: RestoreRequest, chosen: BackupEntry, target: string, bridge: BridgePlan | undefined, warnings: string[], t0: number): RestoreResult {
  return {
    operation: "restore",
    name: chosen.name,
    repository: req.repo.where,
    method: chosen.manifest.method,
    target,
    rawSize: 0,
    replication: chosen.manifest.replication,
    replicating: false,
    ...(req.replicateFrom ? { replicatingFrom: describeEndpoint(req.replicateFrom) } : {}),
    ...(bridge ? { bridge: describeBridge(bridge) } : {}),
    dryRun: true,
    durationMs: Date.now() - t0,
    warnings,
  };
}

async function restoreIntoServer(req: RestoreRequest, target: Endpoint, method: BackupMethod, chosen: BackupEntry): Promise<RestoreResult> {
  if (method.restoreInto !== "server") throw new Error("unreachable");
  const t0 = Date.now();
  const warnings: string[] = [];
  const manifest = chosen.manifest;
  const log = req.log.child({ backup: chosen.name, target: describeEndpoint(target) });
  const t = await restoreTargetFor(target);

  // The target: reachable, and empty unless --force.
  const state = await t.inspect();
  const nonEmpty = describeNonEmpty(state.tables);
  if (state.redo) warnings.push("the target holds an unfinished restore (its sentinel was found); it is redone");
  if (nonEmpty && !req.force && !state.redo) {
    throw badInput(
      "TargetNotEmpty",
      `target ${describeEndpoint(target)} is not empty (${nonEmpty}); restore into an empty server, or pass --force to overwrite the databases in the backup`,
    );
  }
  const only = req.methodOptions?.restoreTables ?? req.methodOptions?.restoreDatabases;
  const onlyText = Array.isArray(only) ? only.join(",") : typeof only === "string" ? only : undefined;
  if (nonEmpty && !state.redo) warnings.push(`target was not empty (${nonEmpty}); ${onlyText !== undefined ? `only ${onlyText} replaced` : "databases in the backup were replaced"}`);
  if (req.methodOptions?.restoreTables !== undefined) warnings.push("--tables loads the tables' structure and rows, not their triggers (restore the whole database for those)");

  // Before loading anything: can the master still serve the backup's position,
  // or can the binlog archive bridge what it has purged?
  const replicateFrom = req.replicateFrom;
  let bridgePlan: BridgePlan | undefined;
  if (replicateFrom) {
    if (target.engine !== "mysql") {
      throw badInput("CannotSeed", `a logical ${method.name} backup cannot seed a ${target.engine} standby; use a physical backup (pg_basebackup) for that`);
    }
    const pos = requirePosition(manifest, chosen.name);
    if (!req.skipBinlogCheck) bridgePlan = await requireServable(req.repo, replicateFrom, pos, chosen.name);
  }

  // Destructive steps last, checked first: before anything is stopped or
  // dropped, prove the target user can recreate what the load drops.
  await t.checkCanRestore();
  if (req.dryRun) return dryRunResult(req, chosen, describeEndpoint(target), bridgePlan, warnings, t0);

  // The bridge is downloaded and checked before anything is loaded: a missing
  // or damaged archive file leaves the target as it was.
  const bridge = bridgePlan ? await prepareBridge(req.repo, bridgePlan) : undefined;
  if (bridge) log.info({ archive: bridge.plan.where, binlogs: bridge.files.length, from: bridge.fromGtid, slavePos: bridge.plan.endState }, "the master has purged binlogs the backup needs: the binlog archive bridges them");
  try {
    if (state.isReplica) {
      await t.stopReplication();
      if (!replicateFrom) warnings.push("replication on the target was stopped for the restore and left stopped; use --replicate-from to start it at the backup's position");
    }
    await t.markStarted(chosen.name);
    log.info({ object: manifest.objects[0]?.name, size: manifest.objects[0]?.size }, "restore started");
    const ctx: RestoreContext = { target, manifest, options: req.methodOptions ?? {}, log, signal: req.signal };
    // Decompressed by the zstd tool; a method without a loader of its own reads the tool's output here.
    const startLoader = manifest.compression === "zstd" && (await zstdToolAvailable(log)) ? (method.startLoader?.bind(method) ?? loaderInAgent(method)) : undefined;
    let rawSize: number;
    try {
      if (startLoader) {
        rawSize = await loadPiped(req.repo, chosen, startLoader, ctx, req.progress === true);
      } else {
        const v = await openBackupInput(req.repo, chosen);
        const stopProgress = req.progress ? startProgress(`restore ${chosen.name}`, () => v.counter.bytes) : () => undefined;
        try {
          await loadVerified(v, (input) => method.restore(ctx, input), chosen.name);
        } finally {
          stopProgress();
        }
        rawSize = v.counter.bytes;
      }
    } catch (err) {
      throw partialTarget(err, `target ${describeEndpoint(target)}`, "the restore sentinel marks it; run the same restore again to redo it (it overwrites the partial data)");
    }
    log.info({ rawSize, piped: startLoader !== undefined }, "data loaded");

    let replicating = false;
    let secondsBehindMaster: number | null | undefined;
    if (replicateFrom && manifest.replication) {
      let pos = manifest.replication;
      if (bridge) {
        try {
          await replayBridge(bridge, target, req.signal, (cause) => `replaying the archived binlogs that bridge ${chosen.name} to the master failed: ${cause.message}`);
        } catch (err) {
          throw partialTarget(err, `target ${describeEndpoint(target)}`, "it holds the backup and part of the bridge and does not replicate; the restore sentinel marks it: run the same restore again to redo it");
        }
        log.info({ transactions: bridge.transactions, slavePos: bridge.plan.endState }, "bridge replayed");
        // Replication resumes exactly after the last bridged transaction.
        pos = { ...pos, gtid: bridge.plan.endState };
      }
      const st = await withConn(target, "start replication", (c) =>
        configureReplica(c, replicateFrom, pos, { timeoutMs: req.replicationTimeoutMs ?? 60_000 }),
      );
      replicating = true;
      secondsBehindMaster = st.secondsBehindMaster;
      log.info({ master: describeEndpoint(replicateFrom), lag: st.secondsBehindMaster }, "replicating");
    }
    await t.markFinished();
    const result: RestoreResult = {
      operation: "restore",
      name: chosen.name,
      repository: req.repo.where,
      method: manifest.method,
      target: describeEndpoint(target),
      rawSize,
      replication: manifest.replication,
      replicating,
      durationMs: Date.now() - t0,
      warnings,
    };
    if (replicateFrom) {
      result.replicatingFrom = describeEndpoint(replicateFrom);
      result.secondsBehindMaster = secondsBehindMaster ?? null;
    }
    if (bridge) result.bridge = describeBridge(bridge.plan, bridge);
    return result;
  } finally {
    await bridge?.cleanup();
  }
}

/** A load that failed midway: the message says the target is partial and how to redo it. */
export function partialTarget(err: unknown, what: string, redo: string): Error {
  const message = `restore failed midway and ${what} is now partial: ${oneLine(err)}; ${redo}`;
  if (isReplicatorError(err)) return err.kind === "BadInput" ? badInput(err.reason, message, { cause: err }) : failed(err.reason, message, { cause: err });
  return failed("RestoreFailed", message, { cause: err });
}
