// Pure parts of the mariabackup method: options, command lines, and the
// parsers for what mariabackup prints and writes. The formats were captured
// from mariabackup 10.11 (see mariabackup.test.ts for the real lines).
import path from "node:path";
import { badInput } from "../../lib/errors.js";

export interface MariabackupOptions {
  /** The server's data directory as seen from here; default: the server's @@datadir. */
  datadir: string | undefined;
  /** mariabackup --parallel (threads copying files) on backup, mbstream --parallel on restore. */
  parallel: number | undefined;
  /** On a slave: --safe-slave-backup. "auto" uses it only when the SQL thread holds temporary tables. */
  safeSlaveBackup: "auto" | boolean;
  /** mariabackup --prepare --use-memory, e.g. "1G". */
  useMemory: string | undefined;
  mariabackupCommand: string;
  mbstreamCommand: string;
  mariadbdCommand: string;
  /** Extra flags for the temporary server that writes the replica configuration (e.g. encryption plugins). */
  mariadbdArgs: string[];
  /** How long the temporary server may take to start. */
  startTimeoutSeconds: number;
}

function command(o: Record<string, unknown>, key: string, dflt: string): string {
  const v = o[key];
  if (v === undefined) return dflt;
  if (typeof v !== "string" || v.trim() === "") throw badInput("InvalidOption", `${key} must be a command name or path (got ${JSON.stringify(v)})`);
  return v;
}

function wholeNumber(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  const n = typeof v === "number" ? v : typeof v === "string" && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw badInput("InvalidOption", `${key} must be a whole number from ${min} to ${max} (got ${JSON.stringify(v)})`);
  }
  return n;
}

export function parseMariabackupOptions(o: Record<string, unknown>): MariabackupOptions {
  if (o.databases !== undefined) {
    throw badInput("InvalidOption", "databases is not supported by mariabackup, which copies the whole server; use the mysqldump method for a subset of databases");
  }
  let datadir: string | undefined;
  if (o.datadir !== undefined) {
    if (typeof o.datadir !== "string" || !path.isAbsolute(o.datadir)) {
      throw badInput("InvalidOption", `datadir must be the absolute path of the server's data directory on this host (got ${JSON.stringify(o.datadir)})`);
    }
    datadir = path.resolve(o.datadir);
  }
  const ssb = o.safeSlaveBackup ?? "auto";
  let safeSlaveBackup: "auto" | boolean;
  if (ssb === "auto" || ssb === true || ssb === false) safeSlaveBackup = ssb;
  else if (ssb === "true" || ssb === "false") safeSlaveBackup = ssb === "true";
  else throw badInput("InvalidOption", `safeSlaveBackup must be auto, true or false (got ${JSON.stringify(ssb)})`);
  let useMemory: string | undefined;
  if (o.useMemory !== undefined) {
    const m = typeof o.useMemory === "number" ? String(o.useMemory) : o.useMemory;
    if (typeof m !== "string" || !/^\d+[KMG]?$/i.test(m)) {
      throw badInput("InvalidOption", `useMemory must be a size like 512M or 2G (got ${JSON.stringify(o.useMemory)})`);
    }
    useMemory = m;
  }
  const extra = o.mariadbdArgs ?? [];
  if (!Array.isArray(extra) || extra.some((a) => typeof a !== "string" || !a.startsWith("--"))) {
    throw badInput("InvalidOption", "mariadbdArgs must be a list of --flags for mariadbd");
  }
  return {
    datadir,
    parallel: wholeNumber(o, "parallel", 1, 64),
    safeSlaveBackup,
    useMemory,
    mariabackupCommand: command(o, "mariabackupCommand", "mariabackup"),
    mbstreamCommand: command(o, "mbstreamCommand", "mbstream"),
    mariadbdCommand: command(o, "mariadbdCommand", "mariadbd"),
    mariadbdArgs: extra as string[],
    startTimeoutSeconds: wholeNumber(o, "startTimeoutSeconds", 1, 86_400) ?? 300,
  };
}

/** Pure: --safe-slave-backup stops the SQL thread for the whole copy; only worth it when temporary tables would be lost. */
export function decideSafeSlaveBackup(requested: "auto" | boolean, isSlave: boolean, slaveOpenTempTables: number): boolean {
  if (!isSlave) return false;
  if (requested !== "auto") return requested;
  return slaveOpenTempTables > 0;
}

/** Pure: the mariabackup --backup command line (credentials are in the defaults file, which must come first). */
export function buildBackupArgs(o: {
  defaultsFile: string;
  connArgs: string[];
  datadir: string;
  targetDir: string;
  parallel: number | undefined;
  slaveInfo: boolean;
  safeSlaveBackup: boolean;
}): string[] {
  const args = [
    `--defaults-extra-file=${o.defaultsFile}`,
    "--backup",
    "--stream=xbstream",
    ...o.connArgs,
    `--datadir=${o.datadir}`,
    `--target-dir=${o.targetDir}`,
  ];
  if (o.parallel !== undefined) args.push(`--parallel=${o.parallel}`);
  if (o.slaveInfo) args.push("--slave-info");
  if (o.safeSlaveBackup) args.push("--safe-slave-backup");
  return args;
}

/** Pure: the temporary server on a restored, stopped data directory (replica configuration, replay of archived binlogs; temp-server.ts). */
export function buildSeedServerArgs(o: {
  datadir: string;
  tmp: string;
  layout: Record<string, string>;
  runAsUser: string | undefined;
  extra: string[];
}): string[] {
  const t = (f: string): string => path.join(o.tmp, f);
  return [
    "--no-defaults",
    `--datadir=${o.datadir}`,
    `--socket=${t("s.sock")}`,
    `--pid-file=${t("mariadbd.pid")}`,
    `--log-error=${t("error.log")}`,
    // Nobody but us: no TCP, and the socket is in a private directory. The
    // restored accounts are the source's, whose passwords we do not have.
    "--skip-networking",
    "--skip-grant-tables",
    "--skip-slave-start",
    "--event-scheduler=DISABLED",
    // The relay log this server would start belongs to it, not to the real
    // server (whose relay log name depends on its own host name and config):
    // keep it, and its position file, out of the data directory.
    `--relay-log=${t("relay-bin")}`,
    `--relay-log-index=${t("relay-bin.index")}`,
    `--relay-log-info-file=${t("relay-log.info")}`,
    "--innodb-buffer-pool-load-at-startup=OFF",
    "--innodb-buffer-pool-dump-at-shutdown=OFF",
    // A replay of archived binlogs sends each row event as one BINLOG statement:
    // as large as the master allowed, not the 16M default of a server without config.
    "--max-allowed-packet=1G",
    ...Object.entries(o.layout).map(([k, v]) => `--${k}=${v}`),
    ...(o.runAsUser ? [`--user=${o.runAsUser}`] : []),
    ...o.extra,
  ];
}

/** The InnoDB layout settings of backup-my.cnf the server must start with (the page size above all; the log size spares a resize). */
const LAYOUT_KEYS = ["innodb_page_size", "innodb_data_file_path", "innodb_undo_tablespaces", "innodb_log_file_size"];

/** Pure: the layout settings from backup-my.cnf. */
export function parseBackupMyCnf(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const m = /^\s*([A-Za-z0-9_-]+)\s*=\s*(.*?)\s*$/.exec(raw);
    if (!m?.[1] || m[2] === undefined) continue;
    const key = m[1].replace(/-/g, "_");
    if (LAYOUT_KEYS.includes(key) && /^[A-Za-z0-9_:;.,/+-]+$/.test(m[2])) out[key] = m[2];
  }
  return out;
}

export interface BinlogCoordinates {
  file: string;
  position: number;
  gtid?: string;
}

export type SlaveCoordinates = { gtid: string } | { file: string; position: number };

export interface SlavePosition {
  /** The default connection's coordinates (GTID, or file/position). */
  coordinates: SlaveCoordinates | undefined;
  /** Named (multi-source) connections found besides the default one. */
  otherConnections: string[];
}

/** Drop mariabackup's "[00] 2026-11-25 01:14:52 " and the server's "2026-11-25  1:14:52 0 [ERROR] " prefixes. */
export function stripLogPrefix(line: string): string {
  return line
    .replace(/^\[\d+\]\s+\d{4}-\d\d-\d\d\s+\d\d?:\d\d:\d\d\s+/, "")
    .replace(/^\d{4}-\d\d-\d\d\s+\d\d?:\d\d:\d\d\s+\d+\s+/, "")
    .trim();
}

/** Pure: "MySQL binlog position: filename 'mysql-bin.000001', position '20015', GTID of the last change '0-1-37'". */
export function parseBinlogPositionLine(line: string): BinlogCoordinates | undefined {
  const m = /MySQL binlog position: filename '([^']+)', position '(\d+)'(?:, GTID of the last change '([^']*)')?/.exec(line);
  if (!m?.[1] || !m[2]) return undefined;
  const out: BinlogCoordinates = { file: m[1], position: Number(m[2]) };
  if (m[3]) out.gtid = m[3];
  return out;
}

/**
 * Pure: "MySQL slave binlog position: gtid_slave_pos '0-1-37'; master '' master_use_gtid = slave_pos"
 * or "MySQL slave binlog position: master '' filename 'mysql-bin.000001' position '20015'".
 */
export function parseSlavePositionLine(line: string): SlavePosition | undefined {
  const i = line.indexOf("MySQL slave binlog position:");
  if (i < 0) return undefined;
  const text = line.slice(i);
  const other = new Set<string>();
  let coordinates: SlaveCoordinates | undefined;
  for (const m of text.matchAll(/master '([^']*)' filename '([^']*)' position '(\d+)'/g)) {
    if (m[1]) other.add(m[1]);
    else if (m[2]) coordinates = { file: m[2], position: Number(m[3]) };
  }
  for (const m of text.matchAll(/master '([^']*)' master_use_gtid/g)) if (m[1]) other.add(m[1]);
  const g = /gtid_slave_pos '([^']*)'/.exec(text);
  if (g?.[1] && /master '' master_use_gtid/.test(text)) coordinates = { gtid: g[1] };
  return { coordinates, otherConnections: [...other] };
}

/** Pure: xtrabackup_binlog_info / mariadb_backup_binlog_info: "file<TAB>position[<TAB>gtid]". */
export function parseBinlogInfo(text: string): BinlogCoordinates | undefined {
  const [file, pos, gtid] = text.trim().split(/\s+/);
  if (!file || !pos || !/^\d+$/.test(pos)) return undefined;
  const out: BinlogCoordinates = { file, position: Number(pos) };
  if (gtid) out.gtid = gtid;
  return out;
}

/**
 * Pure: xtrabackup_slave_info / mariadb_backup_slave_info, either
 * "SET GLOBAL gtid_slave_pos = '0-1-37';\nCHANGE MASTER TO master_use_gtid = slave_pos;" or
 * "CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=20015;" (one per connection;
 * named connections as CHANGE MASTER 'name' TO ...).
 */
export function parseSlaveInfo(text: string): SlavePosition {
  const other = new Set<string>();
  let coordinates: SlaveCoordinates | undefined;
  for (const m of text.matchAll(/CHANGE MASTER (?:'([^']*)' )?TO MASTER_LOG_FILE='([^']*)', MASTER_LOG_POS=(\d+)/gi)) {
    if (m[1]) other.add(m[1]);
    else if (m[2]) coordinates = { file: m[2], position: Number(m[3]) };
  }
  for (const m of text.matchAll(/CHANGE MASTER '([^']+)' TO master_use_gtid/gi)) if (m[1]) other.add(m[1]);
  const g = /SET GLOBAL gtid_slave_pos = '([^']*)'/i.exec(text);
  if (g?.[1] && /CHANGE MASTER TO master_use_gtid/i.test(text)) coordinates = { gtid: g[1] };
  return { coordinates, otherConnections: [...other] };
}

/** Pure: the version from "mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)". */
export function parseToolVersion(line: string): string | undefined {
  return /based on MariaDB server (\S+)/.exec(line)?.[1];
}

const ERRORISH = /\b(error|failed|failure|denied|cannot|can't|unable|fatal|corrupt\w*|invalid|wrong|not found|no such|refused|aborting)\b/i;
const NOISE = /(Starting shutdown|Shutdown completed|\[Note\]|^\s*$)/;

/** Pure: the line of a tool's stderr that says what went wrong (the last error-like line, else the last line), without log prefixes. */
export function lastErrorLine(lines: string[]): string {
  const cleaned = lines.map(stripLogPrefix).filter((l) => l !== "");
  for (let i = cleaned.length - 1; i >= 0; i--) {
    const l = cleaned[i] ?? "";
    if (ERRORISH.test(l) && !NOISE.test(l)) return l;
  }
  return cleaned[cleaned.length - 1] ?? "";
}

/** Pure: the privileges mariabackup said it is missing ("missing required privilege RELOAD on *.*"), grouped by where. */
export function missingPrivileges(lines: string[]): { grant: string; on: string }[] {
  const byOn = new Map<string, string[]>();
  for (const l of lines) {
    const m = /missing required privilege (.+?) on (\S+)\s*$/.exec(stripLogPrefix(l));
    if (!m?.[1] || !m[2]) continue;
    const list = byOn.get(m[2]) ?? [];
    if (!list.includes(m[1])) list.push(m[1]);
    byOn.set(m[2], list);
  }
  return [...byOn].map(([on, privs]) => ({ grant: privs.join(", "), on }));
}

/**
 * Pure: the one line for a backup user missing what mariabackup needs, with
 * the GRANT (not used yet: the CLI message is pinned by an integration test
 * owned elsewhere; see the note in index.ts).
 */
export function mariabackupPrivilegeMessage(account: string, at: string, missing: { grant: string; on: string }[]): string {
  return `backup user ${account} lacks privileges mariabackup needs on ${at} (${missing.map((m) => `${m.grant} on ${m.on}`).join(", ")}): ${missing
    .map((m) => `GRANT ${m.grant} ON ${m.on} TO ${account}`)
    .join("; ")}`;
}

/** Pure: why `mariabackup --backup` failed, in one line; missing privileges are named together. */
export function summarizeBackupFailure(lines: string[]): string {
  const missing = lines.map((l) => /missing required privilege (.+?)\s*$/.exec(stripLogPrefix(l))?.[1]).filter((x): x is string => x !== undefined);
  if (missing.length > 0) return `the backup user is missing privileges mariabackup needs: ${missing.join(", ")}`;
  return lastErrorLine(lines);
}

/** Pure: an mbstream complaint about its input (corrupt or truncated stream) rather than about writing files. */
export function isStreamReadError(line: string): boolean {
  return /xb_stream_read_chunk|wrong chunk magic|invalid checksum|incomplete chunk|unexpected end of stream|my_read\(\) failed/i.test(line);
}

/**
 * Pure: files of a source server's replication state that must never become
 * part of a restored data directory (mariabackup 10.11 does not copy them;
 * this guards against other versions and hand-made streams).
 */
export function isReplicationStateFile(name: string): boolean {
  return (
    /^(master|relay-log)(-.+)?\.info$/.test(name) ||
    name === "multi-master.info" ||
    /-relay-bin(-.+)?\.(index|\d+)$/.test(name) ||
    /-bin\.(index|\d{6,})$/.test(name)
  );
}
