// The binlog replay part of `make bench` (BENCH_ONLY=replay runs it alone):
// how fast `replicator restore --until-gtid` replays the binlog archive,
// against the pipeline a DBA would type on the same binlogs,
// `mariadb-binlog --start-position=P FILES | mariadb`.
//
// A MariaDB master with binlog (ROW) gets a small base data set and a
// logical backup (`replicator backup`, into the versitygw the bench started);
// then about BENCH_SIZE_MB of binlog traffic (transactions of 200 INSERTed
// rows and 100 UPDATEd rows each, FLUSH BINARY LOGS at every quarter, so
// there are several files); one marker transaction in another schema, whose
// GTID is the --until-gtid target (replayed up to, not including, it); and
// `replicator binlog-archive --once` archives all of it.
//
// The CLI cannot replay without restoring the base backup first, so the
// paired rounds (BENCH_RUNS) run three pipelines, each into a fresh server:
//   - replicator restore --until-gtid: restore + archive download, checks + replay, timed whole;
//   - replicator restore of the same backup, no replay, timed (the restore alone);
//   - the baseline: the same backup restored by replicator (not timed), then
//     `mariadb-binlog --start-position=P FILES | mariadb` on the master's own
//     binlog files, from the backup's position P, timed.
// The archive's replay time is the first minus the second of the same round.
// After each run (not timed) CHECKSUM TABLE of the bench schema on the target
// must equal the master's.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { checksums, startMariaDb, type MariaDb } from "../test/harness/mariadb.js";
import type { S3Server } from "../test/harness/s3.js";
import {
  fileSize,
  fmt,
  MB,
  median,
  noteAgent,
  mariadbServer,
  pairedRounds,
  q,
  runReplicator,
  sh,
  timed,
  version,
  type BenchPart,
  type CliJson,
  type Row,
} from "./common.js";

export interface ReplayBenchOptions {
  /** The bench's work directory (removed at the end). */
  work: string;
  sizeMb: number;
  runs: number;
  /** The replicator CLI (the bench's snapshot of dist/). */
  cliMain: string;
  /** The versitygw the bench started, with bucket "bench". */
  s3: S3Server;
}

const DB = "bench_replay";
const MARKER_DB = "bench_replay_marker";
const CLUSTER = "bench-replay";
const REPO = "s3://bench/replay";
// Smaller than the MariaDB part's (1G): two servers run at once here.
const SERVER_ARGS = ["--innodb-buffer-pool-size=256M", "--innodb-log-file-size=256M", "--max-allowed-packet=1G"];
const INSERTS_PER_TX = 200;
const UPDATES_PER_TX = 100;
const BASE_ROWS = 20_000;

function server(tag: string, opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  return mariadbServer(tag, SERVER_ARGS, opts);
}

const clientArgs = (s: MariaDb): string => `--no-defaults --host=127.0.0.1 --port=${s.port} --user=root --protocol=TCP`;

interface BinlogPos {
  file: string;
  pos: number;
}

async function masterStatus(s: MariaDb): Promise<BinlogPos> {
  const [r] = await s.query<{ File: string; Position: number | string }>("SHOW MASTER STATUS");
  if (!r) throw new Error("SHOW MASTER STATUS returned nothing: is the binlog on?");
  return { file: r.File, pos: Number(r.Position) };
}

async function binlogs(s: MariaDb): Promise<{ name: string; size: number }[]> {
  const rows = await s.query<{ Log_name: string; File_size: number | string }>("SHOW BINARY LOGS");
  return rows.map((r) => ({ name: r.Log_name, size: Number(r.File_size) }));
}

/** The binlog bytes written since `from` (its file from its position, and every later file). */
async function bytesSince(s: MariaDb, from: BinlogPos): Promise<number> {
  let total = 0;
  let seen = false;
  for (const b of await binlogs(s)) {
    if (b.name === from.file) {
      seen = true;
      total += b.size - from.pos;
    } else if (seen) total += b.size;
  }
  if (!seen) throw new Error(`binlog ${from.file} is gone from SHOW BINARY LOGS`);
  return total;
}

const insertRows = (n: number): string =>
  `INSERT INTO ${DB}.orders (customer, amount, status, note, updated)
   SELECT FLOOR(RAND()*100000), ROUND(RAND()*1000, 2), ELT(1 + FLOOR(RAND()*4), 'new', 'paid', 'shipped', 'returned'),
          CONCAT(MD5(RAND()), ' ', MD5(RAND()), ' ', MD5(RAND())), NOW(6)
   FROM ${DB}.seq_1_to_${n}`;

export async function replayBench(o: ReplayBenchOptions): Promise<BenchPart> {
  const out = (f: string): string => path.join(o.work, f);
  const cwd = out("replay-cwd");
  await mkdir(cwd, { recursive: true });
  const env = { ...o.s3.env };
  const cli = (args: string[]): Promise<CliJson> => runReplicator(o.cliMain, args, env, cwd);

  process.stderr.write("bench: replay: starting the MariaDB master (binlog, ROW)\n");
  const master = await server("replay master", { binlog: true, serverId: 11 });
  await master.query(
    `CREATE DATABASE ${DB};
     CREATE TABLE ${DB}.orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT NOT NULL, amount DECIMAL(10,2) NOT NULL,
       status VARCHAR(16) NOT NULL, note VARCHAR(200) NOT NULL, updated DATETIME(6) NOT NULL, KEY (customer)) ENGINE=InnoDB;
     CREATE TABLE ${DB}.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, kind VARCHAR(16) NOT NULL, at DATETIME(6) NOT NULL) ENGINE=InnoDB;
     CREATE DATABASE ${MARKER_DB};
     CREATE TABLE ${MARKER_DB}.done (id INT PRIMARY KEY) ENGINE=InnoDB;`,
  );
  for (let i = 0; i < BASE_ROWS / 1000; i++) await master.query(insertRows(1000));

  // ------------------------------------------------------------ the base backup
  process.stderr.write("bench: replay: logical backup of the master (not timed)\n");
  const before = await masterStatus(master);
  await cli(["backup", "--source", master.url, "--repository", REPO, "--cluster", CLUSTER, "--compression", "zstd"]);
  const start = await masterStatus(master);
  const atBackup = await checksums(master, [DB]);
  if (start.file !== before.file || start.pos !== before.pos) {
    throw new Error(`the backup moved the master's binlog (${before.file}:${before.pos} → ${start.file}:${start.pos}); the plain pipeline's start position would be wrong`);
  }

  // ------------------------------------------------------------ binlog traffic after it
  const target = o.sizeMb * MB;
  process.stderr.write(`bench: replay: writing ~${fmt(o.sizeMb, 0)} MB of binlog (transactions of ${INSERTS_PER_TX} INSERTs + ${UPDATES_PER_TX} UPDATEs)\n`);
  let written = 0;
  let txs = 0;
  let flushes = 0;
  let maxId = BASE_ROWS;
  while (written < target) {
    const from = 1 + Math.floor(Math.random() * Math.max(1, maxId - UPDATES_PER_TX));
    await master.query(
      `START TRANSACTION;
       ${insertRows(INSERTS_PER_TX)};
       INSERT INTO ${DB}.events (order_id, kind, at) VALUES (${from}, 'update', NOW(6)), (${from + 1}, 'update', NOW(6));
       UPDATE ${DB}.orders SET status = 'paid', amount = amount + 1, updated = NOW(6) WHERE id BETWEEN ${from} AND ${from + UPDATES_PER_TX - 1};
       COMMIT;`,
    );
    txs++;
    maxId += INSERTS_PER_TX;
    if (txs % 10 === 0) {
      written = await bytesSince(master, start);
      if (flushes < 3 && written >= ((flushes + 1) * target) / 4) {
        await master.query("FLUSH BINARY LOGS");
        flushes++;
      }
    }
  }
  // The marker: its GTID is the target (not included); the plain pipeline replays it too (another schema, not checked).
  await master.query(`INSERT INTO ${MARKER_DB}.done VALUES (1)`);
  const [g] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
  const untilGtid = g?.pos ?? "";
  if (!/^\d+-\d+-\d+$/.test(untilGtid)) throw new Error(`unexpected gtid_binlog_pos "${untilGtid}" (one domain expected)`);
  await master.query("FLUSH BINARY LOGS");
  const logs = await binlogs(master);
  const startIdx = logs.findIndex((b) => b.name === start.file);
  // Every file from the backup's one to the last closed one (the new empty open file is left out).
  const files = logs.slice(startIdx, -1).map((b) => path.join(master.datadir, b.name));
  const binlogBytes = await bytesSince(master, start);
  const reference = await checksums(master, [DB]);
  const [rowCount] = await master.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${DB}.orders`);
  process.stderr.write(`bench: replay: ${txs} transactions, ${fmt(binlogBytes / MB, 1)} MB of binlog in ${files.length} files from ${start.file}:${start.pos}; archiving\n`);
  for (const f of files) await fileSize(f); // every file is there (throws otherwise)
  await cli(["binlog-archive", "--source", master.url, "--repository", REPO, "--cluster", CLUSTER, "--once"]);

  // ------------------------------------------------------------ paired rounds
  const same = async (t: MariaDb, ref: Record<string, string>, what: string): Promise<string> => {
    const got = await checksums(t, [DB]);
    const bad = Object.keys(ref).filter((k) => got[k] !== ref[k]);
    if (bad.length > 0 || Object.keys(got).length !== Object.keys(ref).length) {
      throw new Error(`CHECKSUM TABLE differs from ${what}: ${bad.join(", ") || "other tables"}`);
    }
    return `CHECKSUM TABLE of ${Object.keys(ref).length} tables = ${what}`;
  };
  const intoFresh = async (tag: string, row: Row, ref: Record<string, string>, what: string, fn: (t: MariaDb) => Promise<number>): Promise<number> => {
    const t = await server(tag);
    try {
      const sec = await fn(t);
      row.check = await same(t, ref, what);
      return sec;
    } finally {
      await t.destroy();
    }
  };
  const restore = (t: MariaDb, extra: string[] = []): Promise<CliJson> =>
    cli(["restore", "--target", t.url, "--repository", REPO, "--cluster", CLUSTER, ...extra]);

  const PITR = "replicator restore --until-gtid (restore + archive download + replay)";
  const PLAIN_RESTORE = "replicator restore (the same backup, no replay)";
  const BASE = `mariadb-binlog --start-position=${start.pos} FILES | mariadb (after the same restore, not timed)`;
  const raw: Row[] = [];
  const MASTER = `the master's (orders ${fmt(Number(rowCount?.n ?? 0), 0)} rows)`;
  await pairedRounds(
    raw,
    [
      {
        name: PITR,
        run: (row) =>
          intoFresh("replay pitr", row, reference, MASTER, async (t) => {
            let j: CliJson | undefined;
            const sec = await timed(async () => { j = await restore(t, ["--until-gtid", untilGtid]); });
            noteAgent(row, j);
            return sec;
          }),
      },
      {
        name: PLAIN_RESTORE,
        baseline: true,
        // The restore alone leaves the target at the backup: checked against the master's checksums then.
        run: (row) =>
          intoFresh("replay restore", row, atBackup, "the master's at the backup", async (t) => {
            let j: CliJson | undefined;
            const sec = await timed(async () => { j = await restore(t); });
            noteAgent(row, j);
            return sec;
          }),
      },
      {
        name: BASE,
        run: (row) =>
          intoFresh("replay plain", row, reference, MASTER, async (t) => {
            await restore(t);
            return timed(() => sh(`mariadb-binlog --start-position=${start.pos} ${files.map(q).join(" ")} | mariadb ${clientArgs(t)}`, "mariadb-binlog | mariadb"));
          }),
      },
    ],
    o.runs,
  );
  const pitr = raw.find((r) => r.name === PITR);
  const plainRestore = raw.find((r) => r.name === PLAIN_RESTORE);
  const base = raw.find((r) => r.name === BASE);
  // The archive's replay: the whole PITR run minus the plain restore of the same round.
  const replay: Row = { name: "replicator archive replay (restore --until-gtid − plain restore, same round)", check: "", samples: [], ratios: [] };
  const failedOf = (r: Row | undefined): string | undefined => (r === undefined ? "no result" : r.error);
  const why = failedOf(pitr) ?? failedOf(plainRestore);
  if (why !== undefined) replay.error = why;
  else {
    const a = pitr?.samples ?? [];
    const b = plainRestore?.samples ?? [];
    const c = base?.error === undefined ? (base?.samples ?? []) : [];
    for (let i = 0; i < Math.min(a.length, b.length); i++) {
      const d = (a[i] ?? NaN) - (b[i] ?? NaN);
      replay.samples?.push(d);
      if (c[i] !== undefined) replay.ratios?.push(d / (c[i] ?? NaN));
    }
    replay.seconds = median(replay.samples ?? []);
    replay.check = replay.seconds > 0 ? `${pitr?.check ?? ""}; includes the archive's download and sha256 checks` : "the difference is not positive: noise larger than the replay";
    replay.bytes = binlogBytes;
  }
  const baseRow: Row = base ? { ...base, baseline: true, ratios: undefined, bytes: binlogBytes } : { name: BASE, baseline: true, check: "", error: "no result" };
  const ratio = replay.seconds !== undefined && baseRow.seconds !== undefined && baseRow.error === undefined && replay.error === undefined ? replay.seconds / baseRow.seconds : undefined;
  const rate = (r: Row): string => (r.seconds !== undefined && r.seconds > 0 && r.error === undefined ? `${fmt(binlogBytes / MB / r.seconds, 1)} MB/s` : "n/a");
  return {
    facts: [
      `- Binlog replay: ${fmt(binlogBytes / MB, 1)} MB of ROW binlog (${txs} transactions of ${INSERTS_PER_TX} INSERTs + ${UPDATES_PER_TX} UPDATEs, ${files.length} files, ` +
        `from ${start.file}:${start.pos}) after a logical backup of ${fmt(BASE_ROWS, 0)} rows; every run into a fresh mariadbd ${SERVER_ARGS.join(" ")} restored from that backup; ` +
        `${await version("mariadb-binlog", ["--version"])}. Archive replay ${rate(replay)} vs mariadb-binlog | mariadb ${rate(baseRow)}` +
        `${ratio !== undefined ? ` (time ours/plain ${fmt(ratio, 2)}×)` : ""}. ` +
        `The CLI replays only after restoring the base backup, so its replay time is restore --until-gtid minus a plain restore of the same backup in the same round ` +
        `(its agent peak RSS is on the restore --until-gtid row). MB/s of these rows = binlog MB / wall s; checks (CHECKSUM TABLE) are not timed.`,
    ],
    tables: [
      {
        title: "Binlog replay (the archive's replay against mariadb-binlog | mariadb on the same binlogs)",
        chartTitle: "Binlog replay",
        rows: [replay, baseRow],
        rawBytes: binlogBytes,
        bytesLabel: "Binlog MB",
      },
      {
        title: "Point-in-time restore, whole (restore + replay) against the restore alone",
        chartTitle: "PITR restore",
        rows: [pitr ?? { name: PITR, check: "", error: "no result" }, plainRestore ?? { name: PLAIN_RESTORE, check: "", error: "no result" }],
        rawBytes: undefined,
        bytesLabel: "Binlog MB",
      },
    ],
  };
}
