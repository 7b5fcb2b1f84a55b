// The `mysqldump_parallel` method: a whole-server logical dump made by
// several mariadb-dump processes at once, from one consistent snapshot, and
// restored by as many `mariadb` clients at once.
//
// How the snapshot is shared: the schema is dumped first (one process, every
// database, no rows). Then one control connection takes FLUSH TABLES WITH
// READ LOCK, reads the replication position, and starts every data process
// (`mariadb-dump --single-transaction`, its tables or its row range of one
// table); each opens its snapshot while commits are blocked, so all see the
// same data, the data at that position. The lock is released as soon as each
// process has begun its first table (its "-- Dumping data" line, written
// after its START TRANSACTION WITH CONSISTENT SNAPSHOT) or has exited: a
// fraction of a second. With non-transactional tables (lock: ftwrl, or auto
// when there are any) the lock is held until the data is dumped, as
// mariadb-dump --lock-all-tables would. Triggers, routines and events come
// last, from one more process. On a slave the SQL thread is stopped for the
// backup, as for `mysqldump`.
//
// DDL during the backup is not supported (as with mariadb-dump
// --single-transaction): the schema is read just before the snapshot.
//
// The outputs are framed into one stream (format.ts), which the agent
// compresses with the zstd tool and stores as one object. A restore loads the
// schema, then every data part over its own connection at once, then
// triggers, routines and events; `databases` or `tables` restore only those.
import { once } from "node:events";
import os from "node:os";
import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { PassThrough, type Readable, type Writable } from "node:stream";
import { badInput, failed } from "../../lib/errors.js";
import { spawnTool, type ToolChild } from "../../lib/exec.js";
import { settleOutcome, undoOnFailure } from "../../lib/cleanup.js";
import { connect, queryRows, withConn, type Conn } from "../../db/connection.js";
import { SYSTEM_SCHEMAS } from "../../db/schemas.js";
import { writeDefaultsFile, type DefaultsFile } from "../../db/defaults-file.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import type { BackupContext, BackupMethod, BackupOutcome, BackupRun, RestoreContext } from "../contract.js";
import {
  decideLockMode,
  masterPosition,
  openDumpSource,
  parseDatabasesOption,
  parseLockOption,
  pauseSlave,
  TRANSACTIONAL_ENGINES,
  type LockMode,
} from "../mysqldump/index.js";
import {
  encodeHeader,
  FormatError,
  FRAME_DATA,
  FRAME_END,
  FRAME_PART_END,
  FRAME_UNIT,
  frameHeader,
  FrameReader,
  markersFor,
  UnitSplitter,
  type Plan,
  type PlanPart,
  type Unit,
} from "./format.js";
import { MAX_PROCESSES, planParts, quoteIdent, type TableInfo } from "./plan.js";
import { PartFeed, SinkGone, SpillBudget, spillFile } from "./feed.js";
import { addKeysBack, dropDeferrableKeys, type DeferredKeys } from "./keys.js";
import { loadableTables, preambleAllows, RowsLoader, type LoadableTable } from "./rows.js";
import { booleanOption } from "../options.js";

const INTEGER_TYPES = ["tinyint", "smallint", "mediumint", "int", "bigint"];
/** How long the data processes may take to open their snapshots under the lock. */
const SNAPSHOT_TIMEOUT_MS = 120_000;

export interface ParallelOptions {
  threads: number;
  lock: LockMode;
  /** The databases a backup holds (all but the system schemas when unset). */
  databases: string[] | undefined;
  /** What a restore loads: only these databases, or only these tables (db.table); everything when both are unset. */
  only: RestoreFilter;
  dumpCommand: string;
  clientCommand: string;
  /** What a restore may keep on disk for clients slower than the stream (bytes; 0: none, the stream waits for the slowest client). */
  spillBytes: number;
  /** Whether a restore adds secondary keys after the rows (keys.ts) rather than loading rows into them. */
  deferKeys: boolean;
  /** Whether a restore loads the rows of the tables that allow it by LOAD DATA (rows.ts) rather than as INSERT statements. */
  loadData: boolean;
}

/** The default spill budget of a restore (MiB). */
export const DEFAULT_SPILL_MB = 2048;

function listOption(v: unknown, name: string): string[] | undefined {
  if (v === undefined) return undefined;
  const raw = typeof v === "string" ? v.split(",") : v;
  if (!Array.isArray(raw) || raw.some((d) => typeof d !== "string")) throw badInput("InvalidOption", `${name} must be a comma-separated list`);
  const out = (raw as string[]).map((d) => d.trim()).filter(Boolean);
  if (out.length === 0) throw badInput("InvalidOption", `${name} is empty; omit it for all`);
  return out;
}

export interface RestoreFilter {
  databases?: string[] | undefined;
  tables?: string[] | undefined;
}

/** The restore filter (`restoreDatabases`, `restoreTables`), which the command line alone sets. */
export function parseRestoreFilter(o: Record<string, unknown>): RestoreFilter {
  const databases = listOption(o.restoreDatabases, "--databases");
  const tables = listOption(o.restoreTables, "--tables");
  const bad = (tables ?? []).filter((t) => !/^[^.]+\.[^.]+$/.test(t));
  if (bad.length > 0) throw badInput("InvalidOption", `--tables takes database.table names (got ${bad.join(", ")})`);
  if (tables && databases) throw badInput("InvalidOption", "give --tables or --databases, not both");
  return { databases, tables };
}

export function defaultThreads(): number {
  return Math.max(2, Math.min(8, os.availableParallelism()));
}

export function parseParallelOptions(o: Record<string, unknown>): ParallelOptions {
  let threads = defaultThreads();
  if (o.threads !== undefined) {
    threads = Number(o.threads);
    if (!Number.isInteger(threads) || threads < 1 || threads > 32) throw badInput("InvalidOption", `--threads must be a whole number from 1 to 32 (got ${JSON.stringify(o.threads)})`);
  }
  if (o.users === true || o.users === "true") {
    throw badInput("InvalidOption", "mysqldump_parallel does not back up accounts (--users); use --method mysqldump --users for that");
  }
  let spillMb = DEFAULT_SPILL_MB;
  if (o.spillMb !== undefined) {
    spillMb = Number(o.spillMb);
    if (!Number.isInteger(spillMb) || spillMb < 0) throw badInput("InvalidOption", `spillMb must be a whole number of MiB, 0 or more (got ${JSON.stringify(o.spillMb)})`);
  }
  return {
    threads,
    deferKeys: booleanOption(o, "deferKeys", true),
    loadData: booleanOption(o, "loadData", true),
    spillBytes: spillMb * 1024 * 1024,
    lock: parseLockOption(o.lock),
    databases: parseDatabasesOption(o.databases),
    only: parseRestoreFilter(o),
    dumpCommand: typeof o.dumpCommand === "string" ? o.dumpCommand : "mariadb-dump",
    clientCommand: typeof o.clientCommand === "string" ? o.clientCommand : "mariadb",
  };
}

/** Pure: the mariadb-dump arguments of one part (credentials are in the defaults file). */
export function partArgs(part: PlanPart, plan: Plan, creds: { path: string; args: string[] }, lock: "single-transaction" | "ftwrl"): string[] {
  const common = [
    `--defaults-extra-file=${creds.path}`,
    ...creds.args,
    "--hex-blob",
    "--quick",
    "--default-character-set=utf8mb4",
    "--max-allowed-packet=1G",
    "--skip-dump-date",
    "--skip-add-locks",
    "--skip-lock-tables",
  ];
  switch (part.kind) {
    case "schema":
      return [...common, "--no-data", "--skip-triggers", "--databases", ...plan.databases];
    case "post":
      return [...common, "--no-data", "--no-create-info", "--no-create-db", "--triggers", "--routines", "--events", "--databases", ...plan.databases];
    case "data": {
      // No ALTER TABLE ... DISABLE/ENABLE KEYS (a no-op for InnoDB): its metadata lock would wait
      // for the open transaction of another part loading a range of the same table.
      const args = [...common, "--no-create-info", "--skip-triggers", "--skip-disable-keys"];
      // Transactional: the snapshot. Otherwise the control connection's read lock holds the data still.
      if (lock === "single-transaction") args.push("--single-transaction");
      if (part.where) args.push(`--where=${part.where}`);
      return [...args, "--", part.db ?? "", ...(part.tables ?? [])];
    }
  }
}

/** Writes frames into `out`, waiting while it is full. */
class FrameWriter {
  private waiting: Promise<void> | undefined;
  constructor(private readonly out: Writable) {}

  frame(kind: number, part: number, unit: number, payload?: Buffer): void {
    if (this.out.destroyed) throw new Error("the backup stream was closed (the upload or compression stopped)");
    const length = payload?.length ?? 0;
    let ok = this.out.write(frameHeader(kind, part, unit, length));
    if (payload && length > 0) ok = this.out.write(payload) && ok;
    if (!ok && !this.waiting) {
      this.waiting = Promise.race([once(this.out, "drain"), once(this.out, "close")]).then(() => { this.waiting = undefined; }, () => { this.waiting = undefined; });
    }
  }

  raw(bytes: Buffer): void {
    this.out.write(bytes);
  }

  /** Resolves when the stream has room again. */
  async room(): Promise<void> {
    while (this.waiting) await this.waiting;
  }
}

interface RunningPart {
  part: PlanPart;
  child: ToolChild;
  /** Resolves once the process has begun its first table (its snapshot is open) or has ended. */
  begun: Promise<void>;
  /** Resolves when its output is all framed and it exited 0. */
  done: Promise<void>;
}

function startPart(part: PlanPart, plan: Plan, creds: DefaultsFile, lock: "single-transaction" | "ftwrl", cmd: string, w: FrameWriter, signal: AbortSignal): RunningPart {
  const child = spawnTool(cmd, partArgs(part, plan, creds, lock), { stdout: "pipe", signal, what: `dump part ${part.id} (${part.kind}${part.db ? ` of ${part.db}` : ""})` });
  let markBegun: () => void = () => undefined;
  const begun = new Promise<void>((resolve) => { markBegun = resolve; });
  const splitter = new UnitSplitter(
    markersFor(part.kind),
    part.kind === "data" ? part.db : undefined,
    (index, unit) => {
      w.frame(FRAME_UNIT, part.id, index, Buffer.from(JSON.stringify(unit), "utf8"));
      if (unit.kind !== "preamble") markBegun();
    },
    (index, bytes) => { w.frame(FRAME_DATA, part.id, index, bytes); },
  );
  const done = (async () => {
    try {
      const out = child.stdout as Readable;
      for await (const chunk of out) {
        splitter.push(chunk as Buffer);
        await w.room();
      }
      await child.done;
      splitter.end();
      w.frame(FRAME_PART_END, part.id, 0);
    } finally {
      markBegun();
    }
  })();
  done.catch(() => undefined);
  return { part, child, begun, done };
}

async function readTables(c: Conn, databases: string[], threads: number): Promise<{ tables: TableInfo[]; nonTx: string[] }> {
  const rows = await queryRows<{ s: string; t: string; e: string | null; b: number | string | null }>(
    c,
    `SELECT table_schema AS s, table_name AS t, engine AS e, COALESCE(data_length, 0) + COALESCE(index_length, 0) AS b
       FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema IN (?)`,
    [databases],
  );
  const tables: TableInfo[] = rows.map((r) => ({ db: r.s, name: r.t, bytes: Number(r.b ?? 0) }));
  const nonTx = rows.filter((r) => !r.e || !TRANSACTIONAL_ENGINES.includes(r.e)).map((r) => `${r.s}.${r.t} (${r.e ?? "?"})`);
  const total = tables.reduce((s, t) => s + t.bytes, 0);
  const share = total / threads;
  for (const t of tables) {
    if (threads < 2 || t.bytes <= share) continue;
    const cols = await queryRows<{ c: string; ty: string }>(
      c,
      `SELECT k.column_name AS c, col.data_type AS ty FROM information_schema.key_column_usage k
         JOIN information_schema.columns col ON col.table_schema = k.table_schema AND col.table_name = k.table_name AND col.column_name = k.column_name
        WHERE k.constraint_name = 'PRIMARY' AND k.table_schema = ? AND k.table_name = ?`,
      [t.db, t.name],
    );
    const pk = cols.length === 1 ? cols[0] : undefined;
    if (!pk || !INTEGER_TYPES.includes(pk.ty.toLowerCase())) continue;
    const [b] = await queryRows<{ lo: string | null; hi: string | null }>(
      c,
      `SELECT CAST(MIN(${quoteIdent(pk.c)}) AS CHAR) AS lo, CAST(MAX(${quoteIdent(pk.c)}) AS CHAR) AS hi FROM ${quoteIdent(t.db)}.${quoteIdent(t.name)}`,
    );
    if (b?.lo != null && b.hi != null) t.pk = { column: pk.c, min: BigInt(b.lo), max: BigInt(b.hi) };
  }
  return { tables, nonTx };
}

async function startBackup(ctx: BackupContext): Promise<BackupRun> {
  const opts = parseParallelOptions(ctx.options);
  const { control, info, role, at, cleanup, privileged } = await openDumpSource(ctx);
  return undoOnFailure(cleanup, async (): Promise<BackupRun> => {
    const all = (await queryRows<{ s: string }>(control, "SELECT schema_name AS s FROM information_schema.schemata WHERE schema_name NOT IN (?) ORDER BY schema_name", [SYSTEM_SCHEMAS])).map((r) => r.s);
    let databases = all;
    if (opts.databases) {
      const missing = opts.databases.filter((d) => !all.includes(d));
      if (missing.length > 0) throw badInput("InvalidOption", `databases not found on the source: ${missing.join(", ")}`);
      databases = opts.databases;
    }
    if (databases.length === 0) throw badInput("NothingToBackUp", `the source ${at} has no database besides the system schemas; there is nothing to back up`);
    const { tables, nonTx } = await readTables(control, databases, opts.threads);
    const lock = decideLockMode(opts.lock, nonTx);
    const plan = planParts(databases, tables, opts.threads);
    const processes = plan.parts.filter((p) => p.kind === "data").length;
    if (processes > MAX_PROCESSES) {
      throw badInput("InvalidOption", `a parallel dump of ${databases.length} databases needs ${processes} connections at once (more than ${MAX_PROCESSES}); back up fewer databases per run (--databases) or use --method mysqldump`);
    }
    const warnings: string[] = [];
    if (opts.lock === "single-transaction" && nonTx.length > 0) {
      warnings.push(`single-transaction does not make these non-transactional tables consistent: ${nonTx.slice(0, 5).join(", ")}${nonTx.length > 5 ? ", ..." : ""}`);
    }
    if (role === "standalone") warnings.push("binary logging is off on the source: the backup records no replication position");

    const creds = await writeDefaultsFile(ctx.source);
    cleanup.push(() => creds.cleanup());
    const stop = new AbortController();
    const signal = AbortSignal.any([ctx.signal, stop.signal]);
    const out = new PassThrough({ highWaterMark: 4 * 1024 * 1024 });
    const w = new FrameWriter(out);
    ctx.log.info({ threads: opts.threads, parts: plan.parts.length, dataProcesses: processes, lock, role, tables: tables.length }, "parallel dump started");

    const outcome = settleOutcome(cleanup, async (): Promise<BackupOutcome> => {
      const running: RunningPart[] = [];
      let locked = false;
      try {
        w.raw(encodeHeader(plan));
        const schemaPart = plan.parts.find((p) => p.kind === "schema");
        const postPart = plan.parts.find((p) => p.kind === "post");
        if (!schemaPart || !postPart) throw new Error("unreachable: a plan has a schema and a post part");
        await privileged("dump the schema", () => startPart(schemaPart, plan, creds, lock, opts.dumpCommand, w, signal).done);

        let slavePos: ReplicationPosition | undefined;
        if (role === "slave") {
          slavePos = await privileged("stop the slave's SQL thread and read its position", () => pauseSlave(ctx, control, warnings, cleanup));
        }
        await privileged("take the read lock for the snapshot (FLUSH TABLES WITH READ LOCK)", () => control.query("FLUSH TABLES WITH READ LOCK"));
        locked = true;
        const lockedAt = Date.now();
        let replication: ReplicationPosition | undefined = slavePos;
        if (role === "master") {
          const [st] = await queryRows<{ File: string; Position: number | string }>(control, "SHOW MASTER STATUS");
          const p = await masterPosition(control, info, st ? { file: st.File, position: Number(st.Position) } : {});
          replication = { role: "master", sourceServerId: info.serverId, ...p };
          if (!p.file) warnings.push("the source printed no binlog coordinates; the backup has no replication position");
        }
        for (const part of plan.parts) {
          if (part.kind === "data") running.push(startPart(part, plan, creds, lock, opts.dumpCommand, w, signal));
        }
        if (lock === "single-transaction") {
          let timer: NodeJS.Timeout | undefined;
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => { reject(failed("SnapshotTimeout", `the ${running.length} dump processes did not open their snapshots within ${SNAPSHOT_TIMEOUT_MS / 1000} s under the read lock; is the source overloaded?`)); }, SNAPSHOT_TIMEOUT_MS);
          });
          try {
            await Promise.race([Promise.all(running.map((r) => r.begun)), timeout]);
          } finally {
            clearTimeout(timer);
          }
          await control.query("UNLOCK TABLES");
          locked = false;
          ctx.log.info({ lockMs: Date.now() - lockedAt, processes: running.length }, "snapshot shared; read lock released");
        }
        await privileged("dump the source", () => Promise.all(running.map((r) => r.done)));
        if (locked) {
          await control.query("UNLOCK TABLES");
          locked = false;
          ctx.log.info({ lockMs: Date.now() - lockedAt }, "data dumped; read lock released");
        }
        await privileged("dump triggers, routines and events", () => startPart(postPart, plan, creds, lock, opts.dumpCommand, w, signal).done);
        w.frame(FRAME_END, 0, 0);
        out.end();
        return {
          role,
          serverId: info.serverId,
          version: info.version,
          replication,
          details: {
            format: "parallel/1",
            lock,
            threads: opts.threads,
            processes,
            databases,
            tables: tables.length,
            chunkedTables: new Set(plan.parts.filter((p) => p.where).map((p) => `${p.db ?? ""}.${p.tables?.[0] ?? ""}`)).size,
            nonTransactionalTables: nonTx.length,
          },
          warnings,
        };
      } catch (err) {
        stop.abort();
        await Promise.allSettled(running.map((r) => r.child.exit));
        out.destroy(err as Error);
        throw err;
      } finally {
        if (locked) await control.query("UNLOCK TABLES").catch(() => undefined);
      }
    });
    return { stream: out, outcome };
  });
}

// ---------------------------------------------------------------- restore

/** What loads one part: a mariadb client reading the part's SQL, or (rows.ts) the agent's own connection. */
interface Loader {
  /** Where the part's bytes go. */
  sink: Writable;
  /** Resolves when the part is loaded; rejects with why not. */
  done: Promise<void>;
  /** Settles when the loader has stopped (its sink is gone); never rejects. */
  exit: Promise<unknown>;
  kill(): void;
  /** Its failure, unless the restore stopped it. */
  failure(): Promise<unknown>;
}

/** A loader and the feed that writes its part into it. */
type Client = Loader & { feed: PartFeed };

function toolLoader(child: ToolChild, stdin: Writable): Loader {
  return {
    sink: stdin,
    done: child.done,
    exit: child.exit,
    kill: () => { child.kill(); },
    failure: async () => {
      const e = await child.exit;
      return !e.canceled && e.exitCode !== 0 ? child.done.then(() => undefined, (err: unknown) => err) : undefined;
    },
  };
}

function rowsLoader(loader: RowsLoader): Loader {
  return {
    sink: loader.sink,
    done: loader.done,
    exit: loader.settled,
    kill: () => { loader.kill(); },
    failure: () => loader.failureUnlessKilled(),
  };
}

/** Pure: whether a restore with these filters loads `unit` of a part of `kind`. */
export function includeUnit(kind: PlanPart["kind"], unit: Unit, opts: RestoreFilter): boolean {
  if (unit.kind === "preamble") return true;
  if (opts.databases) return unit.db !== undefined && opts.databases.includes(unit.db);
  if (opts.tables) {
    if (kind === "post" || unit.kind === "view") return false;
    if (unit.kind === "db") return opts.tables.some((t) => t.startsWith(`${unit.db ?? ""}.`));
    return opts.tables.includes(`${unit.db ?? ""}.${unit.name ?? ""}`);
  }
  return true;
}

async function restoreStream(ctx: RestoreContext, input: Readable): Promise<void> {
  const opts = { ...parseParallelOptions(ctx.options), ...parseRestoreFilter(ctx.options) };
  const creds = await writeDefaultsFile(ctx.target);
  const spillDir = await mkdtemp(join(os.tmpdir(), "replicator-restore-"));
  const budget = new SpillBudget(opts.spillBytes);
  const clients = new Map<number, Client>();
  const units = new Map<string, boolean>();
  const held = new Map<number, Buffer[]>();
  const parts = new Map<number, PlanPart>();
  let schemaDone: Promise<void> | undefined;
  let dataDone: Promise<void> | undefined;
  /** The tables this restore loads rows into (from the plan, filtered). */
  const loading: { db: string; table: string }[] = [];
  let deferred: DeferredKeys[] = [];
  let keysAdded: Promise<void> | undefined;
  /** The tables whose rows load by LOAD DATA (rows.ts), known once the schema is in. */
  let rowTables = new Map<string, LoadableTable>();
  /** Once the schema is in and before the first row: the secondary keys that are built after the rows, and the tables that load by LOAD DATA. */
  const beforeRows = async (): Promise<void> => {
    if (loading.length === 0 || (!opts.deferKeys && !opts.loadData)) return;
    const r = await withConn(ctx.target, "prepare the tables for their rows", async (c) => {
      await c.query("SET SESSION sql_log_bin=0");
      const rows = opts.loadData ? await loadableTables(c, loading) : { tables: new Map<string, LoadableTable>() };
      return { rows, ...(opts.deferKeys ? await dropDeferrableKeys(c, loading) : { deferred: [] }) };
    });
    rowTables = r.rows.tables;
    if (r.rows.off) ctx.log.warn(`${r.rows.off}: the rows load as INSERT statements, which is slower (SET GLOBAL local_infile=ON on the target, or set methodOptions.loadData: false to say so)`);
    else if (opts.loadData) ctx.log.info({ tables: rowTables.size, of: loading.length }, "rows load by LOAD DATA where the table allows it");
    deferred = r.deferred;
    if (r.refused) ctx.log.warn({ refused: r.refused }, "the restore user may not ALTER the restored tables: their secondary keys load with the rows, which is slower (GRANT ALTER on the restored databases, or set methodOptions.deferKeys: false to say so)");
    if (deferred.length > 0) ctx.log.info({ tables: deferred.length, keys: deferred.reduce((n, d) => n + d.keys.length, 0) }, "secondary keys are added after the rows");
  };
  /** When every row is in (before triggers, routines and events): the keys dropped by dropKeys, back. */
  const keysBack = (): Promise<void> => (keysAdded ??= addKeysBack(ctx.target, deferred, opts.threads, ctx.log, ctx.signal));
  const partOf = (id: number): PlanPart => {
    const p = parts.get(id);
    if (!p) throw new FormatError(`it has a frame of part ${id}, which its plan does not list`);
    return p;
  };

  const startClient = (part: PlanPart): Client => {
    const args = [
      `--defaults-extra-file=${creds.path}`,
      ...creds.args,
      // Not into the target's own binlog (a new slave would get GTIDs the master never had).
      // A part of whole tables loads as one transaction, committed at its end (as myloader's
      // queries-per-transaction; with unique and foreign key checks off, MariaDB loads an empty
      // table in bulk): not a log flush per INSERT. Not a range of a table: that bulk load locks
      // the whole table until its commit, and the other ranges of the table would wait for it.
      `--init-command=SET SESSION sql_log_bin=0${part.kind === "data" ? `, unique_checks=0, foreign_key_checks=0${part.where ? "" : ", autocommit=0"}` : ""}`,
      "--binary-mode",
      "--max-allowed-packet=1G",
      "--default-character-set=utf8mb4",
      ...(part.kind === "data" && part.db ? [`--database=${part.db}`] : []),
    ];
    const rowsLoadable = (): LoadableTable[] | undefined => {
      if (part.kind !== "data" || !part.db || rowTables.size === 0) return undefined;
      const tables = (part.tables ?? []).map((t) => rowTables.get(`${part.db ?? ""}.${t}`));
      if (tables.length === 0 || tables.some((t) => t === undefined)) return undefined;
      if (!preambleAllows(Buffer.concat(held.get(part.id) ?? []).toString("utf8"))) return undefined;
      return tables as LoadableTable[];
    };
    const rowsOf = rowsLoadable();
    let loader: Loader;
    if (rowsOf) {
      loader = rowsLoader(new RowsLoader(connect(ctx.target, `the target, to load part ${part.id}`), { id: part.id, db: part.db ?? "" }, rowsOf, ctx.signal));
    } else {
      const child = spawnTool(opts.clientCommand, args, { stdin: "pipe", stdout: "ignore", signal: ctx.signal, what: `load part ${part.id} (${part.kind}${part.db ? ` of ${part.db}` : ""}) into the target` });
      if (!child.stdin) throw new Error(`${opts.clientCommand} started without a stdin`);
      loader = toolLoader(child, child.stdin);
    }
    const c: Client = { ...loader, feed: new PartFeed(loader.sink, loader.exit, spillFile(spillDir, part.id), budget) };
    c.feed.done.catch(() => undefined);
    clients.set(part.id, c);
    return c;
  };

  /** A client's end: its feed written, its process exited 0; else the client's own error (or why it stopped reading early). */
  const finished = async (c: Client): Promise<void> => {
    try {
      await c.feed.done;
    } catch (err) {
      if (!(err instanceof SinkGone)) throw err;
      await c.done;
      throw failed("LoadFailed", `${opts.clientCommand} exited before its part of the backup was loaded`);
    }
    await c.done;
  };

  const write = async (c: Client, bytes: Buffer): Promise<void> => {
    try {
      await c.feed.push(bytes);
    } catch (err) {
      if (!(err instanceof SinkGone)) throw err;
      await finished(c);
      throw failed("LoadFailed", `${opts.clientCommand} exited before its part of the backup was loaded`);
    }
  };

  /** The client of a part, started on its first loaded unit, after the phase before it is loaded. */
  const clientFor = async (part: PlanPart): Promise<Client> => {
    const have = clients.get(part.id);
    if (have) return have;
    if (part.kind === "data") {
      schemaDone ??= Promise.all([...clients.entries()].filter(([id]) => partOf(id).kind === "schema").map(([, c]) => { c.feed.end(); return finished(c); })).then(beforeRows);
      await schemaDone;
    } else if (part.kind === "post") {
      schemaDone ??= Promise.resolve();
      dataDone ??= Promise.all([...clients.entries()].filter(([id]) => partOf(id).kind !== "post").map(([, c]) => { c.feed.end(); return finished(c); })).then(keysBack);
      await dataDone;
    }
    const c = startClient(part);
    for (const b of held.get(part.id) ?? []) await write(c, b);
    held.delete(part.id);
    return c;
  };

  let loadedTables = 0;
  const reader = new FrameReader({
    header: async (p) => {
      for (const x of p.parts) parts.set(x.id, x);
      budget.shareMemory(p.parts.length);
      const dataTables = p.parts.filter((x) => x.kind === "data").flatMap((x) => (x.tables ?? []).map((table) => ({ db: x.db ?? "", table })));
      const names = new Set<string>();
      for (const t of dataTables) {
        const name = `${t.db}.${t.table}`;
        if (names.has(name)) continue;
        names.add(name);
        if (includeUnit("data", { kind: "data", db: t.db, name: t.table }, opts)) loading.push(t);
      }
      if (opts.tables) {
        const missing = opts.tables.filter((t) => !names.has(t));
        if (missing.length > 0) throw badInput("InvalidOption", `tables not in backup ${ctx.manifest.name}: ${missing.join(", ")}`);
        ctx.log.info({ tables: opts.tables }, "loading these tables' structure and rows only");
      }
      if (opts.databases) {
        const missing = opts.databases.filter((d) => !p.databases.includes(d));
        if (missing.length > 0) throw badInput("InvalidOption", `databases not in backup ${ctx.manifest.name}: ${missing.join(", ")} (it holds ${p.databases.join(", ")})`);
      }
      if (!opts.tables) {
        // As mysqldump's --add-drop-database: the databases restored replace the target's.
        const schema = p.parts.find((x) => x.kind === "schema");
        if (!schema) throw new FormatError("its plan has no schema part");
        const c = startClient(schema);
        const drops = (opts.databases ?? p.databases).map((d) => `DROP DATABASE IF EXISTS ${quoteIdent(d)};\n`).join("");
        await write(c, Buffer.from(drops, "utf8"));
      }
    },
    unit: (part, index, unit) => {
      const p = partOf(part);
      const keep = includeUnit(p.kind, unit, opts);
      units.set(`${part}:${index}`, keep);
      if (keep && unit.kind === "data") loadedTables++;
    },
    data: async (part, unit, bytes) => {
      const keep = units.get(`${part}:${unit}`);
      if (keep === undefined) throw new FormatError(`part ${part} has data of unit ${unit} before that unit's frame`);
      if (!keep) return;
      const existing = clients.get(part);
      if (!existing && unit === 0) {
        // The preamble: held until the part has a unit this restore loads.
        held.set(part, [...(held.get(part) ?? []), Buffer.from(bytes)]);
        return;
      }
      await write(existing ?? (await clientFor(partOf(part))), bytes);
    },
    partEnd: async (part) => {
      held.delete(part);
      const c = clients.get(part);
      if (!c) return;
      if (partOf(part).kind === "data") await write(c, Buffer.from("\nCOMMIT;\n"));
      c.feed.end();
    },
    end: () => undefined,
  });

  try {
    for await (const chunk of input) await reader.push(chunk as Buffer);
    reader.finish();
    for (const c of clients.values()) c.feed.end();
    await Promise.all([...clients.values()].map(finished));
    // A restore with no triggers, routines or events to load never started a post client.
    await keysBack();
    ctx.log.info({ clients: clients.size, tables: loadedTables }, "parallel load done");
  } catch (err) {
    for (const c of clients.values()) {
      c.feed.abort();
      c.kill();
    }
    await Promise.allSettled([...clients.values()].flatMap((c) => [c.exit, c.feed.done]));
    // A client that failed says why better than the broken pipe it left behind.
    const failedClient = await firstFailure([...clients.values()]);
    if (err instanceof FormatError) throw failed("CorruptBackup", `backup ${ctx.manifest.name}: ${err.message}`);
    throw failedClient ?? err;
  } finally {
    await creds.cleanup();
    await rm(spillDir, { recursive: true, force: true });
  }
}

async function firstFailure(clients: Client[]): Promise<unknown> {
  for (const c of clients) {
    const err = await c.failure();
    if (err !== undefined) return err;
  }
  return undefined;
}

export const mysqldumpParallelMethod: BackupMethod = {
  engine: "mysql",
  restoreInto: "server",
  partialRestore: true,
  name: "mysqldump_parallel",
  kind: "logical",
  extension: "pdump",

  validateOptions(options) {
    parseParallelOptions(options);
  },

  backup(ctx: BackupContext): Promise<BackupRun> {
    return startBackup(ctx);
  },

  restore(ctx: RestoreContext, input: Readable): Promise<void> {
    return restoreStream(ctx, input);
  },
};
