// The `mysqldump` method: a whole-server logical dump with mariadb-dump.
//
// What a backup holds: every database except the system schemas (mysql,
// sys, information_schema, performance_schema), with tables, views,
// triggers, stored routines and events. With `users: true` it also holds
// accounts and grants (mariadb-dump --system=users, as CREATE USER IF NOT
// EXISTS + GRANT). Not included: other mysql.* tables (time zones,
// statistics), the binlogs, server configuration.
//
// Consistency: --single-transaction when every table is transactional,
// otherwise FLUSH TABLES WITH READ LOCK (--lock-all-tables) for the whole dump.
// The replication position is taken at the same consistent point: on a
// master from the dump's own --master-data header, on a slave by stopping
// the SQL thread first and reading the coordinates it has applied. The SQL
// thread is started again afterwards, whether the backup worked or not, but
// only when this backup stopped it: replication found stopped (by an admin,
// or by a killed earlier run) is left stopped, and the outcome says so. The
// agent's ReplicationHooks record the stop, so a killed run leaves a trace.
import { Transform, type Readable } from "node:stream";
import { badInput } from "../../lib/errors.js";
import { spawnTool } from "../../lib/exec.js";
import { feedChild, outputOf } from "../../lib/child-streams.js";
import { settleOutcome, undoOnFailure, type CleanupStack } from "../../lib/cleanup.js";
import { connect, queryRows, withConn, type Conn } from "../../db/connection.js";
import { SYSTEM_SCHEMAS } from "../../db/schemas.js";
import { asBackupPrivilegeError, quoteAccount } from "../../db/privileges.js";
import { writeDefaultsFile } from "../../db/defaults-file.js";
import {
  getServerInfo,
  getSlaveStatus,
  readSlavePosition,
  restartStoppedThreads,
  runningThreads,
  stoppedBeforeWarning,
  type ReplicationThread,
  type ServerInfo,
} from "../../db/replication.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import type { BackupContext, BackupMethod, BackupOutcome, PipedLoader, PipedSink, RestoreContext } from "../contract.js";
import { streamedOrPiped } from "../piped.js";

export const TRANSACTIONAL_ENGINES = ["InnoDB", "RocksDB", "TokuDB"];

export type LockMode = "auto" | "single-transaction" | "ftwrl";

export interface MysqldumpOptions {
  lock: LockMode;
  databases: string[] | undefined;
  users: boolean;
  dumpCommand: string;
  clientCommand: string;
}

/** The `lock` option (default auto). */
export function parseLockOption(v: unknown): LockMode {
  const lock = v ?? "auto";
  if (lock !== "auto" && lock !== "single-transaction" && lock !== "ftwrl") {
    throw badInput("InvalidOption", `--lock must be auto, single-transaction or ftwrl (got ${JSON.stringify(lock)})`);
  }
  return lock;
}

/** The `databases` option of a backup: a list or a comma-separated string, no system schema; undefined for all. */
export function parseDatabasesOption(v: unknown): string[] | undefined {
  if (v === undefined) return undefined;
  const raw = typeof v === "string" ? v.split(",") : v;
  if (!Array.isArray(raw) || raw.some((d) => typeof d !== "string")) {
    throw badInput("InvalidOption", "databases must be a list of database names");
  }
  const databases = (raw as string[]).map((d) => d.trim()).filter(Boolean);
  const sys = databases.filter((d) => SYSTEM_SCHEMAS.includes(d.toLowerCase()));
  if (sys.length > 0) throw badInput("InvalidOption", `databases may not include system schemas (${sys.join(", ")})`);
  if (databases.length === 0) throw badInput("InvalidOption", "databases is empty; omit it to dump every database");
  return databases;
}

export function parseMysqldumpOptions(o: Record<string, unknown>): MysqldumpOptions {
  return {
    lock: parseLockOption(o.lock),
    databases: parseDatabasesOption(o.databases),
    users: o.users === true || o.users === "true",
    dumpCommand: typeof o.dumpCommand === "string" ? o.dumpCommand : "mariadb-dump",
    clientCommand: typeof o.clientCommand === "string" ? o.clientCommand : "mariadb",
  };
}

/** Pure: the lock mode for `auto`, given the non-transactional tables found. */
export function decideLockMode(requested: LockMode, nonTransactional: string[]): "single-transaction" | "ftwrl" {
  if (requested !== "auto") return requested;
  return nonTransactional.length === 0 ? "single-transaction" : "ftwrl";
}

/** Pure: the mariadb-dump arguments (no credentials: those are in the defaults file). */
export function buildDumpArgs(opts: {
  defaultsFile: string;
  connArgs: string[];
  lock: "single-transaction" | "ftwrl";
  role: "master" | "slave" | "standalone";
  databases: string[] | undefined;
  users: boolean;
}): string[] {
  const args = [
    `--defaults-extra-file=${opts.defaultsFile}`,
    ...opts.connArgs,
    "--routines",
    "--events",
    "--triggers",
    "--add-drop-database",
    "--hex-blob",
    "--quick",
    "--default-character-set=utf8mb4",
    "--max-allowed-packet=1G",
    "--skip-dump-date",
  ];
  args.push(opts.lock === "single-transaction" ? "--single-transaction" : "--lock-all-tables");
  if (opts.role === "master") args.push("--master-data=2", "--gtid");
  if (opts.users) args.push("--system=users", "--insert-ignore");
  if (opts.databases) args.push("--databases", ...opts.databases);
  else args.push("--all-databases", ...SYSTEM_SCHEMAS.filter((s) => !s.endsWith("_schema")).map((s) => `--ignore-database=${s}`));
  return args;
}

/** Pure: read the coordinates mariadb-dump --master-data=2 --gtid writes as comments. */
export function parseDumpPosition(head: string, tailText: string): { file?: string; position?: number; gtid?: string } {
  const out: { file?: string; position?: number; gtid?: string } = {};
  const cm = /CHANGE MASTER TO MASTER_LOG_FILE='([^']+)', MASTER_LOG_POS=(\d+)/.exec(head);
  if (cm?.[1] && cm[2]) {
    out.file = cm[1];
    out.position = Number(cm[2]);
  }
  const g = /SET GLOBAL gtid_slave_pos='([^']*)'/.exec(tailText) ?? /SET GLOBAL gtid_slave_pos='([^']*)'/.exec(head);
  if (g?.[1] !== undefined && g[1] !== "") out.gtid = g[1];
  return out;
}

/** Watches a dump stream for the position comments without holding it. */
class PositionScanner extends Transform {
  head = "";
  private headDone = false;
  private tailChunks: Buffer[] = [];
  private tailBytes = 0;

  get tailText(): string {
    return Buffer.concat(this.tailChunks).toString("latin1");
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    if (!this.headDone) {
      this.head += chunk.toString("latin1");
      if (this.head.length > 1024 * 1024 || /MASTER_LOG_POS=\d+/.test(this.head)) this.headDone = true;
    }
    // Keep only the last 64 KiB as buffers; text is made once, at the end.
    this.tailChunks.push(chunk);
    this.tailBytes += chunk.length;
    while (this.tailChunks.length > 1 && this.tailBytes - (this.tailChunks[0]?.length ?? 0) >= 65536) {
      this.tailBytes -= this.tailChunks.shift()?.length ?? 0;
    }
    cb(null, chunk);
  }
}

async function nonTransactionalTables(c: Conn, databases: string[] | undefined): Promise<string[]> {
  const rows = await queryRows<{ s: string; t: string; e: string | null }>(
    c,
    `SELECT table_schema AS s, table_name AS t, engine AS e FROM information_schema.tables
     WHERE table_type = 'BASE TABLE' AND table_schema NOT IN (?) ${databases ? "AND table_schema IN (?)" : ""}
       AND (engine IS NULL OR engine NOT IN (?))`,
    databases ? [SYSTEM_SCHEMAS, databases, TRANSACTIONAL_ENGINES] : [SYSTEM_SCHEMAS, TRANSACTIONAL_ENGINES],
  );
  return rows.map((r) => `${r.s}.${r.t} (${r.e ?? "?"})`);
}

async function missingDatabases(c: Conn, databases: string[]): Promise<string[]> {
  const rows = await queryRows<{ s: string }>(c, "SELECT schema_name AS s FROM information_schema.schemata WHERE schema_name IN (?)", [databases]);
  const have = new Set(rows.map((r) => r.s));
  return databases.filter((d) => !have.has(d));
}

/**
 * The cleanup step that starts again the replication threads `stop` of the
 * source (those a backup stopped, or that its tool stops), and, when the
 * stop was `recorded` through ctx.replication, records the restart. A
 * failure to restart becomes a warning that says what to run.
 */
export function restartReplication(ctx: BackupContext, stop: ReplicationThread[], warnings: string[], opts: { recorded: boolean }): () => Promise<void> {
  const host = ctx.source.socket ?? `${ctx.source.host}:${ctx.source.port}`;
  return async () => {
    try {
      const started = await withConn(ctx.source, "restart replication", (c) => restartStoppedThreads(c, stop));
      if (started.length > 0) ctx.log.info({ source: host, started }, "replication threads restarted");
    } catch (err) {
      const w = `could not restart the replication threads this backup stopped on ${host} (${err instanceof Error ? err.message : String(err)}); run \`replicator online\``;
      warnings.push(w);
      ctx.log.error({ err }, w);
      return;
    }
    if (opts.recorded) await ctx.replication?.restarted().catch((err: unknown) => { ctx.log.warn({ err }, "could not record that replication was restarted"); });
  };
}

/**
 * Take a slave's consistent point: stop its SQL thread if it runs (and
 * register, in `cleanup`, the restart of exactly that), then read the
 * master coordinates it has applied. Replication found stopped is left so,
 * with a warning.
 */
export async function pauseSlave(ctx: BackupContext, control: Conn, warnings: string[], cleanup: CleanupStack): Promise<ReplicationPosition> {
  const host = ctx.source.socket ?? `${ctx.source.host}:${ctx.source.port}`;
  const before = await getSlaveStatus(control);
  if (!before) return readSlavePosition(control);
  const found = stoppedBeforeWarning(host, before);
  if (found) {
    warnings.push(found);
    ctx.log.warn({ io: before.ioRunning, sql: before.sqlRunning }, found);
  }
  const stop: ReplicationThread[] = runningThreads(before, ["sql"]);
  if (stop.length > 0) {
    // Registered before the stop: whatever happens next, the restart runs.
    cleanup.push(restartReplication(ctx, stop, warnings, { recorded: true }));
    await control.query("STOP SLAVE SQL_THREAD");
    await ctx.replication?.stopped({ threads: stop, at: new Date().toISOString() });
  }
  const pos = await readSlavePosition(control);
  ctx.log.info({ position: pos, stopped: stop }, stop.length > 0 ? "slave offline for backup" : "slave position read (replication was not running)");
  return pos;
}

/**
 * One dump, from the checks to the outcome. Without a sink the dump's bytes
 * come back as a stream, watched for the position comments on the way; with
 * one, mariadb-dump writes straight into it (an OS pipe into the agent's
 * compressor), and the coordinates are read from the dump's head, which the
 * agent reads back from the compressor's output.
 */
/** The control connection of a dump, what the server is, and the cleanup stack of the run. */
export interface DumpSource {
  control: Conn;
  info: ServerInfo;
  role: BackupOutcome["role"];
  /** host:port or the socket, for messages. */
  at: string;
  /** Undone in reverse order (closing the control connection last) by the run's settleOutcome or undoOnFailure. */
  cleanup: CleanupStack;
  /** `fn`, with a refused statement (ours or mariadb-dump's) reported as the privilege and the GRANT it needs. */
  privileged: <T>(what: string, fn: () => Promise<T>) => Promise<T>;
}

/** Connects to the source and reads its account and role; on failure nothing is left open. */
export async function openDumpSource(ctx: BackupContext): Promise<DumpSource> {
  const control = await connect(ctx.source, "source");
  const cleanup: CleanupStack = [async () => { await control.end().catch(() => undefined); }];
  const at = ctx.source.socket ?? `${ctx.source.host}:${ctx.source.port}`;
  let account = `'${ctx.source.user}'@'%'`;
  const privileged = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw asBackupPrivilegeError(err, account, at, what);
    }
  };
  return undoOnFailure(cleanup, async () => {
    const [me] = await queryRows<{ u: string }>(control, "SELECT CURRENT_USER() AS u");
    if (me?.u) account = quoteAccount(me.u);
    const info = await privileged("read the server's role (SHOW SLAVE STATUS)", () => getServerInfo(control));
    const role: BackupOutcome["role"] = info.isSlave ? "slave" : info.logBin ? "master" : "standalone";
    return { control, info, role, at, cleanup, privileged };
  });
}

async function startDump(ctx: BackupContext, sink: PipedSink | undefined): Promise<{ stream: Readable | undefined; outcome: Promise<BackupOutcome> }> {
  const opts = parseMysqldumpOptions(ctx.options);
  const { control, info, role, cleanup, privileged } = await openDumpSource(ctx);
  return undoOnFailure(cleanup, async () => {
    if (opts.databases) {
      const missing = await missingDatabases(control, opts.databases);
      if (missing.length > 0) throw badInput("InvalidOption", `databases not found on the source: ${missing.join(", ")}`);
    }
    const nonTx = await nonTransactionalTables(control, opts.databases);
    const lock = decideLockMode(opts.lock, nonTx);
    const warnings: string[] = [];
    if (opts.lock === "single-transaction" && nonTx.length > 0) {
      warnings.push(`single-transaction does not make these non-transactional tables consistent: ${nonTx.slice(0, 5).join(", ")}${nonTx.length > 5 ? ", ..." : ""}`);
    }
    if (role === "standalone") warnings.push("binary logging is off on the source: the backup records no replication position");

    let slavePos: ReplicationPosition | undefined;
    if (role === "slave") {
      slavePos = await privileged("stop the slave's SQL thread and read its position", () => pauseSlave(ctx, control, warnings, cleanup));
    }

    const creds = await writeDefaultsFile(ctx.source);
    cleanup.push(() => creds.cleanup());
    const args = buildDumpArgs({ defaultsFile: creds.path, connArgs: creds.args, lock, role, databases: opts.databases, users: opts.users });
    ctx.log.info({ command: opts.dumpCommand, args: args.slice(1), lock, role }, "dump started");
    const child = spawnTool(opts.dumpCommand, args, { stdout: sink ? sink.stdout : "pipe", signal: ctx.signal, what: "dump the source" });
    // The master's coordinates. Piped: from the head as soon as the agent
    // has it (the GTID, which mariadb-dump prints at the very end, from the
    // server for those coordinates, as mariadb-dump computes it, while the
    // binlog is surely still there). Streamed: from head and tail on the way.
    const scanner = sink ? undefined : new PositionScanner();
    // Streamed, the output ends only when mariadb-dump has exited 0.
    const output = scanner ? outputOf(child, (err) => err, [scanner]) : undefined;
    const fromHead = sink && role === "master"
      ? sink.head().then((h) => masterPosition(control, info, parseDumpPosition(h.toString("latin1"), "")))
      : undefined;
    fromHead?.catch(() => undefined);

    const outcome = settleOutcome(cleanup, async (): Promise<BackupOutcome> => {
      await privileged("dump the source", () => output?.done ?? child.done);
      let replication: ReplicationPosition | undefined = slavePos;
      if (role === "master") {
        const p = fromHead ? await fromHead : await masterPosition(control, info, parseDumpPosition(scanner?.head ?? "", scanner?.tailText ?? ""));
        replication = { role: "master", sourceServerId: info.serverId, ...p };
        if (!p.file) warnings.push("mariadb-dump printed no binlog coordinates; the backup has no replication position");
      }
      return {
        role,
        serverId: info.serverId,
        version: info.version,
        replication,
        details: {
          lock,
          databases: opts.databases ?? "all",
          users: opts.users,
          nonTransactionalTables: nonTx.length,
        },
        warnings,
      };
    });
    return { stream: output?.stream, outcome };
  });
}

/** The master position from the dump's coordinates; a MariaDB GTID missing from them is asked of the server for those coordinates. */
export async function masterPosition(
  control: Conn,
  info: { flavor: string },
  p: { file?: string; position?: number; gtid?: string },
): Promise<{ file?: string; position?: number; gtid?: string }> {
  if (p.gtid || !p.file || p.position === undefined || info.flavor !== "mariadb") return p;
  const [g] = await queryRows<{ pos: string | null }>(control, "SELECT BINLOG_GTID_POS(?, ?) AS pos", [p.file, p.position]);
  return g?.pos ? { ...p, gtid: g.pos } : p;
}

/** The mariadb client loading a dump from its stdin (a pipe), with its credentials file removed when it exits. */
async function startClient(ctx: RestoreContext): Promise<PipedLoader> {
  const opts = parseMysqldumpOptions(ctx.options);
  const creds = await writeDefaultsFile(ctx.target);
  const args = [
    `--defaults-extra-file=${creds.path}`,
    ...creds.args,
    // The load must not go into the target's own binlog: it would give the
    // new slave GTIDs of its own that the master never had.
    "--init-command=SET SESSION sql_log_bin=0",
    "--binary-mode",
    "--max-allowed-packet=1G",
    "--default-character-set=utf8mb4",
  ];
  let child;
  try {
    child = spawnTool(opts.clientCommand, args, { stdin: "pipe", stdout: "ignore", signal: ctx.signal, what: "load the dump into the target" });
  } catch (err) {
    await creds.cleanup();
    throw err;
  }
  const done = child.done.finally(() => creds.cleanup());
  done.catch(() => undefined);
  if (!child.stdin) {
    await done;
    throw new Error(`${opts.clientCommand} started without a stdin`);
  }
  return { stdin: child.stdin, done, kill: () => { child.kill(); } };
}

export const mysqldumpMethod: BackupMethod = {
  engine: "mysql",
  restoreInto: "server",
  name: "mysqldump",
  kind: "logical",
  extension: "sql",

  validateOptions(options) {
    parseMysqldumpOptions(options);
  },

  ...streamedOrPiped(startDump),

  async restore(ctx: RestoreContext, input: Readable): Promise<void> {
    // A corrupt or truncated object is the real cause when both fail.
    await feedChild(await startClient(ctx), input);
  },

  startLoader(ctx: RestoreContext): Promise<PipedLoader> {
    return startClient(ctx);
  },
};
