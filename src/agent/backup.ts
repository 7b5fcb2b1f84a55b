// One backup: method stream → compression → sha256 → storage, then the
// manifest (the commit point), then retention. Nothing is staged locally.
//
// The name is claimed before any byte is written (a create-only object), and
// the manifest is written create-only too: two backups started in the same
// second never share a name, and one never overwrites the other.
import { createHash } from "node:crypto";
import { hostname } from "node:os";
import { PassThrough, Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badInput, failed, isReplicatorError, isStreamEcho, ReplicatorError } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import type { Endpoint } from "../db/endpoint.js";
import { queryRows, withConn } from "../db/connection.js";
import type { BackupContext, BackupMethod, BackupOutcome, PipedBackupRun, PipedSink } from "../plugins/contract.js";
import { getMethod } from "../plugins/registry.js";
import {
  FORMAT_VERSION,
  buildBackupName,
  defaultSourceName,
  HEARTBEAT,
  parseBackupName,
  REPLICATION_MARKER,
  validateSourceName,
  type Compression,
  type Manifest,
  type ReplicationPosition,
  type RetentionPlan,
} from "../storage/catalog.js";
import type { Repository } from "../storage/repository.js";
import { spawnTool } from "../lib/exec.js";
import {
  buildZstdCompressArgs,
  compressionExtension,
  createCompressor,
  parseZstdCompressSummary,
  ZSTD_COMMAND,
  ZSTD_LEVEL,
  ZstdHeadReader,
  zstdToolAvailable,
} from "./compression.js";
import { ByteCounter, startProgress } from "./progress.js";
import { followFile } from "../storage/fs/follow.js";
import { SYNC_EVERY } from "../storage/fs/synced-writer.js";
import { TOOL_NAME, TOOL_VERSION } from "./version.js";

export interface BackupRequest {
  repo: Repository;
  source: Endpoint;
  /** The name that goes into the backup name; defaults to the source's host and port (`db-0.db-3306`). */
  sourceName?: string | undefined;
  /** Expected stored size in bytes (sizes S3 multipart parts); estimated from the source when absent. */
  expectedSize?: number | undefined;
  method: string;
  methodOptions: Record<string, unknown>;
  compression: Compression;
  /** Apply retention after a successful backup. */
  retain?: number | undefined;
  progress?: boolean;
  log: Logger;
  signal: AbortSignal;
  now?: () => Date;
  /** Resolve a method by name (the conformance kit passes third-party plugins here). */
  resolveMethod?: (name: string) => BackupMethod;
}

export interface BackupResult {
  operation: "backup";
  name: string;
  repository: string;
  method: string;
  role: string;
  size: number;
  rawSize: number;
  sha256: string;
  replication: ReplicationPosition | undefined;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  warnings: string[];
  pruned: string[];
  /** Archived binlogs (`serverId/file`) that retention removed after the backups it pruned. */
  prunedBinlogs: string[];
}

export async function runBackup(req: BackupRequest): Promise<BackupResult> {
  const now = req.now ?? (() => new Date());
  const method = (req.resolveMethod ?? getMethod)(req.method);
  if (req.source.engine !== method.engine) {
    throw badInput("EngineMismatch", `method ${method.name} backs up ${method.engine} servers but --source is a ${req.source.engine} server`);
  }
  method.validateOptions(req.methodOptions);
  if (req.retain !== undefined && (!Number.isInteger(req.retain) || req.retain < 1)) {
    throw badInput("InvalidRetention", `--retain must be a whole number >= 1 (got ${req.retain})`);
  }
  const sourceName = req.sourceName !== undefined ? validateSourceName(req.sourceName) : defaultSourceName(req.source.host, req.source.port);
  // What the byte path needs is found out beside the repository's bookkeeping,
  // not after it: whether the zstd tool runs (a spawn), and, for a store that
  // uploads (S3 part sizes), the source's size (a query). Neither rejects. A
  // store that writes locally has no use for the size, so the source is not asked.
  const zstdTool = req.compression === "zstd" ? zstdToolAvailable(req.log) : Promise.resolve(false);
  await req.repo.store.check();
  const sizeEstimate =
    req.expectedSize !== undefined || req.repo.store.openLocalWrite !== undefined ? Promise.resolve(req.expectedSize) : estimateSourceSize(req.source, req.log);
  const earlier = await staleReplicationMarkers(req.repo, sourceName);

  const { name, started } = await claimUniqueName(req.repo, method.name, sourceName, now);
  const objectName = `data.${method.extension}${compressionExtension(req.compression)}`;
  const log = req.log.child({ backup: name });
  log.info({ repository: req.repo.where, method: method.name }, "backup started");
  const warnings: string[] = [];
  for (const m of earlier) {
    const w = `an earlier backup of this server (${m.backup}) stopped replication at ${m.at} and never finished (killed?); it did not restart replication, and neither does this one: check \`SHOW SLAVE STATUS\` and run \`replicator online\` if it should replicate`;
    warnings.push(w);
    log.warn({ marker: m.key }, w);
    // Said once: the marker goes, so the next backup does not repeat it.
    await req.repo.store.delete([m.key]).catch((err: unknown) => { log.warn({ err }, "could not remove the replication marker"); });
  }

  // While a slave's replication is stopped by this backup, a marker in the
  // repository says so; a killed run leaves it for the next one to report.
  const markerKey = req.repo.key(name, REPLICATION_MARKER);
  const replication = {
    stopped: async (info: { threads: ("io" | "sql")[]; at: string }): Promise<void> => {
      const marker: ReplicationMarker = { source: sourceName, backup: name, threads: info.threads, at: info.at, holder: `${hostname()}:${process.pid}` };
      await req.repo.store.put(markerKey, JSON.stringify(marker));
    },
    restarted: async (): Promise<void> => {
      await req.repo.store.delete([markerKey]);
    },
  };

  // While it runs, the backup refreshes a heartbeat under its prefix: prune
  // abandons an incomplete backup only after 6 h without one, so a long
  // backup is never deleted under itself.
  const heartbeatKey = req.repo.key(name, HEARTBEAT);
  const beat = (): Promise<void> =>
    req.repo.store.put(heartbeatKey, JSON.stringify({ holder: `${hostname()}:${process.pid}`, at: new Date().toISOString() })).then(
      () => undefined,
      (err: unknown) => { log.warn({ err }, "could not refresh the backup's heartbeat"); },
    );
  await beat();
  const heartbeat = setInterval(() => void beat(), HEARTBEAT_EVERY_MS);
  heartbeat.unref();
  try {
    return await backupClaimed();
  } finally {
    clearInterval(heartbeat);
    await req.repo.store.delete([heartbeatKey]).catch((err: unknown) => { log.warn({ err }, "could not remove the backup's heartbeat"); });
  }

  async function backupClaimed(): Promise<BackupResult> {
    const expectedSize = await sizeEstimate;
    const ctx: BackupContext = { source: req.source, options: req.methodOptions, log, signal: req.signal, replication };
    const key = req.repo.key(name, objectName);
    const progressLabel = `backup ${name}`;
    const tool = await zstdTool;
    // A method with backupPiped writes into the zstd tool itself (mariabackup, pg_basebackup); a
    // logical method that streams through the agent is compressed by the zstd tool too (fed from
    // here). A physical method without backupPiped keeps zlib.
    const backupPiped = tool ? (method.backupPiped?.bind(method) ?? (method.kind === "logical" ? fedFromAgent(method) : undefined)) : undefined;
    const piped = backupPiped !== undefined;
    const sent = backupPiped
      ? await transferPiped(backupPiped, ctx, req, key, expectedSize, progressLabel, method.backupPiped === undefined)
      : await transferStreamed(method, ctx, req, key, expectedSize, progressLabel);
    const { outcome, sha256 } = sent;
    const finished = now();
    const manifest: Manifest = {
      formatVersion: FORMAT_VERSION,
      name,
      cluster: req.repo.cluster,
      method: method.name,
      kind: method.kind,
      source: {
        host: req.source.host,
        port: req.source.port,
        role: outcome.role,
        serverId: outcome.serverId,
        version: outcome.version,
      },
      startedAt: started.toISOString(),
      finishedAt: finished.toISOString(),
      compression: req.compression,
      objects: [{ name: objectName, size: sent.size, sha256, ...(sent.rawSize !== undefined ? { rawSize: sent.rawSize } : {}) }],
      details: outcome.details,
      tool: { name: TOOL_NAME, version: TOOL_VERSION },
    };
    if (outcome.replication) manifest.replication = outcome.replication;
    // The commit point: a backup without a manifest does not exist. Create-only:
    // an existing manifest is never overwritten.
    await req.repo.writeManifest(manifest);
    log.info({ size: sent.size, rawSize: sent.rawSize, piped, replication: outcome.replication }, "backup completed");

    let plan: RetentionPlan | undefined;
    let prunedBinlogs: string[] = [];
    if (req.retain !== undefined) {
      // Backups and the binlog archive together, as `replicator prune` does.
      const { pruneWithArchive } = await import("../pitr/retention.js");
      const r = await pruneWithArchive(req.repo, { retain: req.retain }).catch((err: unknown) => {
        // The backup itself is whole and committed: say so, with the fault as it is.
        if (!isReplicatorError(err)) throw err;
        throw new ReplicatorError(err.kind, err.reason, `backup ${name} completed, but retention failed: ${err.message}`, { cause: err });
      });
      plan = r.plan;
      prunedBinlogs = r.binlogs.deleted.map((d) => `${String(d.serverId)}/${d.file}`);
      if (plan.expire.length > 0 || prunedBinlogs.length > 0) log.info({ deleted: plan.expire, binlogsDeleted: prunedBinlogs }, "retention applied");
    }
    return {
      operation: "backup",
      name,
      repository: req.repo.where,
      method: method.name,
      role: outcome.role,
      size: sent.size,
      rawSize: sent.rawSize ?? 0,
      sha256,
      replication: outcome.replication,
      startedAt: manifest.startedAt,
      finishedAt: manifest.finishedAt,
      durationMs: finished.getTime() - started.getTime(),
      warnings: [...warnings, ...outcome.warnings],
      pruned: plan?.expire ?? [],
      prunedBinlogs,
    };
  }
}

const HEARTBEAT_EVERY_MS = 10 * 60 * 1000;

/** What a transfer stored: the object's size and sha256, the raw size when known, and the method's outcome. */
interface Transferred {
  size: number;
  sha256: string;
  rawSize: number | undefined;
  outcome: BackupOutcome;
}

/**
 * The in-process transfer: method stream → compression (zlib) → sha256 →
 * storage. Every method and compression can take it.
 */
async function transferStreamed(
  method: BackupMethod,
  ctx: BackupContext,
  req: BackupRequest,
  key: string,
  expectedSize: number | undefined,
  progressLabel: string,
): Promise<Transferred> {
  const run = await method.backup(ctx);
  const raw = new ByteCounter();
  const stored = new ByteCounter();
  const hash = createHash("sha256");
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const stopProgress = req.progress ? startProgress(progressLabel, () => raw.bytes) : () => undefined;
  // The method's stream is a stage: a failure anywhere stops its child too.
  const up = await pipeIntoStore([run.stream, raw, createCompressor(req.compression), hasher, stored], req.repo, key, expectedSize);
  if (!up.ok) {
    stopProgress();
    const methodError = await run.outcome.then(() => undefined, (e: unknown) => e);
    throw chooseCause(up.origin, up.putError, methodError, up.pipeError);
  }
  const outcome = await run.outcome.finally(stopProgress);
  return { size: up.size || stored.bytes, sha256: hash.digest("hex"), rawSize: raw.bytes, outcome };
}

type StoreUpload =
  | { ok: true; size: number }
  | { ok: false; origin: "source" | "storage"; putError: unknown; pipeError: unknown };

/**
 * One pipeline from `stages` into the object `key`: a failure anywhere
 * destroys every stage. Where the first failure came from decides what is
 * reported: the storage side (a full disk, a dead endpoint: the store's own,
 * mapped error) or the source side (the method's or a tool's error). The rest
 * are echoes (broken pipes, premature closes).
 */
async function pipeIntoStore(stages: readonly Readable[], repo: Repository, key: string, expectedSize: number | undefined): Promise<StoreUpload> {
  const body = new PassThrough({ highWaterMark: 1024 * 1024 });
  let origin: "source" | "storage" | undefined;
  for (const st of stages) st.once("error", () => { origin ??= "source"; });
  body.once("error", () => { origin ??= "storage"; });
  const piping = pipeline([...stages, body]);
  const uploading = repo.store.put(key, body, { expectedSize }).catch((err: unknown) => {
    origin ??= "storage";
    body.destroy(err as Error);
    throw err;
  });
  const [pipeResult, putResult] = await Promise.allSettled([piping, uploading]);
  if (pipeResult.status === "fulfilled" && putResult.status === "fulfilled") return { ok: true, size: putResult.value.size };
  return {
    ok: false,
    origin: origin ?? "source",
    putError: putResult.status === "rejected" ? putResult.reason : undefined,
    pipeError: pipeResult.status === "rejected" ? pipeResult.reason : undefined,
  };
}

/**
 * The piped transfer: the method's tool writes into an OS pipe to `zstd -T0`
 * (both children of the agent, like `mariadb-dump | zstd` in a shell). Into
 * a file:// repository zstd writes the object's temp file itself, as `zstd >
 * file` does, and the agent reads it back from the page cache as it grows
 * (one reused buffer), for the sha256 and the background fdatasync; into S3
 * the agent reads zstd's output and uploads it. The raw size comes from
 * zstd's own count; the dump's head (the replication coordinates) is
 * decompressed from the first compressed bytes alone.
 *
 * Failures are reported as by the streamed transfer: the store's error when
 * the storage side failed first (the children are then stopped; a full disk
 * under zstd is StorageFull), otherwise the method's (a failed dump ends
 * zstd's input early, and the object written is never committed: no
 * manifest), or zstd's own.
 */
async function transferPiped(
  backupPiped: (ctx: BackupContext, sink: PipedSink) => Promise<PipedBackupRun>,
  ctx: BackupContext,
  req: BackupRequest,
  key: string,
  expectedSize: number | undefined,
  progressLabel: string,
  fedFromHere = false,
): Promise<Transferred> {
  const local = req.repo.store.openLocalWrite ? await req.repo.store.openLocalWrite(key) : undefined;
  try {
    // Stops both children when the upload fails (or the caller aborts).
    const stop = new AbortController();
    const signal = AbortSignal.any([ctx.signal, stop.signal]);
    const zstd = spawnTool(ZSTD_COMMAND, buildZstdCompressArgs(ZSTD_LEVEL), { stdin: "pipe", stdout: local ? local.fd : "pipe", signal, what: "compress the backup" });
    const head = new ZstdHeadReader(HEAD_BYTES);
    let run: PipedBackupRun;
    try {
      if (!zstd.stdin || (!local && !zstd.stdout)) {
        await zstd.done;
        throw new Error("zstd started without pipes");
      }
      run = await backupPiped({ ...ctx, signal }, { stdout: zstd.stdin, head: () => head.result });
    } catch (err) {
      zstd.kill();
      zstd.stdin?.destroy();
      throw err;
    }
    // This process's copy of the pipe's write end: zstd sees the end of its
    // input when the tool exits. A stream fed from here ends it itself.
    if (!fedFromHere) zstd.stdin.destroy();
    const hash = createHash("sha256");
    let stored = 0;
    const stopProgress = req.progress ? startProgress(progressLabel, () => stored) : () => undefined;
    let size: number;
    if (local) {
      let unsynced = 0;
      const following = followFile(local.path, zstd.exit, (bytes) => {
        hash.update(bytes);
        stored += bytes.length;
        // The buffer is reused: the head reader keeps what it is given.
        if (head.wanting) head.feed(Buffer.from(bytes));
        unsynced += bytes.length;
        if (unsynced >= SYNC_EVERY) {
          unsynced = 0;
          local.syncSoon();
        }
      }).finally(() => { head.end(); });
      following.catch(() => {
        head.abort();
        stop.abort();
      });
      // The follower ends once zstd has exited and its last bytes are read.
      const read = await following.then(() => undefined, (e: unknown) => e);
      if (read !== undefined) throw failed("StorageError", `cannot read back ${local.path} while zstd writes it: ${(read as Error).message}`, { cause: read });
      // A full disk under zstd is the store's verdict, not the dump's broken pipe.
      const exit = await zstd.exit;
      const full = exit.exitCode !== 0 ? local.writeFailure(exit.stderr) : undefined;
      if (full) throw full;
      size = stored;
    } else {
      const tap = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          stored += chunk.length;
          head.feed(chunk);
          cb(null, chunk);
        },
        flush(cb) {
          head.end();
          cb();
        },
      });
      const up = await pipeIntoStore([zstd.stdout as Readable, tap], req.repo, key, expectedSize);
      if (!up.ok) {
        stopProgress();
        head.abort();
        stop.abort();
        const methodError = await run.outcome.then(() => undefined, (e: unknown) => e);
        await zstd.exit;
        throw chooseCause(up.origin, up.putError, methodError, up.pipeError);
      }
      size = up.size || stored;
    }
    // The upload ended because zstd's output did: the dump finished, failed,
    // or was stopped, or zstd itself failed. Only a whole run is committed.
    const [outcome, exit] = await Promise.allSettled([run.outcome.finally(stopProgress), zstd.exit]);
    const zstdExit = exit.status === "fulfilled" ? exit.value : undefined;
    const zstdFailed = zstdExit === undefined || zstdExit.exitCode !== 0;
    // zstd fails by itself only (a dump that fails just ends its input): then it is the cause.
    if (zstdFailed && zstdExit?.canceled !== true) await zstd.done;
    if (outcome.status === "rejected") throw outcome.reason;
    if (zstdFailed) await zstd.done;
    if (!zstdExit) throw new Error("unreachable: zstd's exit is known once it succeeded");
    if (local) size = (await local.commit()).size;
    const counts = parseZstdCompressSummary(zstdExit.stderr);
    if (counts?.compressed !== undefined && counts.compressed !== stored) {
      ctx.log.warn({ zstd: counts.compressed, read: stored }, "zstd counted other compressed bytes than were stored; the raw size is not recorded");
    } else if (counts === undefined) {
      ctx.log.warn({ stderr: zstdExit.stderr.slice(-300) }, "zstd printed no byte counts; the raw size is not recorded");
    }
    const rawSize = counts?.compressed === stored ? counts.raw : undefined;
    return { size, sha256: hash.digest("hex"), rawSize, outcome: outcome.value };
  } catch (err) {
    await local?.abort();
    throw err;
  }
}

/**
 * The piped shape of a method that returns its bytes as a stream: the agent
 * writes them into the zstd tool's stdin (ending it when the stream ends, or
 * cutting it short when the stream fails, so no failed run is committed).
 */
function fedFromAgent(method: BackupMethod): (ctx: BackupContext, sink: PipedSink) => Promise<PipedBackupRun> {
  return async (ctx, sink) => {
    const run = await method.backup(ctx);
    const feeding = pipeline(run.stream, sink.stdout);
    const outcome = Promise.all([run.outcome, feeding]).then(([o]) => o);
    outcome.catch(() => undefined);
    return { outcome };
  };
}

/** The raw bytes a piped backup decompresses from its head for the method (mariadb-dump's coordinates are in its first few KiB). */
const HEAD_BYTES = 1024 * 1024;

/**
 * The source's data size, as an upper bound of the stored size (compressed is
 * smaller): S3 multipart parts are sized from it, so a large backup never
 * runs out of parts. Undefined when unknown (the store then keeps its default).
 */
async function estimateSourceSize(source: Endpoint, log: Logger): Promise<number | undefined> {
  if (source.engine !== "mysql") return undefined;
  try {
    const rows = await withConn(source, "estimate the backup size", (c) =>
      queryRows<{ n: string | number | null }>(c, "SELECT SUM(data_length + index_length) AS n FROM information_schema.tables WHERE table_type = 'BASE TABLE'"),
    );
    const n = Number(rows[0]?.n ?? 0);
    return Number.isFinite(n) && n > 0 ? n : undefined;
  } catch (err) {
    // The method connects next and reports a real problem with its own words.
    log.debug({ err }, "could not estimate the backup size");
    return undefined;
  }
}

interface ReplicationMarker {
  source: string;
  backup: string;
  threads: string[];
  at: string;
  holder: string;
}

/** Markers left by earlier backups of the same source that were killed while replication was stopped. */
async function staleReplicationMarkers(repo: Repository, source: string): Promise<{ key: string; backup: string; at: string }[]> {
  const objects = await repo.store.list(`${repo.cluster}/`);
  const out: { key: string; backup: string; at: string }[] = [];
  for (const o of objects) {
    const rel = o.key.slice(repo.cluster.length + 1);
    const [backup, file] = rel.split("/");
    if (file !== REPLICATION_MARKER || !backup) continue;
    if (parseBackupName(backup)?.source !== source) continue;
    out.push({ key: o.key, backup, at: o.lastModified?.toISOString() ?? "an unknown time" });
  }
  return out;
}

/**
 * Claim a name no other backup has or will have: a create-only object under
 * the new prefix. Names have one-second resolution, so a collision waits for
 * the next second and tries again.
 */
async function claimUniqueName(repo: Repository, method: string, source: string, now: () => Date): Promise<{ name: string; started: Date }> {
  for (let attempt = 0; ; attempt++) {
    const started = now();
    const name = buildBackupName(started, method, source);
    try {
      await repo.claimName(name, { host: hostname(), pid: process.pid });
      return { name, started };
    } catch (err) {
      if (!isReplicatorError(err) || err.reason !== "NameTaken" || attempt >= 5) throw err;
      await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
    }
  }
}

/**
 * The error to report for a failed backup. A failure on the storage side (a
 * full disk, an unreachable endpoint) is reported with the store's words, not
 * the method's complaint about its broken pipe; a failure on the source side
 * with the method's own error (mariadb-dump's stderr), which explains more
 * than the stream's.
 */
export function chooseCause(origin: "source" | "storage", putError: unknown, methodError: unknown, streamError: unknown): unknown {
  const real = (e: unknown): boolean => e !== undefined && !isStreamEcho(e);
  const ordered = origin === "storage" ? [putError, streamError, methodError] : [methodError, streamError, putError];
  const pick = ordered.find(real) ?? ordered.find((e) => e !== undefined);
  return pick ?? failed("BackupFailed", "the backup stream failed without an error");
}
