// Backup/restore benchmark: `replicator` against the plain tools, on
// generated data sets, in one run. `make bench` (or `tsx bench/run.ts`);
// BENCH_SIZE_MB sets the data set size (raw dump size, default 200).
// BENCH_RUNS=N (default 1) runs the logical, physical, PostgreSQL and S3 rows N times in paired rounds:
// each round runs every pipeline once, in alternating order, and the ratio is
// the median of the per-round ratios (machine drift cancels within a round).
// BENCH_ONLY picks parts (comma-separated; default: all of them):
//   mariadb         every MariaDB row (logical, mydumper, gzip, physical);
//   logical         the MariaDB logical rows only (with mydumper/myloader; no gzip or physical rows);
//   logical-backup  the MariaDB logical backups only (no restores);
//   logical-restore the MariaDB logical restores only (the backups they need are taken once first);
//   physical        the MariaDB physical rows only (mariabackup, replicator's mariabackup method);
//   pg              PostgreSQL: pg_dump and pg_basebackup against their pipelines (bench/pg.ts);
//   s3              S3 throughput: the S3 store against the SDK's plain PUT/GET (bench/s3.ts);
//   replay          binlog replay: the archive's replay against mariadb-binlog | mariadb (bench/replay.ts).
// BENCH_BEFORE_DIST=DIR adds the replicator rows of another build (a dist/
// directory, e.g. the previous commit's) to the same rounds, for before/after.
// BENCH_ROWS=REGEX runs only the pipelines whose name matches (and each table's
// baseline) in the rounds of this file; a backup that a selected restore needs is still taken.
// Every replicator row also shows the agent's peak RSS (bench/common.ts).
// Prints a markdown report and writes it to bench/results/latest.md.
// Every figure is measured; a step that fails is reported as FAILED.
import { spawnSync } from "node:child_process";
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { cp, mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { CLI } from "../test/harness/cli.js";
import { startMariaDb, type MariaDb } from "../test/harness/mariadb.js";
import { startS3, type S3Server } from "../test/harness/s3.js";
import { ratioChart, type ChartSection } from "./chart.js";
import {
  busy,
  cleanupAll,
  dirSize,
  fileSize,
  fmt,
  MB,
  noteAgent,
  mariadbServer,
  onCleanup,
  pairedRounds,
  peakRss,
  q,
  ratioOf,
  RSS_TARGET,
  runReplicator,
  sh,
  step,
  table,
  tail,
  timed,
  version,
  type BenchPart,
  type CliJson,
  type Pipeline,
  type ReportTable,
  type Row,
} from "./common.js";
import { pgBench } from "./pg.js";
import { replayBench } from "./replay.js";
import { s3Bench } from "./s3.js";

const repoRoot = path.resolve(import.meta.dirname, "..");
const sizeMb = Number(process.env.BENCH_SIZE_MB ?? "200");
if (!Number.isFinite(sizeMb) || sizeMb <= 0) throw new Error(`BENCH_SIZE_MB must be a positive number (got ${process.env.BENCH_SIZE_MB ?? ""})`);
const RUNS = Number(process.env.BENCH_RUNS ?? "1");
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`BENCH_RUNS must be a whole number >= 1 (got ${process.env.BENCH_RUNS ?? ""})`);
const ONLY_VALUES = ["mariadb", "logical", "logical-backup", "logical-restore", "physical", "pg", "s3", "replay"] as const;
const ONLY = (process.env.BENCH_ONLY ?? "").split(",").map((s) => s.trim()).filter(Boolean);
for (const o of ONLY) {
  if (!(ONLY_VALUES as readonly string[]).includes(o)) throw new Error(`BENCH_ONLY: unknown part "${o}" (one or more of ${ONLY_VALUES.join(", ")}, comma-separated)`);
}
const only = (...parts: (typeof ONLY_VALUES)[number][]): boolean => ONLY.length === 0 || parts.some((p) => ONLY.includes(p));
const WANT_LOGICAL_BACKUPS = only("mariadb", "logical", "logical-backup");
const WANT_LOGICAL_RESTORES = only("mariadb", "logical", "logical-restore");
/** The gzip row: every MariaDB row (BENCH_ONLY unset or mariadb). */
const WANT_MARIADB_ALL = only("mariadb");
const WANT_PHYSICAL = only("mariadb", "physical");
const WANT_MARIADB = WANT_LOGICAL_BACKUPS || WANT_LOGICAL_RESTORES || WANT_MARIADB_ALL || WANT_PHYSICAL;
const WANT_PG = only("pg");
const WANT_S3 = only("s3");
const WANT_REPLAY = only("replay");
const ROWS_RE = ((): RegExp | undefined => {
  const r = process.env.BENCH_ROWS;
  if (r === undefined || r === "") return undefined;
  try {
    return new RegExp(r);
  } catch (err) {
    throw new Error(`BENCH_ROWS is not a regular expression: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
})();
/** The pipelines of a table that run in its rounds: BENCH_ROWS's matches, and always the baseline. */
const selected = <P extends Pipeline>(ps: P[]): P[] => ps.filter((p) => p.baseline === true || ROWS_RE === undefined || ROWS_RE.test(p.name));
/** The S3 reference row: a DBA's own streaming pipe into the S3 server (rclone, configured by environment only). */
const RCLONE_ROW = "mariadb-dump | zstd -3 | rclone rcat → S3 versitygw (a DBA's pipe: for reference)";
if (WANT_LOGICAL_BACKUPS && (ROWS_RE === undefined || ROWS_RE.test(RCLONE_ROW)) && spawnSync("sh", ["-c", "command -v rclone"]).status !== 0) {
  console.error(`bench: rclone is not on PATH (the row "${RCLONE_ROW}" needs it): apt-get install rclone`);
  process.exit(1);
}
/** A restore pipeline, and the backup pipeline (by name) whose result it restores. */
type RestorePipeline = Pipeline & { needs: string };
const BEFORE_DIST = process.env.BENCH_BEFORE_DIST;
const THREADS = Number(process.env.BENCH_THREADS ?? "2");
const DB = "bench";
const TABLES = ["orders", "customers", "events"] as const;
const BIGGEST = "orders";
// Same server settings for the source and every restore target.
const SERVER_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-log-file-size=256M", "--max-allowed-packet=1G"];

function server(tag: string, opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  return mariadbServer(tag, SERVER_ARGS, opts);
}

// ---------------------------------------------------------------- helpers

function clientArgs(s: MariaDb): string {
  return `--host=127.0.0.1 --port=${s.port} --user=root --protocol=TCP`;
}

// `make build` elsewhere during the run (it deletes dist/) cannot break it.
// The snapshot lives inside the repository so node_modules still resolves.
// One per bench process: two benches at once must not delete each other's.
const cliSnapshot = path.join(repoRoot, `bench/results/.dist-snapshot-${process.pid}`);
const cliMain = path.join(cliSnapshot, path.relative(path.join(repoRoot, "dist"), CLI));

async function snapshotCli(): Promise<void> {
  if (!(await stat(CLI).then(() => true, () => false))) throw new Error(`${CLI} not found; run \`make build\` (or \`make bench\`)`);
  await rm(cliSnapshot, { recursive: true, force: true });
  onCleanup("CLI snapshot", () => rm(cliSnapshot, { recursive: true, force: true }));
  await cp(path.join(repoRoot, "dist"), cliSnapshot, { recursive: true });
  if (BEFORE_DIST !== undefined) {
    await rm(beforeSnapshot, { recursive: true, force: true });
    onCleanup("before CLI snapshot", () => rm(beforeSnapshot, { recursive: true, force: true }));
    await cp(BEFORE_DIST, beforeSnapshot, { recursive: true });
  }
}

// The other build's CLI (BENCH_BEFORE_DIST), also inside the repository so its imports resolve.
const beforeSnapshot = path.join(repoRoot, `bench/results/.dist-before-${process.pid}`);
const beforeMain = path.join(beforeSnapshot, path.relative(path.join(repoRoot, "dist"), CLI));

async function replicator(args: string[], env: Record<string, string>, cwd: string, main: string = cliMain): Promise<CliJson> {
  return runReplicator(main, args, env, cwd);
}

/** `replicator backup ARGS` as a row's run: timed, its RSS, stored size and CLI time on the row; `seen` gets the CLI's JSON. */
function backupRun(args: string[], env: Record<string, string>, cwd: string, main: string = cliMain, seen?: (j: CliJson | undefined) => void): (row: Row) => Promise<number> {
  return async (row) => {
    let j: CliJson | undefined;
    const sec = await timed(async () => {
      j = await replicator(["backup", ...args, "--compression", "zstd"], env, cwd, main);
    });
    noteAgent(row, j);
    row.bytes = j?.size;
    seen?.(j);
    row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
    return sec;
  };
}

// ---------------------------------------------------------------- data set

const WORDS = [
  "alpha", "order", "shipping", "invoice", "customer", "delivery", "express", "standard", "return", "refund",
  "warehouse", "berlin", "paris", "london", "madrid", "rome", "priority", "gift", "wrap", "fragile",
  "large", "small", "blue", "red", "green", "black", "white", "cotton", "steel", "wood", "glass", "paper",
];
const FIRST = ["anna", "ben", "carla", "david", "eva", "felix", "greta", "hugo", "ines", "jonas", "klara", "luis", "mia", "noah", "olga", "paul"];
const LAST = ["schmidt", "martin", "rossi", "garcia", "smith", "nowak", "dubois", "jensen", "silva", "weber", "moreau", "kowalski", "novak", "horvat", "berg", "lopez"];
const list = (xs: string[]): string => xs.map((x) => `'${x}'`).join(",");
/** A word picked by two hex digits of `hex` at 1-based `pos`. */
const word = (hex: string, pos: number): string => `ELT(1 + CONV(SUBSTR(${hex}, ${pos}, 2), 16, 10) % ${WORDS.length}, ${list(WORDS)})`;
/** 6..(6+spread) words of text from two hashes. */
function text(spread: number, lenExpr: string): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i++) words.push(word("m", 1 + 2 * i));
  for (let i = 0; i < 8; i++) words.push(word("m2", 1 + 2 * i));
  return `SUBSTRING_INDEX(CONCAT_WS(' ', ${words.join(", ")}), ' ', 6 + (${lenExpr}) % ${spread})`;
}

const DDL = [
  `CREATE DATABASE ${DB}`,
  `CREATE TABLE ${DB}.customers (
     id INT UNSIGNED NOT NULL PRIMARY KEY,
     first_name VARCHAR(32) NOT NULL,
     last_name VARCHAR(32) NOT NULL,
     email VARCHAR(128) NOT NULL,
     country CHAR(2) NOT NULL,
     balance DECIMAL(14,2) NOT NULL,
     score DOUBLE NOT NULL,
     is_active TINYINT NOT NULL,
     created_at DATETIME NOT NULL,
     bio TEXT NULL,
     UNIQUE KEY email (email)
   ) ENGINE=InnoDB`,
  `CREATE TABLE ${DB}.orders (
     id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
     customer_id INT UNSIGNED NOT NULL,
     status VARCHAR(16) NOT NULL,
     amount DECIMAL(12,2) NOT NULL,
     tax DECIMAL(10,4) NOT NULL,
     quantity SMALLINT NOT NULL,
     created_at DATETIME NOT NULL,
     sku VARCHAR(32) NOT NULL,
     note VARCHAR(255) NULL,
     description TEXT NULL,
     KEY customer (customer_id),
     KEY created (created_at)
   ) ENGINE=InnoDB`,
  `CREATE TABLE ${DB}.events (
     id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
     order_id BIGINT UNSIGNED NOT NULL,
     kind TINYINT UNSIGNED NOT NULL,
     ts DATETIME(3) NOT NULL,
     payload VARCHAR(512) NOT NULL,
     KEY order_id (order_id)
   ) ENGINE=InnoDB`,
];

/** INSERT ... SELECT of rows [a, b] into `table` (server-side, from the SEQUENCE engine). */
function insertSql(table: (typeof TABLES)[number], a: number, b: number, customers: number): string {
  const from = `(SELECT seq, MD5(seq) AS m, MD5(seq + 1000000000) AS m2 FROM ${DB}.seq_${a}_to_${b}) s`;
  switch (table) {
    case "customers":
      return `INSERT INTO ${DB}.customers SELECT
        seq,
        ELT(1 + seq % ${FIRST.length}, ${list(FIRST)}),
        ELT(1 + (seq DIV ${FIRST.length}) % ${LAST.length}, ${list(LAST)}),
        CONCAT(ELT(1 + seq % ${FIRST.length}, ${list(FIRST)}), '.', SUBSTR(m, 1, 6), seq, '@', ELT(1 + seq % 5, 'example.com', 'mail.test', 'corp.example', 'shop.test', 'web.example')),
        ELT(1 + CONV(SUBSTR(m, 7, 2), 16, 10) % 12, 'DE','FR','GB','ES','IT','PL','NL','SE','PT','AT','CZ','US'),
        (CONV(SUBSTR(m, 9, 8), 16, 10) % 100000000) / 100 - 50000,
        CONV(SUBSTR(m, 17, 8), 16, 10) / 4294967295 * 100,
        seq % 7 <> 0,
        TIMESTAMP('2015-01-01') + INTERVAL CONV(SUBSTR(m, 25, 7), 16, 10) % 315360000 SECOND,
        IF(seq % 3 = 0, NULL, ${text(30, "seq")})
        FROM ${from}`;
    case "orders":
      return `INSERT INTO ${DB}.orders SELECT
        seq,
        1 + (seq * 7919) % ${customers},
        ELT(1 + seq % 5, 'new', 'paid', 'shipped', 'delivered', 'cancelled'),
        5 + (CONV(SUBSTR(m, 1, 6), 16, 10) % 1000000) / 100,
        (CONV(SUBSTR(m, 7, 4), 16, 10) % 10000) / 10000 * 0.21,
        1 + CONV(SUBSTR(m, 11, 2), 16, 10) % 20,
        TIMESTAMP('2020-01-01') + INTERVAL (seq * 37 + CONV(SUBSTR(m, 13, 4), 16, 10)) % 157680000 SECOND,
        CONCAT('SKU-', UPPER(SUBSTR(MD5(seq % 50000), 1, 10))),
        IF(seq % 4 = 0, NULL, CONCAT(${word("m2", 17)}, ' ', SUBSTR(m2, 19, 4 + seq % 12))),
        ${text(16, "CONV(SUBSTR(m2, 23, 2), 16, 10)")}
        FROM ${from}`;
    case "events":
      return `INSERT INTO ${DB}.events SELECT
        seq,
        1 + seq DIV 2,
        CONV(SUBSTR(m, 1, 1), 16, 10),
        TIMESTAMP('2020-01-01') + INTERVAL seq * 7 SECOND + INTERVAL CONV(SUBSTR(m, 2, 3), 16, 10) % 1000 * 1000 MICROSECOND,
        CONCAT('{"ip":"', INET_NTOA(CONV(SUBSTR(m, 5, 8), 16, 10)), '","agent":"',
               ELT(1 + seq % 4, 'Mozilla/5.0 (X11; Linux x86_64)', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64)', 'curl/8.5.0', 'okhttp/4.12.0'),
               '","ref":"', SUBSTR(m, 13, 12), '","step":', seq % 9, ',"tags":["', ${word("m2", 1)}, '","', ${word("m2", 3)}, '"]}')
        FROM ${from}`;
  }
}

/** Rows per table for one "unit" of the data set (orders = 1). */
const MIX: Record<(typeof TABLES)[number], number> = { orders: 1, customers: 0.1, events: 2 };

async function fill(src: MariaDb, rows: Record<(typeof TABLES)[number], number>): Promise<void> {
  const CHUNK = 50_000;
  // Two connections at a time (two cores); each chunk is its own transaction,
  // kept out of the binlog (the binlog is on, but the load need not be in it).
  const jobs: string[] = [];
  for (const t of TABLES) {
    for (let a = 1; a <= rows[t]; a += CHUNK) jobs.push(insertSql(t, a, Math.min(rows[t], a + CHUNK - 1), rows.customers));
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const sql = jobs[next++] ?? "";
      await src.query(`SET SESSION sql_log_bin = 0; ${sql}`);
    }
  };
  await Promise.all(Array.from({ length: THREADS }, worker));
}

async function generate(src: MariaDb, targetBytes: number): Promise<Record<(typeof TABLES)[number], number>> {
  for (const sql of DDL) await src.query(sql);
  // Calibrate: dump a sample to learn the dump bytes per row, then fill.
  const sample = { orders: 20_000, customers: 2_000, events: 40_000 };
  await fill(src, sample);
  const r = await execa("mariadb-dump", ["--no-defaults", "--host=127.0.0.1", `--port=${src.port}`, "--user=root", "--protocol=TCP", "--no-create-info", "--skip-comments", DB], {
    stripFinalNewline: false,
    encoding: "buffer",
  });
  const perUnit = r.stdout.length / sample.orders;
  for (const t of TABLES) await src.query(`TRUNCATE TABLE ${DB}.${t}`);
  const units = Math.max(1000, Math.round(targetBytes / perUnit));
  const rows = { orders: units, customers: Math.max(10, Math.round(units * MIX.customers)), events: Math.round(units * MIX.events) };
  const t0 = performance.now();
  await fill(src, rows);
  const t1 = performance.now();
  // Flush dirty pages so no backup races the page cleaner.
  await src.query("SET GLOBAL innodb_io_capacity_max = 100000");
  await src.query("SET GLOBAL innodb_io_capacity = 50000, innodb_max_dirty_pages_pct = 0, innodb_max_dirty_pages_pct_lwm = 0");
  const deadline = Date.now() + 180_000;
  for (;;) {
    const [d] = await src.query<{ v: string }>("SELECT variable_value AS v FROM information_schema.global_status WHERE variable_name = 'INNODB_BUFFER_POOL_PAGES_DIRTY'");
    if (Number(d?.v ?? 0) < 50 || Date.now() > deadline) break;
    await new Promise((res) => setTimeout(res, 500));
  }
  await src.query("SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT, innodb_max_dirty_pages_pct_lwm = DEFAULT, innodb_io_capacity = DEFAULT");
  await src.query("SET GLOBAL innodb_io_capacity_max = DEFAULT");
  process.stderr.write(`bench: loaded in ${fmt((t1 - t0) / 1000, 1)} s, flushed in ${fmt((performance.now() - t1) / 1000, 1)} s\n`);
  return rows;
}

async function counts(s: MariaDb): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const t of TABLES) {
    const [row] = await s.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${DB}.${t}`);
    out[t] = Number(row?.n);
  }
  return out;
}

/** Empty string when every table has the source's row count, else what differs. */
async function checkRows(target: MariaDb, expected: Record<string, number>): Promise<string> {
  const got = await counts(target).catch((err: unknown) => { throw new Error(`row count query failed: ${String(err)}`); });
  const bad = TABLES.filter((t) => got[t] !== expected[t]).map((t) => `${t} ${String(got[t])} != ${String(expected[t])}`);
  return bad.join(", ");
}

/** The MariaDB part: logical, mydumper, gzip and physical rows on one generated data set. */
async function mariadbBench(work: string, s3: S3Server): Promise<BenchPart> {
  const out = (f: string): string => path.join(work, f);
  const cwd = out("cwd");
  await mkdir(cwd);
  process.stderr.write("bench: starting the MariaDB source server\n");
  const src = await server("source", { binlog: true, serverId: 1 });

  process.stderr.write(`bench: generating ~${sizeMb} MB (raw dump size) of data\n`);
  const tGen = performance.now();
  const rows = await generate(src, sizeMb * MB);
  const genSeconds = (performance.now() - tGen) / 1000;
  const expected = await counts(src);
  for (const t of TABLES) {
    if (expected[t] !== rows[t]) throw new Error(`generated ${t} has ${String(expected[t])} rows, wanted ${rows[t]}`);
  }
  const innodbBytes = await dirSize(path.join(src.datadir, DB));
  const [ver] = await src.query<{ v: string }>("SELECT VERSION() AS v");

  const fileRepo = out("repo-file");
  await mkdir(fileRepo);
  const files = {
    gzip: out("dump.sql.gz"),
    zstd: out("dump.sql.zst"),
    mydumper: out("mydumper"),
    xb: out("backup.xbstream.zst"),
    xbTmp: out("xb-tmp"),
    xbLog: out("mariabackup.log"),
  };
  const dumpArgs = [
    "--no-defaults", clientArgs(src),
    "--single-transaction", "--all-databases", "--ignore-database=mysql", "--ignore-database=sys",
    "--routines", "--events", "--triggers", "--hex-blob", "--master-data=2", "--gtid",
    "--max-allowed-packet=1G", "--default-character-set=utf8mb4",
  ].join(" ");
  const empty = out("empty.cnf");
  await writeFile(empty, "");

  // ------------------------------------------------------------ backups
  // The logical rows run in paired rounds (BENCH_RUNS), against the shell
  // pipeline at replicator's own zstd level (3), single-threaded as typed.
  const backups: Row[] = [];
  const physBackups: Row[] = [];
  const physRestores: Row[] = [];
  /** Backups taken once, outside the rounds, because a restore in the rounds needs them. */
  const setup: Row[] = [];
  const backupRow = (name: string): Row | undefined => [...backups, ...physBackups, ...setup].find((b) => b.name === name);
  /** Takes each named backup once (a single-run "setup" row) unless the rounds already took it. */
  const ensureBackups = async (pipelines: Pipeline[], names: string[]): Promise<void> => {
    for (const name of new Set(names)) {
      if (backupRow(name) !== undefined) continue;
      const p = pipelines.find((x) => x.name === name);
      if (!p) throw new Error(`no backup pipeline named "${name}"`);
      await step(setup, name, async (row) => { row.seconds = await p.run(row); });
    }
  };
  const baseBackupName = "mariadb-dump | zstd -3";
  const mydumperName = `mydumper (threads=${THREADS}, --compress gzip)`;
  let replicatorRaw: number | undefined;
  const clis = [{ tag: "", main: cliMain, cluster: "bench" }, ...(BEFORE_DIST !== undefined ? [{ tag: " [before]", main: beforeMain, cluster: "bench-before" }] : [])];
  const logicalBackups: Pipeline[] = [];
  for (const c of clis) {
    for (const [where, repository, env] of [["file://", `file://${fileRepo}`, {}], ["S3 versitygw", "s3://bench/replicator", s3.env]] as const) {
      logicalBackups.push({
        name: `replicator backup → ${where} (zstd)${c.tag}`,
        run: backupRun(["--source", src.url, "--repository", repository, "--cluster", c.cluster], env, cwd, c.main, (j) => {
          if (c.tag === "" && where === "file://") replicatorRaw = j?.rawSize;
        }),
      });
    }
  }
  // The parallel format, with as many dump processes as mydumper's threads.
  for (const [where, repository, env] of [["file://", `file://${fileRepo}`, {}], ["S3 versitygw", "s3://bench/replicator", s3.env]] as const) {
    logicalBackups.push({
      name: `replicator backup --method mysqldump_parallel --threads ${THREADS} → ${where}`,
      run: backupRun(["--method", "mysqldump_parallel", "--threads", String(THREADS), "--source", src.url, "--repository", repository, "--cluster", "bench-parallel"], env, cwd),
    });
  }
  logicalBackups.push({
    name: mydumperName,
    run: async (row) => {
      await rm(files.mydumper, { recursive: true, force: true });
      const sec = await timed(() =>
        sh(
          `mydumper --defaults-file=${q(empty)} --host=127.0.0.1 --port=${src.port} --user=root --threads=${THREADS} --compress ` +
            `--database=${DB} --triggers --events --routines --outputdir=${q(files.mydumper)} --verbose=1`,
          "mydumper",
        ),
      );
      row.bytes = await dirSize(files.mydumper);
      row.check = `ok (${(await readdir(files.mydumper)).length} files)`;
      return sec;
    },
  });
  logicalBackups.push({
    name: baseBackupName,
    baseline: true,
    run: async (row) => {
      const sec = await timed(() => sh(`mariadb-dump ${dumpArgs} | zstd -q -3 > ${q(files.zstd)}`, "mariadb-dump | zstd -3"));
      row.bytes = await fileSize(files.zstd);
      row.check = "ok";
      return sec;
    },
  });
  logicalBackups.push({
    // What the agent adds beyond the pipeline: the object made durable (fsync) before it is
    // committed. The same pipeline with `sync FILE` (fsync of that file) after it, for reference.
    name: "mariadb-dump | zstd -3 > file && sync file (durable: for reference)",
    run: async (row) => {
      const f = out("dump-3-synced.sql.zst");
      const sec = await timed(() => sh(`mariadb-dump ${dumpArgs} | zstd -q -3 > ${q(f)} && sync ${q(f)}`, "mariadb-dump | zstd -3 && sync"));
      row.bytes = await fileSize(f);
      row.check = "ok";
      return sec;
    },
  });
  // A DBA's own streaming pipe into the same S3 server. rclone is configured by
  // environment variables only (no config file, nothing on the command line).
  const rcloneConf = out("rclone.conf");
  await writeFile(rcloneConf, "");
  const rcloneEnv = {
    RCLONE_CONFIG: rcloneConf,
    RCLONE_CONFIG_BENCH_TYPE: "s3",
    RCLONE_CONFIG_BENCH_PROVIDER: "Other",
    RCLONE_CONFIG_BENCH_ENV_AUTH: "false",
    RCLONE_CONFIG_BENCH_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_BENCH_REGION: s3.env.AWS_REGION ?? "us-east-1",
    RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: s3.accessKeyId,
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: s3.secretAccessKey,
    // The bucket exists; rclone would otherwise PUT it first, which versitygw answers with a 500
    // (the bench makes the bucket as a directory of its posix backend).
    RCLONE_CONFIG_BENCH_NO_CHECK_BUCKET: "true",
    // The endpoint is plain http on 127.0.0.1; a CA bundle from the environment would only make
    // rclone's S3 client fail at start ("LoadCustomCABundleError ... unsupported transport").
    AWS_CA_BUNDLE: "",
  };
  logicalBackups.push({
    name: RCLONE_ROW,
    run: async (row) => {
      const obj = "BENCH:bench/pipe/dump.sql.zst";
      const sec = await timed(() => sh(`mariadb-dump ${dumpArgs} | zstd -q -3 | rclone rcat ${obj}`, "mariadb-dump | zstd -3 | rclone rcat", { env: rcloneEnv }));
      // Not timed: the stored object's size.
      const r = await execa("rclone", ["size", "--json", obj], { env: rcloneEnv, extendEnv: true, reject: false });
      if (r.exitCode !== 0) throw new Error(`rclone size exited ${String(r.exitCode)}: ${r.stderr.slice(-300)}`);
      row.bytes = (JSON.parse(r.stdout) as { bytes?: number }).bytes;
      row.check = "ok";
      return sec;
    },
  });
  logicalBackups.push({
    name: "mariadb-dump | zstd -1 (another level: for reference)",
    run: async (row) => {
      const f = out("dump-1.sql.zst");
      const sec = await timed(() => sh(`mariadb-dump ${dumpArgs} | zstd -q -1 > ${q(f)}`, "mariadb-dump | zstd -1"));
      row.bytes = await fileSize(f);
      row.check = "ok";
      return sec;
    },
  });
  if (WANT_LOGICAL_BACKUPS) await pairedRounds(backups, selected(logicalBackups), RUNS);
  // A single run (not in the rounds); BENCH_ROWS leaves it out unless it matches.
  if (WANT_MARIADB_ALL && (ROWS_RE === undefined || ROWS_RE.test("mariadb-dump | gzip"))) {
    await step(backups, "mariadb-dump | gzip", async (row) => {
      row.seconds = await timed(() => sh(`mariadb-dump ${dumpArgs} | gzip > ${q(files.gzip)}`, "mariadb-dump | gzip"));
      row.bytes = await fileSize(files.gzip);
      row.check = "ok";
    });
  }
  // ------------------------------------------------------------ restores
  const restores: Row[] = [];
  const need = (b: Row | undefined): void => {
    if (!b || b.error !== undefined) throw new Error("its backup failed");
  };
  const intoFresh = async (row: Row, tag: string, load: (t: MariaDb) => Promise<string>): Promise<void> => {
    const target = await server(tag);
    try {
      let detail = "";
      row.seconds = await timed(async () => { detail = await load(target); });
      const bad = await checkRows(target, expected);
      if (bad) throw new Error(`row counts differ: ${bad}`);
      row.check = `${detail}rows ok (${TABLES.length} tables; ${BIGGEST} ${fmt(expected[BIGGEST] ?? 0, 0)})`;
    } finally {
      await target.destroy();
    }
  };

  const logicalRestores: RestorePipeline[] = [];
  /** A `replicator restore` of the backup row `needs` into a fresh server, from `repository` (cluster `cluster`), run in `dir` with build `main`. */
  const cliRestore = (name: string, needs: string, tag: string, args: { repository: string; cluster: string; env: Record<string, string>; dir: string; main: string }): RestorePipeline => ({
    name,
    needs,
    run: async (row) => {
      const b = backupRow(needs);
      need(b);
      row.bytes = b?.bytes;
      await intoFresh(row, `restore-${tag}`, async (t) => {
        const j = await replicator(["restore", "--target", t.url, "--repository", args.repository, "--cluster", args.cluster], args.env, args.dir, args.main);
        noteAgent(row, j);
        return `CLI ${fmt((j.durationMs ?? 0) / 1000, 2)} s; `;
      });
      return row.seconds ?? NaN;
    },
  });
  const stores = [["file://", `file://${fileRepo}`, {}, "file"], ["S3 versitygw", "s3://bench/replicator", s3.env, "s3"]] as const;
  for (const c of clis) {
    for (const [where, repository, env, tag] of stores) {
      logicalRestores.push(cliRestore(`replicator restore ← ${where}${c.tag}`, `replicator backup → ${where} (zstd)${c.tag}`, tag, { repository, cluster: c.cluster, env, dir: cwd, main: c.main }));
    }
  }
  const parallelNeeds = (where: string): string => `replicator backup --method mysqldump_parallel --threads ${THREADS} → ${where}`;
  /** The parallel backup restored from file:// with one method option set (a replicator.yaml in its own cwd), for a before/after of what that option turns off. */
  const parallelWith = async (option: string, tag: string): Promise<RestorePipeline> => {
    const dir = out(`cwd-${tag}`);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  ${option}\n`);
    return cliRestore(`replicator restore (mysqldump_parallel, ${THREADS} threads, ${option}) ← file://`, parallelNeeds("file://"), tag, {
      repository: `file://${fileRepo}`,
      cluster: "bench-parallel",
      env: {},
      dir,
      main: cliMain,
    });
  };
  // The same parallel backup loaded with its secondary keys in place while the rows go in
  // (the restore before keys.ts): what building them after is worth.
  logicalRestores.push(await parallelWith("deferKeys: false", "parallel-keys"));
  // Its rows as INSERT statements through the mariadb client (the restore before rows.ts; keys
  // still after the rows): what LOAD DATA is worth.
  logicalRestores.push(await parallelWith("loadData: false", "parallel-inserts"));
  // The other build ([before]) restores the same parallel backups (this build's).
  for (const c of clis) {
    for (const [where, repository, env, tag] of stores) {
      logicalRestores.push(cliRestore(`replicator restore (mysqldump_parallel, ${THREADS} threads) ← ${where}${c.tag}`, parallelNeeds(where), `parallel-${tag}`, { repository, cluster: "bench-parallel", env, dir: cwd, main: c.main }));
    }
  }
  logicalRestores.push({
    name: `myloader (threads=${THREADS})`,
    needs: mydumperName,
    run: async (row) => {
      const b = backupRow(mydumperName);
      need(b);
      row.bytes = b?.bytes;
      await intoFresh(row, "restore-myloader", (t) =>
        sh(
          `myloader --defaults-file=${q(empty)} --host=127.0.0.1 --port=${t.port} --user=root --threads=${THREADS} --directory=${q(files.mydumper)} --verbose=1`,
          "myloader",
        ).then(() => ""),
      );
      return row.seconds ?? NaN;
    },
  });
  logicalRestores.push({
    name: "zstd -dc | mariadb",
    baseline: true,
    needs: baseBackupName,
    run: async (row) => {
      const baseBackup = backupRow(baseBackupName);
      need(baseBackup);
      row.bytes = baseBackup?.bytes;
      await intoFresh(row, "restore-mariadb", (t) =>
        sh(`zstd -dc ${q(files.zstd)} | mariadb --no-defaults ${clientArgs(t)} --max-allowed-packet=1G --default-character-set=utf8mb4`, "zstd -dc | mariadb").then(() => ""),
      );
      return row.seconds ?? NaN;
    },
  });
  if (WANT_LOGICAL_RESTORES) {
    const run = selected(logicalRestores);
    await ensureBackups(logicalBackups, run.map((r) => r.needs));
    await pairedRounds(restores, run, RUNS);
  }
  // ------------------------------------------------------------ physical
  // replicator's mariabackup method against the plain physical pipelines, in
  // paired rounds like the logical rows, with the same --parallel and
  // --use-memory. `replicator restore --datadir` also fsyncs every restored
  // file and renames it into the data directory. Every restore goes into a
  // fresh, empty directory; its row counts are checked by starting mariadbd on
  // it (not timed), which then removes it.
  if (WANT_PHYSICAL) {
    const physCwd = out("cwd-physical");
    const physRepo = out("repo-physical");
    await mkdir(physCwd);
    await mkdir(physRepo);
    await writeFile(path.join(physCwd, "replicator.yaml"), `methodOptions:\n  parallel: ${THREADS}\n  useMemory: 1G\n`);
    const physBaseName = "mariabackup --stream=xbstream | zstd";
    const physicalBackups: Pipeline[] = [];
    const physRepos = [["file://", `file://${physRepo}`, {}, "file"], ["S3 versitygw", "s3://bench/physical", s3.env, "s3"]] as const;
    for (const [where, repository, env] of physRepos) {
      physicalBackups.push({
        name: `replicator backup --method mariabackup → ${where} (zstd)`,
        run: backupRun(["--method", "mariabackup", "--source", src.url, "--repository", repository, "--cluster", "bench"], env, physCwd),
      });
    }
    physicalBackups.push({
      name: physBaseName,
      baseline: true,
      run: async (row) => {
        await rm(files.xbTmp, { recursive: true, force: true });
        await mkdir(files.xbTmp);
        const sec = await timed(() =>
          sh(
            `mariabackup --no-defaults --backup --stream=xbstream --datadir=${q(src.datadir)} --target-dir=${q(files.xbTmp)} ` +
              `--user=root --host=127.0.0.1 --port=${src.port} --protocol=TCP --parallel=${THREADS} 2>${q(files.xbLog)} | zstd -q > ${q(files.xb)}`,
            "mariabackup",
          ).catch(async (err: unknown) => {
            throw new Error(`${String(err)} — log: ${await tail(files.xbLog)}`);
          }),
        );
        row.bytes = await fileSize(files.xb);
        row.check = "ok";
        return sec;
      },
    });
    await pairedRounds(physBackups, selected(physicalBackups), RUNS);

    /** Not timed: start a server on a restored data directory, count the rows, remove it. */
    const checkDatadir = async (row: Row, dir: string, tag: string, detail: string): Promise<void> => {
      const restored = await server(tag, { datadir: dir });
      try {
        const bad = await checkRows(restored, expected);
        if (bad) throw new Error(`row counts differ: ${bad}`);
        row.check = `${detail}rows ok (${TABLES.length} tables; ${BIGGEST} ${fmt(expected[BIGGEST] ?? 0, 0)}), checked by starting mariadbd on it (not timed)`;
      } finally {
        await restored.destroy();
      }
    };
    const physicalRestores: RestorePipeline[] = [];
    // The other build ([before]) restores the same backups (this build's).
    for (const c of clis) for (const [where, repository, env, tag] of physRepos) {
      const needs = `replicator backup --method mariabackup → ${where} (zstd)`;
      physicalRestores.push({
        name: `replicator restore --datadir ← ${where}${c.tag}`,
        needs,
        run: async (row) => {
          const b = backupRow(needs);
          need(b);
          row.bytes = b?.bytes;
          const parent = out(`phys-restore-${tag}`);
          await rm(parent, { recursive: true, force: true });
          const dir = path.join(parent, "data");
          let j: CliJson | undefined;
          const sec = await timed(async () => {
            j = await replicator(["restore", "--datadir", dir, "--repository", repository, "--cluster", "bench"], env, physCwd, c.main);
          });
          noteAgent(row, j);
          await checkDatadir(row, dir, `phys-restore-${tag}`, `CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s; `);
          return sec;
        },
      });
    }
    /** The plain tools' restore of the plain backup; `durable` adds one `sync --file-system` of it, timed. */
    const plainPhysicalRestore = async (row: Row, tag: string, durable: boolean): Promise<number> => {
      const b = backupRow(physBaseName);
      need(b);
      row.bytes = b?.bytes;
      const dir = out(tag);
      const log = out(`${tag}-prepare.log`);
      await rm(dir, { recursive: true, force: true });
      await mkdir(dir);
      const sec = await timed(async () => {
        await sh(`zstd -dc ${q(files.xb)} | mbstream -x -C ${q(dir)}`, "zstd -dc | mbstream -x");
        await sh(`mariabackup --no-defaults --prepare --target-dir=${q(dir)} --use-memory=1G > ${q(log)} 2>&1`, "mariabackup --prepare").catch(
          async (err: unknown) => { throw new Error(`${String(err)} — log: ${await tail(log)}`); },
        );
        if (durable) await sh(`sync --file-system ${q(dir)}`, "sync --file-system");
      });
      await checkDatadir(row, dir, tag, "");
      return sec;
    };
    physicalRestores.push({ name: "mbstream -x + mariabackup --prepare", baseline: true, needs: physBaseName, run: (row) => plainPhysicalRestore(row, "xb-restore", false) });
    // What `restore --datadir` adds beyond the pipeline: the restored files made durable before
    // its sentinel goes. The same pipeline with one `sync --file-system` after it, for reference.
    physicalRestores.push({
      name: "mbstream -x + mariabackup --prepare && sync --file-system (durable: for reference)",
      needs: physBaseName,
      run: (row) => plainPhysicalRestore(row, "xb-restore-synced", true),
    });
    const run = selected(physicalRestores);
    await ensureBackups(physicalBackups, run.map((r) => r.needs));
    await pairedRounds(physRestores, run, RUNS);
  }

  // ------------------------------------------------------------ the part's facts and tables
  // The raw size that MB/s is measured against: the plain dump, uncompressed.
  let rawBytes: number | undefined;
  const baseBackup = backupRow(baseBackupName);
  if (baseBackup && baseBackup.error === undefined) {
    const r = await execa("bash", ["-c", `set -o pipefail; zstd -dc ${q(files.zstd)} | wc -c`], { reject: false });
    if (r.exitCode === 0) rawBytes = Number(r.stdout.trim());
  }
  rawBytes ??= replicatorRaw;
  const facts = [
    `- MariaDB ${ver?.v ?? "?"}; ${await version("mariadb-dump", ["--version"])}; ${await version("mydumper", ["--version"])}; ${await version("mariabackup", ["--version"])}`,
    `- MariaDB data set: BENCH_SIZE_MB=${sizeMb}; raw dump ${rawBytes !== undefined ? fmt(rawBytes / MB, 1) : "?"} MB; InnoDB files (.ibd) ${fmt(innodbBytes / MB, 1)} MB; ` +
      `rows: ${TABLES.map((t) => `${DB}.${t} ${fmt(expected[t] ?? 0, 0)}`).join(", ")} (generated server-side in ${fmt(genSeconds, 1)} s)`,
    `- MariaDB servers: mariadbd ${SERVER_ARGS.join(" ")} (source with binlog, ROW); every restore goes into a fresh empty server`,
  ];
  return {
    facts,
    tables: [
      { title: "Backup", chartTitle: "Logical backup", rows: backups, rawBytes, bytesLabel: "Stored MB" },
      { title: "Setup: the backups the restores below need, taken once (not in the rounds, not compared)", rows: setup, rawBytes, bytesLabel: "Stored MB" },
      { title: "Restore", chartTitle: "Logical restore", rows: restores, rawBytes, bytesLabel: "Read MB" },
      { title: "Physical backup (replicator's mariabackup method)", chartTitle: "Physical backup", rows: physBackups, rawBytes, bytesLabel: "Stored MB" },
      {
        title: "Physical restore (replicator restore --datadir: extract, prepare, move into the data directory, fsync)",
        chartTitle: "Physical restore",
        rows: physRestores,
        rawBytes,
        bytesLabel: "Read MB",
      },
    ],
  };
}

async function main(): Promise<void> {
  const loadStart = loadavg()[0] ?? 0;
  if (WANT_MARIADB || WANT_PG || WANT_REPLAY) await snapshotCli();
  const work = await mkdtemp(path.join(tmpdir(), "replicator-bench-"));
  onCleanup("work dir", () => rm(work, { recursive: true, force: true }));
  let s3: S3Server | undefined;
  if (WANT_MARIADB || WANT_S3 || WANT_REPLAY) {
    process.stderr.write(`bench: starting S3 (work dir ${work})\n`);
    s3 = await startS3();
    const gw = s3;
    onCleanup("S3 server", () => gw.stop());
    await s3.createBucket("bench");
  }

  const parts: BenchPart[] = [];
  if (WANT_MARIADB && s3) parts.push(await mariadbBench(work, s3));
  if (WANT_PG) parts.push(await pgBench({ work, sizeMb, runs: RUNS, cliMain }));
  if (WANT_S3 && s3) parts.push(await s3Bench({ work, sizeMb, runs: RUNS, s3 }));
  if (WANT_REPLAY && s3) parts.push(await replayBench({ work, sizeMb, runs: RUNS, cliMain, s3 }));

  // ------------------------------------------------------------ report
  const cpu = cpus()[0]?.model ?? "?";
  // A table without rows (a part or row filter left it empty) is left out of the report and the chart.
  const tables = parts.flatMap((p) => p.tables).filter((t) => t.rows.length > 0);
  const allRows = tables.flatMap((t) => t.rows);
  const rssRows = allRows.filter((r) => peakRss(r) !== undefined);
  const maxRss = rssRows.length > 0 ? Math.max(...rssRows.map((r) => peakRss(r) ?? 0)) : undefined;
  const facts = [
    `- Date: ${new Date().toISOString()}; BENCH_SIZE_MB=${sizeMb}, BENCH_RUNS=${RUNS}${ONLY.length > 0 ? `, BENCH_ONLY=${ONLY.join(",")}` : ""}${ROWS_RE ? `, BENCH_ROWS=${process.env.BENCH_ROWS ?? ""} (and each table's baseline)` : ""}`,
    `- Machine: ${availableParallelism()} CPUs (nproc) — ${cpu}, ${fmt(totalmem() / 2 ** 30, 1)} GiB RAM; ` +
      `1-min load average ${fmt(loadStart, 2)} at start, ${fmt(loadavg()[0] ?? 0, 2)} at end${busy(loadStart) ? " (**machine was busy: other work shares the CPUs, timings are noisy**)" : ""}`,
    `- Node ${process.version}; zstd ${(await version("zstd", ["--version"])).replace(/.*\b(v[\d.]+).*/, "$1")}${s3 ? "; S3 is versitygw on 127.0.0.1" : ""}`,
    ...parts.flatMap((p) => p.facts),
    `- MB = 10^6 bytes. MB/s = raw dump MB / wall s (S3: object MB / wall s). Ratios: time or size ÷ the baseline row (× > 1 is slower/larger).`,
    ...(maxRss !== undefined
      ? [
          `- Agent peak RSS: the replicator process's own VmHWM (node; not the tools it starts), the highest of a row's runs. ` +
            `Highest of all ${rssRows.length} replicator rows: **${fmt(maxRss / MB, 1)} MB** (${rssRows.find((r) => peakRss(r) === maxRss)?.name ?? "?"}); target < ${fmt(RSS_TARGET / MB, 0)} MB${maxRss < RSS_TARGET ? " (met)" : " (**not met**)"}.`,
        ]
      : []),
  ].join("\n");
  const report = [`# replicator benchmark`, "", facts, ""];
  for (const t of tables) report.push(`## ${t.title}`, "", table(t.rows, t.rawBytes, t.bytesLabel), "");
  const text = report.join("\n");
  console.log(text);
  const resultsDir = path.join(repoRoot, "bench/results");
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, "latest.md"), text);
  const section = (t: ReportTable): ChartSection => ({
    title: t.chartTitle ?? t.title.replace(/\s*\(.*$/, ""),
    baseline: t.rows.find((r) => r.baseline)?.name ?? "baseline",
    bars: t.rows.flatMap((r) => {
      const ratio = ratioOf(r, t.rows);
      return ratio === undefined ? [] : [{ name: r.name, ratio }];
    }),
  });
  const rssSection: ChartSection = {
    title: "Agent peak RSS",
    baseline: `the ${fmt(RSS_TARGET / MB, 0)} MB target`,
    bars: rssRows.map((r) => ({ name: r.name, ratio: (peakRss(r) ?? 0) / RSS_TARGET, label: `${fmt((peakRss(r) ?? 0) / MB, 0)} MB` })),
  };
  const rawSizes = tables.map((t) => t.rawBytes).filter((b): b is number => b !== undefined);
  const sizeText = rawSizes.length > 0 ? `${fmt(Math.max(...rawSizes) / MB, 0)} MB raw` : `BENCH_SIZE_MB=${sizeMb}`;
  const chart = ratioChart(
    `replicator ÷ the plain pipeline, ${sizeText}, ${new Date().toISOString().slice(0, 10)}${RUNS > 1 ? `, median of ${RUNS} paired rounds` : ""}`,
    [...tables.map(section), rssSection],
  );
  await writeFile(path.join(resultsDir, "ratios-latest.svg"), chart);
  process.stderr.write(`bench: wrote ${path.relative(process.cwd(), path.join(resultsDir, "latest.md"))} and ratios-latest.svg\n`);
  if (allRows.some((r) => r.error !== undefined)) process.exitCode = 1;
}

try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
