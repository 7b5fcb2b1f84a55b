// What the point-in-time recovery tests (test/integration/pitr*.test.ts)
// share: a master with binlogs and the real S3 server started together, the
// GTID and binlog positions they read, the writes they make, and the
// "accident" scenario that the logical and the physical PITR tests restore
// around.
import path from "node:path";
import { expect } from "vitest";
import { runCli, type CliResult } from "./cli.js";
import { seedShop } from "./fixtures.js";
import { checksums, startMariaDb, waitFor, type MariaDb, type MariaDbOptions } from "./mariadb.js";
import { startS3, type S3Server } from "./s3.js";

/** The schemas whose CHECKSUM TABLE the tests compare. */
export const SCHEMAS = ["shop", "app"];

/** The replication account's password (createReplUser, replEnv). */
const REPL_PASSWORD = "replpass";

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function gtidPos(s: MariaDb): Promise<string> {
  const [r] = await s.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
  return r?.pos ?? "";
}

/** The GTID the master gives its next transaction (one domain, one server here). */
export function nextGtid(pos: string): string {
  const [d, s, n] = pos.split("-").map(Number);
  return `${d}-${s}-${(n ?? 0) + 1}`;
}

/** The server's clock, to the second (what --until takes). */
export async function utcNow(s: MariaDb): Promise<Date> {
  const [r] = await s.query<{ t: string }>("SELECT DATE_FORMAT(UTC_TIMESTAMP(), '%Y-%m-%dT%H:%i:%sZ') AS t");
  return new Date(r?.t ?? "");
}

/** The binlog the server writes to now. */
export async function currentFile(s: MariaDb): Promise<string> {
  const [r] = await s.query<{ File: string }>("SHOW MASTER STATUS");
  return r?.File ?? "";
}

/** [Slave_IO_Running, Slave_SQL_Running], "-" where the server is no slave. */
export async function threads(s: MariaDb): Promise<[string, string]> {
  const [r] = await s.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
  return [r?.Slave_IO_Running ?? "-", r?.Slave_SQL_Running ?? "-"];
}

/** How many tables the schemas shop and app hold (0: nothing was loaded). */
export async function tablesIn(s: MariaDb): Promise<number> {
  const [n] = await s.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema IN ('shop','app')");
  return Number(n?.n);
}

/** PURGE BINARY LOGS TO `file`, again until it is gone (only once InnoDB's binlog checkpoint has passed it). */
export async function purgeBinlogsTo(s: MariaDb, file: string, what = "the master to purge its old binlogs"): Promise<void> {
  await waitFor(async () => {
    await s.query(`PURGE BINARY LOGS TO '${file}'`);
    const logs = await s.query<{ Log_name: string }>("SHOW BINARY LOGS");
    return logs[0]?.Log_name === file;
  }, what);
}

/** Where the S3 server keeps the archived binlogs of `serverId` for `repo` (s3://bucket/prefix) and `cluster`. */
export function archiveDir(s3: S3Server, repo: string, cluster: string, serverId: number): string {
  const [, bucket = "", prefix = ""] = /^s3:\/\/([^/]+)\/?(.*)$/.exec(repo) ?? [];
  return path.join(s3.root, bucket, prefix, cluster, "binlogs", String(serverId));
}

/** One row into app.events (at, v) ("timed" tables). */
export async function insertEvent(s: MariaDb, v: string): Promise<void> {
  await s.query("INSERT INTO app.events (at, v) VALUES (UTC_TIMESTAMP(6), ?)", [v]);
}

/** `n` rows `${v} 0` .. into app.events (at, v) ("timed" tables), one transaction each. */
export async function writeEvents(s: MariaDb, v: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++) await insertEvent(s, `${v} ${i}`);
}

/** `n` times a row into app.events (v) and into app.journal (v), then an UPDATE of shop.customers ("journal" tables). */
export async function writeJournal(s: MariaDb, v: string, n = 3): Promise<void> {
  for (let i = 0; i < n; i++) {
    await s.query("INSERT INTO app.events (v) VALUES (?)", [`${v} ${i}`]);
    // No primary key: a transaction applied twice leaves a second row, and the checksums differ.
    await s.query("INSERT INTO app.journal (v) VALUES (?)", [`${v} ${i}`]);
  }
  await s.query("UPDATE shop.customers SET balance = balance + 1 WHERE id <= 20");
}

/** The replication account repl@127.0.0.1 that replicateFrom() names. */
export async function createReplUser(s: MariaDb): Promise<void> {
  await s.query(`CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY '${REPL_PASSWORD}'`);
  await s.query("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'127.0.0.1'");
}

/** --replicate-from for a master with createReplUser(). */
export const replicateFrom = (master: MariaDb): string => `mysql://repl@127.0.0.1:${master.port}`;

/** The CLI's env for S3 and the replication account's password. */
export const replEnv = (s3: S3Server): Record<string, string> => ({ ...s3.env, REPLICATOR_REPLICATION_PASSWORD: REPL_PASSWORD });

export interface MasterOptions {
  /** Rows of seedShop. */
  rows: number;
  /** "timed": app.events (id, at, v); "journal": app.events (id, v) and app.journal (v), without a primary key. */
  tables: "timed" | "journal";
  /** Create the replication account (createReplUser) first. */
  repl?: boolean;
}

/** The schemas shop (seedShop) and app on a new master. */
export async function prepareMaster(master: MariaDb, opts: MasterOptions): Promise<void> {
  if (opts.repl) await createReplUser(master);
  await seedShop(master, { rows: opts.rows });
  if (opts.tables === "timed") {
    await master.query("CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6) NOT NULL, v VARCHAR(64)) ENGINE=InnoDB");
  } else {
    await master.query("CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB");
    await master.query("CREATE TABLE app.journal (v VARCHAR(64)) ENGINE=InnoDB");
  }
}

/** The standard setup: the S3 server with `bucket`, and a master with binlogs and `serverId`, prepared (prepareMaster). */
export async function startPitr(opts: MasterOptions & { bucket: string; serverId: number }): Promise<{ s3: S3Server; master: MariaDb }> {
  const [s3, master] = await Promise.all([startS3(), startMariaDb({ binlog: true, serverId: opts.serverId })]);
  await s3.createBucket(opts.bucket);
  await prepareMaster(master, opts);
  return { s3, master };
}

/** Destroys the servers (a group at a time, in order; undefined where a start failed), then stops the S3 server. */
export async function stopPitr(s3: S3Server | undefined, ...groups: (MariaDb | MariaDb[] | undefined)[]): Promise<void> {
  for (const g of groups) {
    const started = (Array.isArray(g) ? g : [g]).filter((s): s is MariaDb => s !== undefined);
    await Promise.all(started.map((s) => s.destroy()));
  }
  await s3?.stop();
}

/** A server with binlogs to restore into, destroyed with `servers`. */
export async function startTarget(servers: MariaDb[], opts: MariaDbOptions = {}): Promise<MariaDb> {
  const s = await startMariaDb({ binlog: true, ...opts });
  servers.push(s);
  return s;
}

/**
 * Writes after a backup on a master with "timed" tables: rows, a rotation,
 * then app.later, a table the backup does not have, with two rows. Returns the
 * binlog app.later is created in.
 */
export async function writeAfterBackup(master: MariaDb): Promise<string> {
  await writeEvents(master, "after backup", 5);
  await master.query("FLUSH BINARY LOGS");
  const file = await currentFile(master);
  await master.query("CREATE TABLE app.later (id INT PRIMARY KEY, note TEXT) ENGINE=InnoDB");
  await master.query("INSERT INTO app.later VALUES (1, 'one'), (2, 'two')");
  return file;
}

export interface Accident {
  /** CHECKSUM TABLE of SCHEMAS just before the accident. */
  reference: Record<string, string>;
  /** The GTID state just before the accident. */
  lastGood: string;
  /** When the accident happened, to the second, over two seconds after the last good write. */
  accidentAt: Date;
  /** The accident's first GTID (DROP TABLE app.later). */
  accidentGtid: string;
  /** `binlog-archive --once --json` run after it. */
  archived: CliResult;
}

/**
 * The accident scenario on a master with "timed" tables and app.later: writes
 * across a binlog rotation, the reference taken, then the accident (DROP
 * TABLE app.later, a bad UPDATE), writes after it across another rotation,
 * and one `binlog-archive --once` of `cluster` in `repo`.
 */
export async function runAccident(s3: S3Server, master: MariaDb, repo: string, cluster: string): Promise<Accident> {
  await writeEvents(master, "between rotations", 5);
  await master.query("FLUSH BINARY LOGS");
  await writeEvents(master, "last good", 5);
  const reference = await checksums(master, SCHEMAS);
  const lastGood = await gtidPos(master);
  await sleep(2200);
  // The accident: a table dropped, then a bad UPDATE.
  const accidentAt = await utcNow(master);
  await master.query("DROP TABLE app.later");
  await master.query("UPDATE shop.customers SET name = 'oops'");
  const accidentGtid = nextGtid(lastGood);
  await writeEvents(master, "after the accident", 3);
  await master.query("FLUSH BINARY LOGS");
  await insertEvent(master, "in the open binlog");
  expect(await checksums(master, SCHEMAS)).not.toEqual(reference);
  const archived = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", cluster, "--once", "--json"], s3.env);
  return { reference, lastGood, accidentAt, accidentGtid, archived };
}
