// Replication control for MariaDB (tested) behind a dialect seam; MySQL 8
// differs in statement names and GTID format (see README: untested).
import { badInput, failed } from "../lib/errors.js";
import type { ReplicationPosition } from "../storage/catalog.js";
import { detectFlavour, queryRows, type Conn } from "./connection.js";
import { describeEndpoint, type Endpoint } from "./endpoint.js";

export interface ServerInfo {
  version: string;
  flavor: "mariadb" | "mysql";
  serverId: number;
  logBin: boolean;
  /** The server's own binlog GTID position (MariaDB @@gtid_binlog_pos). */
  gtidBinlogPos: string;
  /** SHOW SLAVE STATUS returned a row: replication is configured. */
  isSlave: boolean;
  readOnly: boolean;
}

export interface SlaveStatus {
  ioRunning: boolean;
  sqlRunning: boolean;
  masterHost: string;
  masterPort: number;
  masterServerId: number | undefined;
  relayMasterLogFile: string;
  execMasterLogPos: number;
  secondsBehindMaster: number | null;
  lastIoError: string;
  lastSqlError: string;
  usingGtid: string;
}

type Row = Record<string, unknown>;

const str = (v: unknown): string =>
  typeof v === "string" ? v : typeof v === "number" || typeof v === "bigint" ? v.toString() : v === null || v === undefined ? "" : JSON.stringify(v);
const num = (v: unknown): number => Number(str(v) || "0");

export async function getServerInfo(c: Conn): Promise<ServerInfo> {
  const [v] = await queryRows<Row>(
    c,
    "SELECT @@version AS version, @@version_comment AS versionComment, @@server_id AS serverId, @@log_bin AS logBin, @@read_only AS readOnly",
  );
  const version = str(v?.version);
  const flavor = detectFlavour(version, str(v?.versionComment));
  let gtidBinlogPos: string;
  if (flavor === "mariadb") {
    const [g] = await queryRows<Row>(c, "SELECT @@gtid_binlog_pos AS pos");
    gtidBinlogPos = str(g?.pos);
  } else {
    const [g] = await queryRows<Row>(c, "SELECT @@gtid_executed AS pos");
    gtidBinlogPos = str(g?.pos).replace(/\s+/g, "");
  }
  const status = await getSlaveStatus(c, flavor);
  return {
    version,
    flavor,
    serverId: num(v?.serverId),
    logBin: num(v?.logBin) === 1,
    gtidBinlogPos,
    isSlave: status !== undefined,
    readOnly: num(v?.readOnly) === 1,
  };
}

export async function getSlaveStatus(c: Conn, flavor: "mariadb" | "mysql" = "mariadb"): Promise<SlaveStatus | undefined> {
  const rows = await queryRows<Row>(c, flavor === "mariadb" ? "SHOW SLAVE STATUS" : "SHOW REPLICA STATUS");
  const r = rows[0];
  if (!r) return undefined;
  const pick = (...names: string[]): unknown => names.map((n) => r[n]).find((x) => x !== undefined);
  const sbm = pick("Seconds_Behind_Master", "Seconds_Behind_Source");
  return {
    ioRunning: str(pick("Slave_IO_Running", "Replica_IO_Running")) === "Yes",
    sqlRunning: str(pick("Slave_SQL_Running", "Replica_SQL_Running")) === "Yes",
    masterHost: str(pick("Master_Host", "Source_Host")),
    masterPort: num(pick("Master_Port", "Source_Port")),
    masterServerId: pick("Master_Server_Id", "Source_Server_Id") === undefined ? undefined : num(pick("Master_Server_Id", "Source_Server_Id")),
    relayMasterLogFile: str(pick("Relay_Master_Log_File", "Relay_Source_Log_File")),
    execMasterLogPos: num(pick("Exec_Master_Log_Pos", "Exec_Source_Log_Pos")),
    secondsBehindMaster: sbm === null || sbm === undefined ? null : num(sbm),
    lastIoError: str(r.Last_IO_Error),
    lastSqlError: str(r.Last_SQL_Error),
    usingGtid: str(r.Using_Gtid),
  };
}

/**
 * Stop the SQL thread of a slave and read the master coordinates it has
 * applied: the consistent point of a slave backup.
 */
export async function stopSqlThreadAndReadPosition(c: Conn): Promise<ReplicationPosition> {
  await c.query("STOP SLAVE SQL_THREAD");
  return readSlavePosition(c);
}

export type ReplicationThread = "io" | "sql";

/**
 * Pure: what a backup says when it finds a slave's replication (partly)
 * stopped before it started, by an admin or by a killed earlier run. It
 * leaves it so; undefined when both threads run.
 */
export function stoppedBeforeWarning(host: string, s: Pick<SlaveStatus, "ioRunning" | "sqlRunning">): string | undefined {
  if (s.ioRunning && s.sqlRunning) return undefined;
  const threads = `IO thread: ${s.ioRunning ? "Yes" : "No"}, SQL thread: ${s.sqlRunning ? "Yes" : "No"}`;
  const which = !s.ioRunning && !s.sqlRunning ? "replication" : !s.sqlRunning ? "the SQL thread of replication" : "the IO thread of replication";
  return `${which} on ${host} was already stopped before this backup (${threads}); it was left stopped — \`replicator online\` starts it`;
}

/** The threads of `wanted` that `s` shows running: the only ones a backup may stop (and so restart). */
export function runningThreads(s: Pick<SlaveStatus, "ioRunning" | "sqlRunning">, wanted: ReplicationThread[]): ReplicationThread[] {
  return wanted.filter((t) => (t === "io" ? s.ioRunning : s.sqlRunning));
}

/**
 * Start those of `threads` (the ones a backup stopped) that are stopped now;
 * a thread someone started meanwhile is left alone. Returns what it started.
 */
export async function restartStoppedThreads(c: Conn, threads: ReplicationThread[]): Promise<ReplicationThread[]> {
  if (threads.length === 0) return [];
  const now = await getSlaveStatus(c);
  if (!now) return [];
  const started: ReplicationThread[] = [];
  // The SQL thread first: the IO thread then has somewhere to deliver.
  if (threads.includes("sql") && !now.sqlRunning) {
    await c.query("START SLAVE SQL_THREAD");
    started.push("sql");
  }
  if (threads.includes("io") && !now.ioRunning) {
    await c.query("START SLAVE IO_THREAD");
    started.push("io");
  }
  return started;
}

/** The master coordinates a slave has applied (its SQL thread should not be running, for a consistent point). */
export async function readSlavePosition(c: Conn): Promise<ReplicationPosition> {
  const s = await getSlaveStatus(c);
  if (!s) throw failed("NotASlave", "replication is not configured on the source any more");
  const [g] = await queryRows<Row>(c, "SELECT @@gtid_slave_pos AS pos");
  const pos: ReplicationPosition = {
    role: "slave",
    file: s.relayMasterLogFile || undefined,
    position: s.execMasterLogPos || undefined,
    masterHost: s.masterHost || undefined,
    masterPort: s.masterPort || undefined,
  };
  const gtid = str(g?.pos);
  if (gtid) pos.gtid = gtid;
  if (s.masterServerId) pos.sourceServerId = s.masterServerId;
  return pos;
}

export async function startSlave(c: Conn): Promise<void> {
  await c.query("START SLAVE");
}

/** `offline`: a slave stops replicating; a master becomes read-only. */
export async function setOffline(c: Conn): Promise<{ role: "slave" | "master"; action: string }> {
  const s = await getSlaveStatus(c);
  if (s) {
    await c.query("STOP SLAVE");
    return { role: "slave", action: "replication stopped (STOP SLAVE)" };
  }
  await c.query("SET GLOBAL read_only = ON");
  return { role: "master", action: "read_only=ON: clients without READ_ONLY ADMIN can no longer write" };
}

/** `online`: a slave replicates again (and waits for both threads); a master accepts writes. */
export async function setOnline(c: Conn): Promise<{ role: "slave" | "master"; action: string; lag?: number | null }> {
  const s = await getSlaveStatus(c);
  if (s) {
    await c.query("START SLAVE");
    const st = await waitReplicating(c, 30_000);
    return { role: "slave", action: "replication running (START SLAVE)", lag: st.secondsBehindMaster };
  }
  await c.query("SET GLOBAL read_only = OFF");
  return { role: "master", action: "read_only=OFF: writes accepted" };
}

/** Wait until both replication threads run; fail with the server's own error if one stops. */
export async function waitReplicating(c: Conn, timeoutMs: number): Promise<SlaveStatus> {
  const deadline = Date.now() + timeoutMs;
  let last: SlaveStatus | undefined;
  for (;;) {
    last = await getSlaveStatus(c);
    if (!last) throw failed("NotASlave", "replication is not configured on the target");
    if (last.ioRunning && last.sqlRunning) return last;
    const err = last.lastIoError || last.lastSqlError;
    if (err && !last.ioRunning !== !last.sqlRunning) {
      // One thread stopped with an error: replication will not start by itself.
      throw failed("ReplicationFailed", `replication did not start: ${err}`);
    }
    if (err && !last.ioRunning && !last.sqlRunning) {
      throw failed("ReplicationFailed", `replication did not start: ${err}`);
    }
    if (Date.now() > deadline) {
      throw failed(
        "ReplicationFailed",
        `replication threads not running after ${Math.round(timeoutMs / 1000)}s (IO=${last.ioRunning ? "Yes" : "No"}, SQL=${last.sqlRunning ? "Yes" : "No"})${err ? `: ${err}` : ""}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

// ------------------------------------------------------------- GTID maths

/** Parse a MariaDB GTID position "D-S-N,D-S-N" into domain → {server, seq}. */
export function parseMariaGtid(pos: string): Map<number, { server: number; seq: bigint }> {
  const out = new Map<number, { server: number; seq: bigint }>();
  for (const part of pos.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)-(\d+)-(\d+)$/.exec(part);
    if (!m?.[1] || !m[2] || !m[3]) throw badInput("InvalidPosition", `invalid MariaDB GTID "${part}" in "${pos}"`);
    out.set(Number(m[1]), { server: Number(m[2]), seq: BigInt(m[3]) });
  }
  return out;
}

export interface ServeCheck {
  ok: boolean;
  /** One line: why the master cannot serve the position, and what to do. */
  reason?: string;
  /** Set when the master has purged binlogs the position needs (GTID positions): what the master still has. */
  purged?: MasterHorizon;
}

/** Where a master's binlogs begin and end, in GTIDs. */
export interface MasterHorizon {
  /** The master's oldest binlog file. */
  oldestFile: string;
  /** The GTID state at the start of its oldest binlog (BINLOG_GTID_POS(oldest, 4)): the last GTID it no longer has, per domain. */
  oldestStart: string;
  /** @@gtid_binlog_pos: the newest GTID in its binlogs, per domain. */
  current: string;
}

/**
 * Decide, purely, whether a master whose oldest binlog starts at GTID state
 * `oldestStart` and whose current binlog state is `current` can serve a slave
 * positioned at `backup`: every event after `backup` must still be in a binlog.
 */
export function decideGtidServable(backup: string, oldestStart: string, current: string): ServeCheck {
  const b = parseMariaGtid(backup);
  const o = parseMariaGtid(oldestStart);
  const cur = parseMariaGtid(current);
  for (const [domain, start] of o) {
    const have = b.get(domain);
    if (start.seq === 0n) continue;
    if (!have || have.seq < start.seq) {
      return {
        ok: false,
        purged: { oldestFile: "", oldestStart, current },
        reason: `the master has purged binlogs the backup needs (domain ${domain}: backup at ${have ? have.seq : "none"}, oldest binlog starts after ${start.seq}); take a new backup, or raise the master's binlog retention (expire_logs_days / binlog_expire_logs_seconds)`,
      };
    }
  }
  for (const [domain, have] of b) {
    const c = cur.get(domain);
    if (!c || c.seq < have.seq) {
      return {
        ok: false,
        reason: `the backup's GTID position (domain ${domain} at ${have.seq}) is ahead of the master's binlog (${c ? c.seq : "none"}); is --replicate-from the master this backup came from?`,
      };
    }
  }
  return { ok: true };
}

/**
 * Pure: the GTID state a master's oldest binlog begins after, from its
 * GTID_LIST (BINLOG_GTID_POS(oldest, 4)) and the first GTIDs in it: a domain
 * the list lacks whose first GTID there is D-S-Q with Q > 1 begins after
 * D-S-(Q-1). A server seeded from a backup (gtid_slave_pos set, its own
 * binlog empty) and then promoted writes an empty GTID_LIST into its first
 * binlog, and MariaDB serves a slave positioned before that binlog's first
 * GTID by skipping the difference (seen on 10.11: a slave at 0-31-3 was
 * sent 0-31-6 next), so that binlog must count as the purge horizon.
 */
export function oldestBinlogStart(listed: string, firstGtids: string[]): string {
  const state = parseMariaGtid(listed);
  for (const text of firstGtids) {
    for (const [domain, g] of parseMariaGtid(text)) {
      if (!state.has(domain) && g.seq > 1n) state.set(domain, { server: g.server, seq: g.seq - 1n });
    }
  }
  return [...state.entries()].sort(([a], [b]) => a - b).map(([d, g]) => `${d}-${g.server}-${g.seq}`).join(",");
}

/** Compare binlog file names like mysql-bin.000012 by their numeric suffix. */
export function binlogIndex(file: string): number {
  const m = /\.(\d+)$/.exec(file);
  return m?.[1] ? Number(m[1]) : -1;
}

/** Check, on the master, that it still has every binlog from `pos` onward. */
export async function checkMasterCanServe(master: Conn, pos: ReplicationPosition, masterDesc: string): Promise<ServeCheck> {
  let logs: Row[];
  try {
    logs = await queryRows<Row>(master, "SHOW BINARY LOGS");
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "ER_NO_BINARY_LOGGING") {
      return { ok: false, reason: `${masterDesc} has binary logging off, so no slave can replicate from it; start it with --log-bin` };
    }
    if (code === "ER_SPECIFIC_ACCESS_DENIED_ERROR" || code === "ER_ACCESS_DENIED_ERROR") {
      return {
        ok: false,
        reason: `the replication user cannot list the master's binlogs; GRANT BINLOG MONITOR (REPLICATION CLIENT) to it so the seed check can run`,
      };
    }
    throw err;
  }
  const files = logs.map((l) => str(l.Log_name));
  const oldest = files[0];
  if (!oldest) return { ok: false, reason: `${masterDesc} reports no binary logs` };
  if (pos.gtid) {
    const [o] = await queryRows<Row>(master, "SELECT BINLOG_GTID_POS(?, 4) AS pos", [oldest]);
    const [cur] = await queryRows<Row>(master, "SELECT @@gtid_binlog_pos AS pos");
    // The first GTIDs of the oldest binlog (GTID events: "BEGIN GTID 0-1-42", "GTID 0-1-43").
    const events = await queryRows<Row>(master, "SHOW BINLOG EVENTS IN ? LIMIT 200", [oldest]);
    const first = events.map((e) => /\bGTID (\d+-\d+-\d+)/.exec(str(e.Info))?.[1]).filter((g): g is string => g !== undefined);
    const check = decideGtidServable(pos.gtid, oldestBinlogStart(str(o?.pos), first), str(cur?.pos));
    return check.purged ? { ...check, purged: { ...check.purged, oldestFile: oldest } } : check;
  }
  if (pos.file) {
    if (!files.includes(pos.file)) {
      const purged = binlogIndex(pos.file) < binlogIndex(oldest);
      return {
        ok: false,
        reason: purged
          ? `the master has purged ${pos.file} (oldest is ${oldest}); take a new backup, or raise the master's binlog retention`
          : `the master has no binlog ${pos.file} (it has ${oldest}..${files[files.length - 1] ?? oldest}); is --replicate-from the master this backup came from?`,
      };
    }
    return { ok: true };
  }
  return { ok: false, reason: "the backup recorded no replication position (was binary logging off on its source?), so a slave cannot be seeded from it" };
}

/** Point the target at `master` at `pos`, start replication, and wait until both threads run. */
export async function configureReplica(
  c: Conn,
  master: Endpoint,
  pos: ReplicationPosition,
  opts: { timeoutMs: number },
): Promise<SlaveStatus> {
  await c.query("STOP SLAVE").catch(() => undefined);
  await c.query("RESET SLAVE ALL");
  const common = [
    `MASTER_HOST=${c.escape(master.host)}`,
    `MASTER_PORT=${master.port}`,
    `MASTER_USER=${c.escape(master.user)}`,
    `MASTER_PASSWORD=${c.escape(master.password ?? "")}`,
    "MASTER_CONNECT_RETRY=5",
  ];
  if (pos.gtid) {
    await c.query("SET GLOBAL gtid_slave_pos = ?", [pos.gtid]);
    await c.query(`CHANGE MASTER TO ${[...common, "MASTER_USE_GTID=slave_pos"].join(", ")}`);
  } else if (pos.file && pos.position !== undefined) {
    await c.query(
      `CHANGE MASTER TO ${[...common, `MASTER_LOG_FILE=${c.escape(pos.file)}`, `MASTER_LOG_POS=${pos.position}`, "MASTER_USE_GTID=no"].join(", ")}`,
    );
  } else {
    throw badInput("NoPosition", "the backup has no replication position; cannot start replication from it");
  }
  await c.query("START SLAVE");
  try {
    return await waitReplicating(c, opts.timeoutMs);
  } catch (err) {
    throw failed(
      "ReplicationFailed",
      `${err instanceof Error ? err.message : String(err)} (replicating from ${describeEndpoint(master)})`,
      { cause: err },
    );
  }
}
