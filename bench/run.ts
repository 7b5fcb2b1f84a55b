// Backup/restore benchmark: `replicator` against the plain tools, on one
// generated data set, in one run. `make bench` (or `tsx bench/run.ts`);
// BENCH_SIZE_MB sets the data set size (raw dump size, default 200).
// BENCH_RUNS=N (default 1) runs the logical rows N times in paired rounds:
// each round runs every pipeline once, in alternating order, and the ratio is
// the median of the per-round ratios (machine drift cancels within a round).
// BENCH_ONLY=logical skips mydumper, gzip and the physical rows;
// BENCH_ONLY=logical-backup also skips the restores.
// BENCH_BEFORE_DIST=DIR adds the replicator rows of another build (a dist/
// directory, e.g. the previous commit's) to the same rounds, for before/after.
// Prints a markdown report and writes it to bench/results/latest.md.
// Every figure is measured; a step that fails is reported as FAILED.
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { CLI } from "../test/harness/cli.js";
import { startMariaDb, type MariaDb } from "../test/harness/mariadb.js";
import { startS3, type S3Server } from "../test/harness/s3.js";
import { ratioChart, type ChartSection } from "./chart.js";

const repoRoot = path.resolve(import.meta.dirname, "..");
const MB = 1_000_000;
const sizeMb = Number(process.env.BENCH_SIZE_MB ?? "200");
if (!Number.isFinite(sizeMb) || sizeMb <= 0) throw new Error(`BENCH_SIZE_MB must be a positive number (got ${process.env.BENCH_SIZE_MB ?? ""})`);
const RUNS = Number(process.env.BENCH_RUNS ?? "1");
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error(`BENCH_RUNS must be a whole number >= 1 (got ${process.env.BENCH_RUNS ?? ""})`);
const ONLY_LOGICAL = process.env.BENCH_ONLY === "logical" || process.env.BENCH_ONLY === "logical-backup";
const SKIP_RESTORES = process.env.BENCH_ONLY === "logical-backup";
const BEFORE_DIST = process.env.BENCH_BEFORE_DIST;
const THREADS = Number(process.env.BENCH_THREADS ?? "2");
const DB = "bench";
const TABLES = ["orders", "customers", "events"] as const;
const BIGGEST = "orders";
// Same server settings for the source and every restore target.
const SERVER_ARGS = ["--innodb-buffer-pool-size=1G", "--innodb-log-file-size=256M", "--max-allowed-packet=1G"];

// ---------------------------------------------------------------- cleanup

const cleanups: { what: string; fn: () => Promise<void> }[] = [];
function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}
let cleaning: Promise<void> | undefined;
function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.reverse()) {
      await c.fn().catch((err: unknown) => { console.error(`cleanup of ${c.what} failed: ${String(err)}`); });
    }
  })();
  return cleaning;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    void cleanupAll().finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
  });
}

async function server(tag: string, opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb({ ...opts, args: [...SERVER_ARGS, ...(opts.args ?? [])] });
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await s.destroy();
  };
  onCleanup(`server ${tag}`, destroy);
  return { ...s, destroy };
}

// ---------------------------------------------------------------- helpers

const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

function clientArgs(s: MariaDb): string {
  return `--host=127.0.0.1 --port=${s.port} --user=root --protocol=TCP`;
}

async function sh(script: string, what: string): Promise<void> {
  const r = await execa("bash", ["-c", `set -o pipefail; ${script}`], { reject: false, stdin: "ignore", stripFinalNewline: true });
  if (r.exitCode !== 0) {
    const err = (r.stderr || r.stdout).split("\n").filter(Boolean).slice(-3).join(" | ");
    throw new Error(`${what} exited ${String(r.exitCode)}: ${err.slice(0, 300)}`);
  }
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return (performance.now() - t0) / 1000;
}

async function fileSize(p: string): Promise<number> {
  return (await stat(p)).size;
}

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

async function tail(file: string, lines = 3): Promise<string> {
  const t = await readFile(file, "utf8").catch(() => "");
  return t.split("\n").filter(Boolean).slice(-lines).join(" | ").slice(0, 300);
}

interface CliJson {
  ok?: boolean;
  size?: number;
  rawSize?: number;
  durationMs?: number;
  error?: string;
  reason?: string;
}

// The CLI is run from a snapshot of dist/ taken at the start, so that a
// `make build` elsewhere during the run (it deletes dist/) cannot break it.
// The snapshot lives inside the repository so node_modules still resolves.
const cliSnapshot = path.join(repoRoot, "bench/results/.dist-snapshot");
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
const beforeSnapshot = path.join(repoRoot, "bench/results/.dist-before");
const beforeMain = path.join(beforeSnapshot, path.relative(path.join(repoRoot, "dist"), CLI));

async function replicator(args: string[], env: Record<string, string>, cwd: string, main: string = cliMain): Promise<CliJson> {
  const r = await execa(process.execPath, [main, ...args, "--json", "--no-progress"], {
    reject: false,
    stdin: "ignore",
    cwd,
    extendEnv: true,
    env: { REPLICATOR_CONFIG: undefined, REPLICATOR_DB_PASSWORD: undefined, ...env },
  });
  const last = r.stdout.trim().split("\n").pop() ?? "";
  let json: CliJson | undefined;
  if (last.startsWith("{")) {
    try {
      json = JSON.parse(last) as CliJson;
    } catch {
      json = undefined;
    }
  }
  if (r.exitCode !== 0 || json?.ok !== true) {
    const lines = r.stderr.split("\n").map((l) => l.trim()).filter(Boolean);
    const why = json?.error ?? lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "no output";
    throw new Error(`replicator ${args[0] ?? ""} exited ${String(r.exitCode)}: ${why.slice(0, 300)}`);
  }
  return json;
}

async function version(cmd: string, args: string[]): Promise<string> {
  const r = await execa(cmd, args, { reject: false, all: true });
  const line = r.all.split("\n").filter(Boolean).pop()?.trim() ?? "?";
  return line.replace(/,? (for|built|debian-linux).*$/, "").replace(/\s+/g, " ");
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

// ---------------------------------------------------------------- results

interface Row {
  name: string;
  baseline?: boolean;
  seconds?: number;
  /** Paired rounds: every run's seconds, and its ratio to the baseline's run of the same round. */
  samples?: number[];
  ratios?: number[];
  bytes?: number;
  check: string;
  error?: string;
}

function fmt(n: number, digits: number): string {
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

function table(rows: Row[], rawBytes: number | undefined, bytesLabel: string): string {
  const base = rows.find((r) => r.baseline);
  const paired = rows.some((r) => (r.samples?.length ?? 0) > 1);
  const head = ["Method", paired ? "Wall s (median)" : "Wall s", bytesLabel, "MB/s (raw)", paired ? "Time vs baseline (median of paired ratios)" : "Time vs baseline", "Size vs baseline", "Check"];
  const lines = [head, head.map((h) => (h === "Method" || h === "Check" ? "---" : "---:"))];
  for (const r of rows) {
    const name = r.baseline ? `${r.name} **(baseline)**` : r.name;
    if (r.error !== undefined || r.seconds === undefined) {
      lines.push([name, "FAILED", "—", "—", "—", "—", `FAILED: ${r.error ?? "no result"}`]);
      continue;
    }
    const ok = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x) && x > 0;
    lines.push([
      name,
      fmt(r.seconds, 2),
      ok(r.bytes) ? fmt(r.bytes / MB, 1) : "—",
      ok(rawBytes) ? fmt(rawBytes / MB / r.seconds, 1) : "—",
      r.ratios !== undefined && r.ratios.length > 0
        ? `${fmt(median(r.ratios), 2)}×${r.ratios.length > 1 ? ` (${fmt(Math.min(...r.ratios), 2)}–${fmt(Math.max(...r.ratios), 2)}, n=${r.ratios.length})` : ""}`
        : base?.seconds !== undefined && base.error === undefined ? `${fmt(r.seconds / base.seconds, 2)}×` : "n/a",
      ok(r.bytes) && ok(base?.bytes) && base.error === undefined ? `${fmt(r.bytes / base.bytes, 2)}×` : "n/a",
      r.check,
    ]);
  }
  return lines.map((l) => `| ${l.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`).join("\n");
}

/** A row's time ÷ its baseline's: the median of paired ratios, else of the two medians; undefined without both. */
function ratioOf(r: Row, rows: Row[]): number | undefined {
  if (r.baseline || r.error !== undefined || r.seconds === undefined) return undefined;
  if (r.ratios !== undefined && r.ratios.length > 0) return median(r.ratios);
  const base = rows.find((x) => x.baseline);
  return base?.seconds !== undefined && base.error === undefined ? r.seconds / base.seconds : undefined;
}

async function step(rows: Row[], name: string, fn: (row: Row) => Promise<void>, baseline = false): Promise<Row> {
  const row: Row = { name, check: "", baseline };
  rows.push(row);
  process.stderr.write(`bench: ${name} ... `);
  try {
    await fn(row);
    process.stderr.write(`${row.seconds !== undefined ? fmt(row.seconds, 2) : "?"} s ${row.check}\n`);
  } catch (err) {
    row.error = (err instanceof Error ? err.message : String(err)).replaceAll("\n", " ");
    process.stderr.write(`FAILED: ${row.error}\n`);
  }
  return row;
}

/** One pipeline of a paired comparison: runs once, returns its seconds (and fills its row). */
interface Pipeline {
  name: string;
  baseline?: boolean;
  run: (row: Row) => Promise<number>;
}

/**
 * Runs every pipeline RUNS times in rounds, alternating the order each round
 * (ABC, CBA, ...). A row's seconds are the median of its runs; its ratio is
 * the median of run ÷ the baseline's run of the same round.
 */
async function pairedRounds(rows: Row[], pipelines: Pipeline[]): Promise<void> {
  const byName = new Map<string, Row>();
  for (const p of pipelines) {
    const row: Row = { name: p.name, check: "", baseline: p.baseline ?? false, samples: [], ratios: [] };
    rows.push(row);
    byName.set(p.name, row);
  }
  for (let round = 0; round < RUNS; round++) {
    const order = round % 2 === 0 ? pipelines : [...pipelines].reverse();
    const got = new Map<string, number>();
    for (const p of order) {
      const row = byName.get(p.name);
      if (!row || row.error !== undefined) continue;
      process.stderr.write(`bench: [round ${round + 1}/${RUNS}] ${p.name} ... `);
      try {
        const sec = await p.run(row);
        got.set(p.name, sec);
        row.samples?.push(sec);
        process.stderr.write(`${fmt(sec, 2)} s ${row.check}\n`);
      } catch (err) {
        row.error = (err instanceof Error ? err.message : String(err)).replaceAll("\n", " ");
        process.stderr.write(`FAILED: ${row.error}\n`);
      }
    }
    const base = pipelines.find((p) => p.baseline);
    const b = base ? got.get(base.name) : undefined;
    for (const [name, sec] of got) if (b !== undefined) byName.get(name)?.ratios?.push(sec / b);
  }
  for (const row of byName.values()) if (row.samples && row.samples.length > 0) row.seconds = median(row.samples);
}

// ---------------------------------------------------------------- main

/** Other load on the machine (the load average counts our own servers too, so only a clear excess). */
const busy = (load: number): boolean => load > availableParallelism() * 0.75;

async function main(): Promise<void> {
  const loadStart = loadavg()[0] ?? 0;
  await snapshotCli();
  const work = await mkdtemp(path.join(tmpdir(), "replicator-bench-"));
  onCleanup("work dir", () => rm(work, { recursive: true, force: true }));
  const out = (f: string): string => path.join(work, f);
  const cwd = out("cwd");
  await mkdir(cwd);

  process.stderr.write(`bench: starting source server and S3 (work dir ${work})\n`);
  const [src, s3] = await Promise.all([
    server("source", { binlog: true, serverId: 1 }),
    startS3().then((s: S3Server) => {
      onCleanup("S3 server", () => s.stop());
      return s;
    }),
  ]);
  await s3.createBucket("bench");

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
  let replicatorRaw: number | undefined;
  const clis = [{ tag: "", main: cliMain, cluster: "bench" }, ...(BEFORE_DIST !== undefined ? [{ tag: " [before]", main: beforeMain, cluster: "bench-before" }] : [])];
  const logicalBackups: Pipeline[] = [];
  for (const c of clis) {
    for (const [where, repository, env] of [["file://", `file://${fileRepo}`, {}], ["S3 versitygw", "s3://bench/replicator", s3.env]] as const) {
      logicalBackups.push({
        name: `replicator backup → ${where} (zstd)${c.tag}`,
        run: async (row) => {
          let j: CliJson | undefined;
          const sec = await timed(async () => {
            j = await replicator(["backup", "--source", src.url, "--repository", repository, "--cluster", c.cluster, "--compression", "zstd"], env, cwd, c.main);
          });
          row.bytes = j?.size;
          if (c.tag === "" && where === "file://") replicatorRaw = j?.rawSize;
          row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
          return sec;
        },
      });
    }
  }
  // The parallel format, with as many dump processes as mydumper's threads.
  for (const [where, repository, env] of [["file://", `file://${fileRepo}`, {}], ["S3 versitygw", "s3://bench/replicator", s3.env]] as const) {
    logicalBackups.push({
      name: `replicator backup --method mysqldump_parallel --threads ${THREADS} → ${where}`,
      run: async (row) => {
        let j: CliJson | undefined;
        const sec = await timed(async () => {
          j = await replicator(["backup", "--method", "mysqldump_parallel", "--threads", String(THREADS), "--source", src.url, "--repository", repository, "--cluster", "bench-parallel", "--compression", "zstd"], env, cwd);
        });
        row.bytes = j?.size;
        row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
        return sec;
      },
    });
  }
  logicalBackups.push({
    name: `mydumper (threads=${THREADS}, --compress gzip)`,
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
    name: "mariadb-dump | zstd -3",
    baseline: true,
    run: async (row) => {
      const sec = await timed(() => sh(`mariadb-dump ${dumpArgs} | zstd -q -3 > ${q(files.zstd)}`, "mariadb-dump | zstd -3"));
      row.bytes = await fileSize(files.zstd);
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
  await pairedRounds(backups, logicalBackups);
  if (!ONLY_LOGICAL) {
    await step(backups, "mariadb-dump | gzip", async (row) => {
      row.seconds = await timed(() => sh(`mariadb-dump ${dumpArgs} | gzip > ${q(files.gzip)}`, "mariadb-dump | gzip"));
      row.bytes = await fileSize(files.gzip);
      row.check = "ok";
    });
  }
  if (!ONLY_LOGICAL) {
  await step(backups, "mariabackup --stream=xbstream | zstd", async (row) => {
    await mkdir(files.xbTmp);
    row.seconds = await timed(() =>
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
  });

  }

  // The raw size that MB/s is measured against: the plain dump, uncompressed.
  let rawBytes: number | undefined;
  const baseBackup = backups.find((b) => b.baseline);
  if (baseBackup && baseBackup.error === undefined) {
    const r = await execa("bash", ["-c", `set -o pipefail; zstd -dc ${q(files.zstd)} | wc -c`], { reject: false });
    if (r.exitCode === 0) rawBytes = Number(r.stdout.trim());
  }
  rawBytes ??= replicatorRaw;

  // ------------------------------------------------------------ restores
  const restores: Row[] = [];
  const byName = (prefix: string): Row | undefined => backups.find((b) => b.name.startsWith(prefix));
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

  const logicalRestores: Pipeline[] = [];
  for (const c of clis) {
    for (const [where, repository, env, tag] of [["file://", `file://${fileRepo}`, {}, "file"], ["S3 versitygw", "s3://bench/replicator", s3.env, "s3"]] as const) {
      logicalRestores.push({
        name: `replicator restore ← ${where}${c.tag}`,
        run: async (row) => {
          const b = backups.find((x) => x.name === `replicator backup → ${where} (zstd)${c.tag}`);
          need(b);
          row.bytes = b?.bytes;
          await intoFresh(row, `restore-${tag}`, async (t) => {
            const j = await replicator(["restore", "--target", t.url, "--repository", repository, "--cluster", c.cluster], env, cwd, c.main);
            return `CLI ${fmt((j.durationMs ?? 0) / 1000, 2)} s; `;
          });
          return row.seconds ?? NaN;
        },
      });
    }
  }
  for (const [where, repository, env, tag] of [["file://", `file://${fileRepo}`, {}, "file"], ["S3 versitygw", "s3://bench/replicator", s3.env, "s3"]] as const) {
    logicalRestores.push({
      name: `replicator restore (mysqldump_parallel, ${THREADS} threads) ← ${where}`,
      run: async (row) => {
        const b = backups.find((x) => x.name === `replicator backup --method mysqldump_parallel --threads ${THREADS} → ${where}`);
        need(b);
        row.bytes = b?.bytes;
        await intoFresh(row, `restore-parallel-${tag}`, async (t) => {
          const j = await replicator(["restore", "--target", t.url, "--repository", repository, "--cluster", "bench-parallel"], env, cwd);
          return `CLI ${fmt((j.durationMs ?? 0) / 1000, 2)} s; `;
        });
        return row.seconds ?? NaN;
      },
    });
  }
  logicalRestores.push({
    name: `myloader (threads=${THREADS})`,
    run: async (row) => {
      const b = byName("mydumper");
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
    run: async (row) => {
      need(baseBackup);
      row.bytes = baseBackup?.bytes;
      await intoFresh(row, "restore-mariadb", (t) =>
        sh(`zstd -dc ${q(files.zstd)} | mariadb --no-defaults ${clientArgs(t)} --max-allowed-packet=1G --default-character-set=utf8mb4`, "zstd -dc | mariadb").then(() => ""),
      );
      return row.seconds ?? NaN;
    },
  });
  if (!SKIP_RESTORES) await pairedRounds(restores, logicalRestores);
  if (!ONLY_LOGICAL) {
  await step(restores, "mbstream -x + mariabackup --prepare (physical)", async (row) => {
    const b = byName("mariabackup");
    need(b);
    row.bytes = b?.bytes;
    const dir = out("xb-restore");
    const log = out("mariabackup-prepare.log");
    await mkdir(dir);
    row.seconds = await timed(async () => {
      await sh(`zstd -dc ${q(files.xb)} | mbstream -x -C ${q(dir)}`, "zstd -dc | mbstream -x");
      await sh(`mariabackup --no-defaults --prepare --target-dir=${q(dir)} --use-memory=1G > ${q(log)} 2>&1`, "mariabackup --prepare").catch(
        async (err: unknown) => { throw new Error(`${String(err)} — log: ${await tail(log)}`); },
      );
    });
    // Not timed: start a server on the prepared datadir and count rows.
    const restored = await server("restore-physical", { datadir: dir });
    try {
      const bad = await checkRows(restored, expected);
      if (bad) throw new Error(`row counts differ: ${bad}`);
      row.check = `rows ok (${TABLES.length} tables; ${BIGGEST} ${fmt(expected[BIGGEST] ?? 0, 0)}), checked by starting mariadbd on the prepared dir (not timed)`;
    } finally {
      await restored.destroy();
    }
  });

  }

  // ------------------------------------------------------------ physical: replicator's mariabackup method
  // Against the plain mariabackup rows above (same run, same data), with the
  // same --parallel and --use-memory. `replicator restore --datadir` also
  // fsyncs every restored file and renames it into the data directory.
  const physBackups: Row[] = [];
  const physRestores: Row[] = [];
  if (!ONLY_LOGICAL) {
  const physCwd = out("cwd-physical");
  const physRepo = out("repo-physical");
  await mkdir(physCwd);
  await mkdir(physRepo);
  await writeFile(path.join(physCwd, "replicator.yaml"), `methodOptions:\n  parallel: ${THREADS}\n  useMemory: 1G\n`);
  /** The plain-tool row measured above, as this table's baseline. */
  const asBaseline = (rows: Row[], r: Row | undefined): void => {
    if (r) rows.push({ ...r, baseline: true });
  };
  const physBackup = (row: Row, repository: string, env: Record<string, string>): Promise<void> =>
    (async () => {
      let j: CliJson | undefined;
      row.seconds = await timed(async () => {
        j = await replicator(["backup", "--method", "mariabackup", "--source", src.url, "--repository", repository, "--cluster", "bench", "--compression", "zstd"], env, physCwd);
      });
      row.bytes = j?.size;
      row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
    })();
  await step(physBackups, "replicator backup --method mariabackup → file:// (zstd)", (row) => physBackup(row, `file://${physRepo}`, {}));
  await step(physBackups, "replicator backup --method mariabackup → S3 versitygw (zstd)", (row) => physBackup(row, "s3://bench/physical", s3.env));
  asBaseline(physBackups, byName("mariabackup"));
  const physRestore = async (row: Row, b: Row | undefined, tag: string, repository: string, env: Record<string, string>): Promise<void> => {
    need(b);
    row.bytes = b?.bytes;
    const dir = path.join(out(tag), "data");
    let j: CliJson | undefined;
    row.seconds = await timed(async () => {
      j = await replicator(["restore", "--datadir", dir, "--repository", repository, "--cluster", "bench"], env, physCwd);
    });
    // Not timed: start a server on the restored datadir and count rows.
    const restored = await server(tag, { datadir: dir });
    try {
      const bad = await checkRows(restored, expected);
      if (bad) throw new Error(`row counts differ: ${bad}`);
      row.check = `CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s; rows ok (${TABLES.length} tables; ${BIGGEST} ${fmt(expected[BIGGEST] ?? 0, 0)}), checked by starting mariadbd on it (not timed)`;
    } finally {
      await restored.destroy();
    }
  };
  await step(physRestores, "replicator restore --datadir ← file://", (row) => physRestore(row, physBackups[0], "phys-restore-file", `file://${physRepo}`, {}));
  await step(physRestores, "replicator restore --datadir ← S3 versitygw", (row) => physRestore(row, physBackups[1], "phys-restore-s3", "s3://bench/physical", s3.env));
  asBaseline(physRestores, restores.find((r) => r.name.startsWith("mbstream -x")));
  }

  // ------------------------------------------------------------ report
  const cpu = cpus()[0]?.model ?? "?";
  const facts = [
    `- Date: ${new Date().toISOString()}`,
    `- Machine: ${availableParallelism()} CPUs (nproc) — ${cpu}, ${fmt(totalmem() / 2 ** 30, 1)} GiB RAM; ` +
      `1-min load average ${fmt(loadStart, 2)} at start, ${fmt(loadavg()[0] ?? 0, 2)} at end${busy(loadStart) ? " (**machine was busy: other work shares the CPUs, timings are noisy**)" : ""}`,
    `- Node ${process.version}; MariaDB ${ver?.v ?? "?"}; ${await version("mariadb-dump", ["--version"])}; ${await version("mydumper", ["--version"])}; ` +
      `${await version("mariabackup", ["--version"])}; zstd ${(await version("zstd", ["--version"])).replace(/.*\b(v[\d.]+).*/, "$1")}`,
    `- Data set: BENCH_SIZE_MB=${sizeMb}; raw dump ${rawBytes !== undefined ? fmt(rawBytes / MB, 1) : "?"} MB; InnoDB files (.ibd) ${fmt(innodbBytes / MB, 1)} MB; ` +
      `rows: ${TABLES.map((t) => `${DB}.${t} ${fmt(expected[t] ?? 0, 0)}`).join(", ")} (generated server-side in ${fmt(genSeconds, 1)} s)`,
    `- Servers: mariadbd ${SERVER_ARGS.join(" ")} (source with binlog, ROW); every restore goes into a fresh empty server; S3 is versitygw on 127.0.0.1`,
    `- MB = 10^6 bytes. MB/s = raw dump MB / wall s. Ratios: time or size ÷ the baseline row (× > 1 is slower/larger).`,
  ].join("\n");
  const report = [
    `# replicator benchmark`,
    "",
    facts,
    "",
    "## Backup",
    "",
    table(backups, rawBytes, "Stored MB"),
    "",
    "## Restore",
    "",
    table(restores, rawBytes, "Read MB"),
    "",
    "## Physical backup (replicator's mariabackup method)",
    "",
    table(physBackups, rawBytes, "Stored MB"),
    "",
    "## Physical restore (replicator restore --datadir: extract, prepare, move into the data directory, fsync)",
    "",
    table(physRestores, rawBytes, "Read MB"),
    "",
  ].join("\n");
  console.log(report);
  const resultsDir = path.join(repoRoot, "bench/results");
  await mkdir(resultsDir, { recursive: true });
  await writeFile(path.join(resultsDir, "latest.md"), report);
  const section = (title: string, rows: Row[]): ChartSection => ({
    title,
    baseline: rows.find((r) => r.baseline)?.name ?? "baseline",
    bars: rows.flatMap((r) => {
      const ratio = ratioOf(r, rows);
      return ratio === undefined ? [] : [{ name: r.name, ratio }];
    }),
  });
  const chart = ratioChart(`replicator ÷ the plain pipeline, ${rawBytes !== undefined ? `${fmt(rawBytes / MB, 0)} MB raw` : `BENCH_SIZE_MB=${sizeMb}`}, ${new Date().toISOString().slice(0, 10)}${RUNS > 1 ? `, median of ${RUNS} paired rounds` : ""}`, [
    section("Logical backup", backups),
    section("Logical restore", restores),
    section("Physical backup", physBackups),
    section("Physical restore", physRestores),
  ]);
  await writeFile(path.join(resultsDir, "ratios-latest.svg"), chart);
  process.stderr.write(`bench: wrote ${path.relative(process.cwd(), path.join(resultsDir, "latest.md"))} and ratios-latest.svg\n`);
  if ([...backups, ...restores, ...physBackups, ...physRestores].some((r) => r.error !== undefined)) process.exitCode = 1;
}

try {
  await main();
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
