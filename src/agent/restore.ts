// One restore: pick a backup (latest, named, or newest before a time),
// refuse a non-empty target, check the master can serve the position,
// stream storage → sha256 check → decompression → the method's loader,
// then optionally make the target a slave and wait until it replicates.
import { hostname } from "node:os";
import { badInput, failed } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import { queryRows, withConn } from "../db/connection.js";
import { describeEndpoint, type Endpoint } from "../db/endpoint.js";
import { checkMasterCanServe, configureReplica, getSlaveStatus } from "../db/replication.js";
import { getMethod } from "../plugins/registry.js";
import { RESTORE_SENTINEL, SYSTEM_SCHEMAS } from "../db/schemas.js";
import { selectBackup, type ReplicationPosition, type Selector } from "../storage/catalog.js";
import type { Repository } from "../storage/repository.js";
import { createDecompressor } from "./compression.js";
import { ByteCounter, startProgress } from "./progress.js";

export interface RestoreRequest {
  repo: Repository;
  target: Endpoint;
  selector: Selector;
  replicateFrom?: Endpoint | undefined;
  force?: boolean;
  /** Skip the check that the master still has the binlogs (not recommended). */
  skipBinlogCheck?: boolean;
  replicationTimeoutMs?: number;
  methodOptions?: Record<string, unknown>;
  progress?: boolean;
  log: Logger;
  signal: AbortSignal;
}

export interface RestoreResult {
  operation: "restore";
  name: string;
  repository: string;
  method: string;
  target: string;
  rawSize: number;
  replication: ReplicationPosition | undefined;
  replicating: boolean;
  replicatingFrom?: string;
  secondsBehindMaster?: number | null;
  durationMs: number;
  warnings: string[];
}


/** Pure: describe what makes a target non-empty, or undefined when it is empty. */
export function describeNonEmpty(tables: { s: string; n: number }[]): string | undefined {
  const withTables = tables.filter((t) => t.n > 0);
  if (withTables.length === 0) return undefined;
  const list = withTables.slice(0, 5).map((t) => `${t.s} (${t.n} table${t.n === 1 ? "" : "s"})`).join(", ");
  return `${withTables.length} database${withTables.length === 1 ? "" : "s"} with tables: ${list}${withTables.length > 5 ? ", ..." : ""}`;
}

export async function runRestore(req: RestoreRequest): Promise<RestoreResult> {
  const t0 = Date.now();
  const warnings: string[] = [];
  await req.repo.store.check();
  const { backups } = await req.repo.list();
  const chosen = selectBackup(backups, req.selector, req.repo.where);
  const manifest = chosen.manifest;
  const method = getMethod(manifest.method);
  const log = req.log.child({ backup: chosen.name, target: describeEndpoint(req.target) });

  // The target: reachable, and empty unless --force.
  const wasSlave = await withConn(req.target, "inspect the target", async (c) => {
    const [sentinel] = await queryRows<{ n: number | string }>(c, "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = ?", [RESTORE_SENTINEL]);
    const redo = Number(sentinel?.n ?? 0) > 0;
    const rows = await queryRows<{ s: string; n: number | string }>(
      c,
      `SELECT table_schema AS s, COUNT(*) AS n FROM information_schema.tables
       WHERE table_schema NOT IN (?) GROUP BY table_schema ORDER BY table_schema`,
      [SYSTEM_SCHEMAS],
    );
    const nonEmpty = describeNonEmpty(rows.map((r) => ({ s: r.s, n: Number(r.n) })));
    if (redo) warnings.push("the target holds an unfinished restore (its sentinel was found); it is redone");
    if (nonEmpty && !req.force && !redo) {
      throw badInput(
        "TargetNotEmpty",
        `target ${describeEndpoint(req.target)} is not empty (${nonEmpty}); restore into an empty server, or pass --force to overwrite the databases in the backup`,
      );
    }
    if (nonEmpty && !redo) warnings.push(`target was not empty (${nonEmpty}); databases in the backup were replaced`);
    return (await getSlaveStatus(c)) !== undefined;
  });

  // Before loading anything: can the master still serve the backup's position?
  const replicateFrom = req.replicateFrom;
  if (replicateFrom) {
    if (!manifest.replication || (!manifest.replication.gtid && !manifest.replication.file)) {
      throw badInput("NoPosition", `backup ${chosen.name} recorded no replication position (its source had binary logging off); it cannot seed a slave`);
    }
    const pos = manifest.replication;
    if (!req.skipBinlogCheck) {
      const check = await withConn(replicateFrom, "check the master's binlogs", (c) => checkMasterCanServe(c, pos, describeEndpoint(replicateFrom)));
      if (!check.ok) {
        throw badInput("BinlogsPurged", `cannot seed a slave from ${chosen.name}: ${check.reason ?? "the master cannot serve its position"}`);
      }
    }
  }

  const lease = await req.repo.acquireLease(chosen.name, "restore", `${hostname()}:${process.pid}`, 12 * 60 * 60 * 1000);
  try {
    if (wasSlave) {
      await withConn(req.target, "stop replication on the target", (c) => c.query("STOP SLAVE"));
      if (!replicateFrom) warnings.push("replication on the target was stopped for the restore and left stopped; use --replicate-from to start it at the backup's position");
    }
    const object = manifest.objects[0];
    if (!object) throw badInput("CorruptManifest", `backup ${chosen.name} lists no objects`);
    await withConn(req.target, "mark the restore as in progress", async (c) => {
      await c.query("SET SESSION sql_log_bin = 0");
      await c.query(`CREATE DATABASE IF NOT EXISTS \`${RESTORE_SENTINEL}\` COMMENT ?`, [`restoring ${chosen.name}`]);
    });
    log.info({ object: object.name, size: object.size }, "restore started");
    const counter = new ByteCounter();
    const stopProgress = req.progress ? startProgress(`restore ${chosen.name}`, () => counter.bytes) : () => undefined;
    const stored = await req.repo.openVerified(chosen.name, object.name, manifest);
    const decompress = createDecompressor(manifest.compression);
    const input = stored.pipe(decompress).pipe(counter);
    // The first stream error is the real cause (a corrupt object beats the
    // loader's complaint about the garbage it was fed).
    let streamError: unknown;
    const fail = (err: unknown): void => {
      streamError ??= err;
      input.destroy(err as Error);
    };
    input.on("error", (err) => { streamError ??= err; });
    stored.on("error", fail);
    decompress.on("error", (err) => {
      fail(failed("CorruptBackup", `backup ${chosen.name}: ${object.name} does not decompress (${err.message}); the stored object is corrupt`, { cause: err }));
    });
    try {
      await method.restore({ target: req.target, manifest, options: req.methodOptions ?? {}, log, signal: req.signal }, input);
    } catch (err) {
      throw (streamError as { reason?: string } | undefined)?.reason === "CorruptBackup" ? streamError : err;
    } finally {
      stopProgress();
    }
    if ((streamError as { reason?: string } | undefined)?.reason === "CorruptBackup") throw streamError;
    log.info({ rawSize: counter.bytes }, "data loaded");

    let replicating = false;
    let secondsBehindMaster: number | null | undefined;
    if (replicateFrom && manifest.replication) {
      const pos = manifest.replication;
      const st = await withConn(req.target, "start replication", (c) =>
        configureReplica(c, replicateFrom, pos, { timeoutMs: req.replicationTimeoutMs ?? 60_000 }),
      );
      replicating = true;
      secondsBehindMaster = st.secondsBehindMaster;
      log.info({ master: describeEndpoint(replicateFrom), lag: st.secondsBehindMaster }, "replicating");
    }
    await withConn(req.target, "mark the restore as finished", async (c) => {
      await c.query("SET SESSION sql_log_bin = 0");
      await c.query(`DROP DATABASE IF EXISTS \`${RESTORE_SENTINEL}\``);
    });
    const result: RestoreResult = {
      operation: "restore",
      name: chosen.name,
      repository: req.repo.where,
      method: manifest.method,
      target: describeEndpoint(req.target),
      rawSize: counter.bytes,
      replication: manifest.replication,
      replicating,
      durationMs: Date.now() - t0,
      warnings,
    };
    if (replicateFrom) {
      result.replicatingFrom = describeEndpoint(replicateFrom);
      result.secondsBehindMaster = secondsBehindMaster ?? null;
    }
    return result;
  } finally {
    await lease.release().catch((err: unknown) => { log.warn({ err }, "could not release the restore lease; it expires by itself"); });
  }
}
