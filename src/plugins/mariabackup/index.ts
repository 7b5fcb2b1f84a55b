// The `mariabackup` method: a physical, hot copy of the whole server.
//
// Backup: `mariabackup --backup --stream=xbstream` on the server's host (it
// reads the data files directly, so the agent must see the data directory:
// a sidecar in the server's pod, or the server's machine), connecting over
// TCP or the socket for the locks and the position. The stream goes straight
// to the agent (compression, sha256, upload); nothing is staged. The
// position is taken under mariabackup's BACKUP STAGE BLOCK_COMMIT, so it is
// consistent with the copied data: on a master its own binlog file/position
// and GTID, on a slave (--slave-info) the master's coordinates it has
// applied (gtid_slave_pos, or file/position without GTID).
//
// On a slave nothing is stopped by default: with row-based replication the
// copy and the position are consistent without it. --safe-slave-backup
// (which stops the SQL thread for the whole copy) is used only when the SQL
// thread holds temporary tables (statement-based replication), which a copy
// would lose; `safeSlaveBackup: true|false` forces it. Whatever happens, the
// SQL thread mariabackup stopped is running afterwards; replication that was
// already stopped before the backup stays stopped, and the outcome says so.
//
// Restore into the empty data directory of a stopped server: `mbstream -x`
// into a staging directory inside it, `mariabackup --prepare`, then every
// entry is renamed into place (same filesystem) and the staging directory
// removed. The position comes from the restored data itself.
//
// Replica configuration: a temporary mariadbd on the restored data (no
// networking, private socket, no grant tables, no slave start) runs
// SET GLOBAL gtid_slave_pos + CHANGE MASTER TO and shuts down cleanly; the
// real server replicates by itself when it starts (master.info and
// mysql.gtid_slave_pos are in the data directory). See seed.ts. The same
// temporary server (temp-server.ts) replays archived binlogs into restored
// data: a point-in-time restore into --datadir.
import { mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Readable } from "node:stream";
import { badInput } from "../../lib/errors.js";
import { outputOf } from "../../lib/child-streams.js";
import { settleOutcome, undoOnFailure, type CleanupStack } from "../../lib/cleanup.js";
import { restartReplication } from "../mysqldump/index.js";
import { asBackupPrivilegeError, quoteAccount } from "../../db/privileges.js";
import { connect, queryRows, withConn, type Conn } from "../../db/connection.js";
import { writeDefaultsFile } from "../../db/defaults-file.js";
import { describeEndpoint, type Endpoint } from "../../db/endpoint.js";
import {
  getServerInfo,
  getSlaveStatus,
  runningThreads,
  stoppedBeforeWarning,
  type ReplicationThread,
  type ServerInfo,
  type SlaveStatus,
} from "../../db/replication.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import type { BackupContext, BackupOutcome, DatadirRestoreMethod, PipedSink } from "../contract.js";
import { streamedOrPiped } from "../piped.js";
import {
  buildBackupArgs,
  decideSafeSlaveBackup,
  parseBinlogPositionLine,
  parseMariabackupOptions,
  parseSlavePositionLine,
  parseToolVersion,
  summarizeBackupFailure,
  type BinlogCoordinates,
  type SlavePosition,
} from "./parse.js";
import { runTool } from "./proc.js";
import { configureRestoredReplica } from "./seed.js";
import { checkTemporaryServer, withTemporaryServer } from "./temp-server.js";
import { restoreStream, startPipedRestore } from "./restore.js";

type Row = Record<string, unknown>;

/** Schema directory names MariaDB writes unencoded (others are @-escaped on disk). */
const PLAIN_NAME = /^[A-Za-z0-9_]+$/;

/**
 * mariabackup copies files from `datadir` on this machine while it locks and
 * reads the position on the server: both must be the same server. Refuse a
 * data directory that is not here, or that does not hold the server's databases.
 */
async function checkLocalDatadir(c: Conn, source: Endpoint, datadir: string, fromOption: boolean): Promise<void> {
  const origin = fromOption ? "methodOptions.datadir" : "the server's @@datadir";
  let entries: string[];
  try {
    const st = await stat(datadir);
    if (!st.isDirectory()) throw Object.assign(new Error("not a directory"), { code: "ENOTDIR" });
    entries = await readdir(datadir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EACCES" || code === "EPERM") {
      throw badInput("DatadirUnreadable", `cannot read the data directory ${datadir} (${origin}): run the backup as the server's user or root`);
    }
    throw badInput(
      "DatadirNotLocal",
      `mariabackup copies the data files directly, so it must run where the server's data directory is: ${datadir} (${origin}) is not on this machine; ` +
        "run the backup on the server's host or in its pod, or set methodOptions.datadir to where the data directory is mounted here",
    );
  }
  const schemas = await queryRows<{ s: string }>(
    c,
    "SELECT schema_name AS s FROM information_schema.schemata WHERE schema_name NOT IN ('information_schema', 'performance_schema') ORDER BY schema_name",
  );
  const here = new Set(entries);
  const missing = schemas.map((r) => r.s).filter((s) => PLAIN_NAME.test(s) && !here.has(s));
  if (missing.length > 0) {
    throw badInput(
      "DatadirMismatch",
      `${datadir} on this machine is not the data directory of ${describeEndpoint(source)}: it lacks the server's databases ${missing.slice(0, 5).join(", ")}${missing.length > 5 ? ", ..." : ""}; ` +
        "run the backup on the server's host, or set methodOptions.datadir",
    );
  }
}

async function slaveOpenTempTables(c: Conn): Promise<number> {
  const rows = await queryRows<{ Value: string }>(c, "SHOW GLOBAL STATUS LIKE 'Slave_open_temp_tables'");
  return Number(rows[0]?.Value ?? "0") || 0;
}

function masterPosition(p: BinlogCoordinates, serverId: number): ReplicationPosition {
  const pos: ReplicationPosition = { role: "master", file: p.file, position: p.position, sourceServerId: serverId };
  if (p.gtid) pos.gtid = p.gtid;
  return pos;
}

/** The position of a slave backup: the master's coordinates it had applied, and which master that was. */
export function slavePosition(p: SlavePosition, master: { host?: string | undefined; port?: number | undefined; serverId?: number | undefined }): ReplicationPosition | undefined {
  const c = p.coordinates;
  if (!c) return undefined;
  const pos: ReplicationPosition = { role: "slave", ...c };
  if (master.host) pos.masterHost = master.host;
  if (master.port) pos.masterPort = master.port;
  if (master.serverId) pos.sourceServerId = master.serverId;
  return pos;
}

/**
 * One backup. Without a sink mariabackup's stdout comes back as a stream; with one, mariabackup
 * writes straight into it (an OS pipe into the agent's zstd).
 */
async function startBackup(ctx: BackupContext, sink: PipedSink | undefined): Promise<{ stream: Readable | undefined; outcome: Promise<BackupOutcome> }> {
  const opts = parseMariabackupOptions(ctx.options);
  const cleanup: CleanupStack = [];
  // A refused statement (ours or mariabackup's) names the privilege and the GRANT.
  const at = ctx.source.socket ?? `${ctx.source.host}:${ctx.source.port}`;
  let account = `'${ctx.source.user}'@'%'`;
  return undoOnFailure(cleanup, async () => {
    // What the server is, where its data is, and (on a slave) how it replicates.
    const c = await connect(ctx.source, "source");
    let role: BackupOutcome["role"];
    let info: ServerInfo;
    let datadir: string;
    let slave: SlaveStatus | undefined;
    let safeSlaveBackup = false;
    try {
      const [me] = await queryRows<{ u: string }>(c, "SELECT CURRENT_USER() AS u");
      if (me?.u) account = quoteAccount(me.u);
      info = await getServerInfo(c).catch((err: unknown) => {
        throw asBackupPrivilegeError(err, account, at, "read the server's role (SHOW SLAVE STATUS)");
      });
      role = info.isSlave ? "slave" : info.logBin ? "master" : "standalone";
      const [d] = await queryRows<{ d: string }>(c, "SELECT @@datadir AS d");
      if (!opts.datadir && !d?.d) throw badInput("DatadirUnknown", "the server did not report its data directory (@@datadir); set methodOptions.datadir");
      datadir = path.resolve(opts.datadir ?? d?.d ?? "");
      await checkLocalDatadir(c, ctx.source, datadir, opts.datadir !== undefined);
      if (role === "slave") {
        slave = await getSlaveStatus(c);
        safeSlaveBackup = decideSafeSlaveBackup(opts.safeSlaveBackup, true, await slaveOpenTempTables(c));
      }
    } finally {
      await c.end().catch(() => undefined);
    }
    const warnings: string[] = [];
    if (role === "standalone") warnings.push("binary logging is off on the source: the backup records no replication position");

    if (slave) {
      const host = ctx.source.socket ?? `${ctx.source.host}:${ctx.source.port}`;
      const found = stoppedBeforeWarning(host, slave);
      if (found) {
        warnings.push(found);
        ctx.log.warn({ io: slave.ioRunning, sql: slave.sqlRunning }, found);
      }
      // mariabackup stops the SQL thread itself (--safe-slave-backup), and a
      // killed mariabackup leaves it stopped: the SQL thread, if it ran
      // before, is started again when it is stopped afterwards. Replication
      // found stopped is never started. When --safe-slave-backup is asked
      // for, the stop is recorded before the tool starts, so a kill at any
      // point leaves a trace.
      const stop: ReplicationThread[] = runningThreads(slave, ["sql"]);
      const hooked = safeSlaveBackup && stop.length > 0;
      if (stop.length > 0) cleanup.push(restartReplication(ctx, stop, warnings, { recorded: hooked }));
      if (hooked) await ctx.replication?.stopped({ threads: stop, at: new Date().toISOString() });
    }

    const creds = await writeDefaultsFile(ctx.source);
    cleanup.push(() => creds.cleanup());
    // mariabackup's own bookkeeping (it writes nothing there when streaming, but wants the directory).
    const targetDir = await mkdtemp(path.join(tmpdir(), "replicator-mariabackup-"));
    cleanup.push(() => rm(targetDir, { recursive: true, force: true }));
    const args = buildBackupArgs({
      defaultsFile: creds.path,
      connArgs: creds.args,
      datadir,
      targetDir,
      parallel: opts.parallel,
      slaveInfo: role === "slave",
      safeSlaveBackup,
    });
    ctx.log.info({ command: opts.mariabackupCommand, args: args.slice(1), role, datadir, safeSlaveBackup }, "mariabackup started");

    let binlogPos: BinlogCoordinates | undefined;
    let slavePos: SlavePosition | undefined;
    let toolVersion: string | undefined;
    const child = runTool(opts.mariabackupCommand, args, {
      what: "back up the source",
      signal: ctx.signal,
      stdout: sink ? sink.stdout : "pipe",
      summarize: summarizeBackupFailure,
      onLine: (line) => {
        binlogPos = parseBinlogPositionLine(line) ?? binlogPos;
        slavePos = parseSlavePositionLine(line) ?? slavePos;
        toolVersion ??= parseToolVersion(line);
      },
    });
    // Piped: the agent never commits a run whose outcome failed. Streamed: a failed copy must not
    // look like a complete stream, so the upload fails too.
    const output = sink ? undefined : outputOf(child);

    const outcome = settleOutcome(cleanup, async (): Promise<BackupOutcome> => {
      // mariabackup's own "missing required privilege X on Y" lines are
      // named together by summarizeBackupFailure (test/integration/mariabackup.test.ts
      // holds that message); parse.ts mariabackupPrivilegeMessage would add the GRANT.
      await (output?.done ?? child.done);
      let replication: ReplicationPosition | undefined;
      if (role === "master") {
        if (binlogPos) {
          replication = masterPosition(binlogPos, info.serverId);
          if (!replication.gtid && info.flavor === "mariadb") {
            const [g] = await withConn(ctx.source, "read the GTID position", (cc) =>
              queryRows<Row>(cc, "SELECT BINLOG_GTID_POS(?, ?) AS pos", [binlogPos?.file, binlogPos?.position]),
            );
            if (typeof g?.pos === "string" && g.pos) replication.gtid = g.pos;
          }
        } else {
          warnings.push("mariabackup printed no binlog position; the backup has no replication position");
        }
      } else if (role === "slave") {
        replication = slavePos && slavePosition(slavePos, { host: slave?.masterHost, port: slave?.masterPort, serverId: slave?.masterServerId });
        if (!replication) warnings.push("mariabackup printed no slave position (--slave-info); the backup has no replication position");
        if (slavePos && slavePos.otherConnections.length > 0) {
          warnings.push(`multi-source replication: only the default connection's position was recorded (not ${slavePos.otherConnections.join(", ")})`);
        }
      }
      return {
        role,
        serverId: info.serverId,
        version: info.version,
        replication,
        details: {
          datadir,
          parallel: opts.parallel ?? 1,
          safeSlaveBackup,
          ...(toolVersion ? { mariabackupVersion: toolVersion } : {}),
        },
        warnings,
      };
    });
    return { stream: output?.stream, outcome };
  });
}

export const mariabackupMethod: DatadirRestoreMethod = {
  engine: "mysql",
  restoreInto: "datadir",
  name: "mariabackup",
  kind: "physical",
  extension: "xbstream",

  validateOptions(options) {
    parseMariabackupOptions(options);
  },

  /** mariabackup writes straight into the agent's zstd (an OS pipe): no byte of the copy passes through the agent. */
  ...streamedOrPiped(startBackup),

  async restore(ctx, input) {
    const opts = parseMariabackupOptions(ctx.options);
    return restoreStream(ctx, input, opts);
  },

  startRestore(ctx) {
    return startPipedRestore(ctx, parseMariabackupOptions(ctx.options));
  },

  async configureReplica(ctx) {
    const opts = parseMariabackupOptions(ctx.options);
    await configureRestoredReplica(ctx, opts);
  },

  checkTemporaryServer(options, signal) {
    return checkTemporaryServer(parseMariabackupOptions(options), signal);
  },

  withTemporaryServer(ctx, fn) {
    return withTemporaryServer({ datadir: ctx.datadir, opts: parseMariabackupOptions(ctx.options), purpose: ctx.purpose, log: ctx.log, signal: ctx.signal }, fn);
  },
};
