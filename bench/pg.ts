// The PostgreSQL part of `make bench` (BENCH_ONLY=pg runs it alone):
// `replicator backup --method pg_dump` against `pg_dump | zstd`, and
// `--method pg_basebackup` against `pg_basebackup -Ft -D- | zstd`, with their
// restores (`zstd -dc | psql` and `zstd -dc | tar -x`), in paired rounds, on
// about BENCH_SIZE_MB of generated data (as a plain pg_dump) in a PostgreSQL
// server the bench starts itself (the conformance kit's sandbox: initdb into a
// temp directory, 127.0.0.1, fsync off). When the bench runs as root, the
// servers, the CLI and the shell pipelines all run as PostgreSQL's OS user
// (postgres), as in test/integration/postgres.test.ts.
import { chown, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { ZSTD_LEVEL } from "../src/agent/compression.js";
import { pgQuery } from "../src/db/postgres/client.js";
import { endpointUrl } from "../src/db/endpoint.js";
import { removePostgresSandboxTemplate, serverUser, startPostgresSandbox } from "../src/conformance/sandbox-postgres.js";
import type { SandboxServer } from "../src/conformance/types.js";
import {
  fileSize,
  fmt,
  MB,
  noteAgent,
  onCleanup,
  pairedRounds,
  q,
  runReplicator,
  sh,
  timed,
  version,
  type BenchPart,
  type CliJson,
  type Pipeline,
  type Row,
  type RunAs,
} from "./common.js";

const PASSWORD = "bench-pg-password";
const TABLES = ["orders", "customers", "events"] as const;
type Table = (typeof TABLES)[number];
/** Rows per table for one "unit" of the data set (orders = 1), as in the MariaDB data set. */
const MIX: Record<Table, number> = { orders: 1, customers: 0.1, events: 2 };

const WORDS = [
  "alpha", "order", "shipping", "invoice", "customer", "delivery", "express", "standard", "return", "refund",
  "warehouse", "berlin", "paris", "london", "madrid", "rome", "priority", "gift", "wrap", "fragile",
  "large", "small", "blue", "red", "green", "black", "white", "cotton", "steel", "wood", "glass", "paper",
];
const arr = (xs: string[]): string => `ARRAY[${xs.map((x) => `'${x}'`).join(",")}]`;
const FIRST = arr(["anna", "ben", "carla", "david", "eva", "felix", "greta", "hugo", "ines", "jonas", "klara", "luis", "mia", "noah", "olga", "paul"]);
const LAST = arr(["schmidt", "martin", "rossi", "garcia", "smith", "nowak", "dubois", "jensen", "silva", "weber", "moreau", "kowalski", "novak", "horvat", "berg", "lopez"]);
/** A word picked by byte `i` of the bytea `h`. */
const word = (h: string, i: number): string => `(${arr(WORDS)})[1 + get_byte(${h}, ${i}) % ${WORDS.length}]`;
/** Up to 24 words of text from the row's two hashes, cut to `len` characters. */
function text(len: string): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i++) words.push(word("h", i));
  for (let i = 0; i < 8; i++) words.push(word("h2", i));
  return `left(concat_ws(' ', ${words.join(", ")}), ${len})`;
}

const DDL = `
CREATE TABLE customers (
  id integer PRIMARY KEY, first_name varchar(32) NOT NULL, last_name varchar(32) NOT NULL, email varchar(128) NOT NULL UNIQUE,
  country char(2) NOT NULL, balance numeric(14,2) NOT NULL, score double precision NOT NULL, is_active boolean NOT NULL,
  created_at timestamp NOT NULL, bio text);
CREATE TABLE orders (
  id bigint PRIMARY KEY, customer_id integer NOT NULL, status varchar(16) NOT NULL, amount numeric(12,2) NOT NULL,
  tax numeric(10,4) NOT NULL, quantity smallint NOT NULL, created_at timestamp NOT NULL, sku varchar(32) NOT NULL,
  note varchar(255), description text);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_created ON orders (created_at);
CREATE TABLE events (id bigint PRIMARY KEY, order_id bigint NOT NULL, kind smallint NOT NULL, ts timestamp(3) NOT NULL, payload jsonb NOT NULL);
CREATE INDEX events_order ON events (order_id);
`;

/** INSERT ... SELECT of rows [a, b] into `table`, generated server-side. */
function insertSql(table: Table, a: number, b: number, customers: number): string {
  const from = `(SELECT g, decode(md5(g::text), 'hex') AS h, decode(md5((g + 1000000000)::text), 'hex') AS h2, md5(g::text) AS m FROM generate_series(${a}::bigint, ${b}::bigint) g) s`;
  switch (table) {
    case "customers":
      return `INSERT INTO customers SELECT g,
        (${FIRST})[1 + (g % 16)::int], (${LAST})[1 + ((g / 16) % 16)::int],
        (${FIRST})[1 + (g % 16)::int] || '.' || substr(m, 1, 6) || g || '@' || (ARRAY['example.com','mail.test','corp.example','shop.test','web.example'])[1 + (g % 5)::int],
        (ARRAY['DE','FR','GB','ES','IT','PL','NL','SE','PT','AT','CZ','US'])[1 + get_byte(h, 3) % 12],
        ((get_byte(h, 4) * 65536 + get_byte(h, 5) * 256 + get_byte(h, 6)) % 10000000) / 100.0 - 50000,
        (get_byte(h, 7) * 256 + get_byte(h, 8)) / 655.35,
        (g % 7)::int <> 0,
        timestamp '2015-01-01' + ((get_byte(h, 9) * 65536 + get_byte(h, 10) * 256 + get_byte(h, 11)) * 17 % 315360000) * interval '1 second',
        CASE WHEN (g % 3)::int = 0 THEN NULL ELSE ${text("20 + (g % 150)::int")} END
        FROM ${from}`;
    case "orders":
      return `INSERT INTO orders SELECT g,
        1 + (g * 7919) % ${customers},
        (ARRAY['new','paid','shipped','delivered','cancelled'])[1 + (g % 5)::int],
        5 + (get_byte(h, 0) * 65536 + get_byte(h, 1) * 256 + get_byte(h, 2)) % 1000000 / 100.0,
        (get_byte(h, 3) * 256 + get_byte(h, 4)) % 10000 / 10000.0 * 0.21,
        1 + get_byte(h, 5) % 20,
        timestamp '2020-01-01' + ((g * 37 + get_byte(h, 6) * 256 + get_byte(h, 7)) % 157680000) * interval '1 second',
        'SKU-' || upper(substr(md5((g % 50000)::text), 1, 10)),
        CASE WHEN (g % 4)::int = 0 THEN NULL ELSE ${word("h2", 9)} || ' ' || substr(m, 19, 4 + (g % 12)::int) END,
        ${text("30 + get_byte(h2, 10) % 120")}
        FROM ${from}`;
    case "events":
      return `INSERT INTO events SELECT g,
        1 + g / 2,
        get_byte(h, 0) % 16,
        timestamp '2020-01-01' + g * interval '7 seconds' + (get_byte(h, 1) * 4) * interval '1 millisecond',
        jsonb_build_object('ip', get_byte(h, 2) || '.' || get_byte(h, 3) || '.' || get_byte(h, 4) || '.' || get_byte(h, 5),
          'agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)','Mozilla/5.0 (Windows NT 10.0; Win64; x64)','curl/8.5.0','okhttp/4.12.0'])[1 + (g % 4)::int],
          'ref', substr(m, 13, 12), 'step', (g % 9)::int, 'tags', jsonb_build_array(${word("h2", 1)}, ${word("h2", 3)}))
        FROM ${from}`;
  }
}

export interface PgBenchOptions {
  /** The bench's work directory (removed at the end). */
  work: string;
  sizeMb: number;
  runs: number;
  /** The CLI to run (bench/run.ts's snapshot of dist/cli/main.js). */
  cliMain: string;
}

export async function pgBench(o: PgBenchOptions): Promise<BenchPart> {
  const user: RunAs | undefined = serverUser();
  onCleanup("PostgreSQL template", () => {
    removePostgresSandboxTemplate();
    return Promise.resolve();
  });
  // A directory the servers' user owns (the CLI and the pipelines write into it).
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-bench-pg-"));
  onCleanup("PostgreSQL work dir", () => rm(dir, { recursive: true, force: true }));
  if (user) await chown(dir, user.uid, user.gid);
  const out = (f: string): string => path.join(dir, f);
  const mkUserDir = async (f: string): Promise<string> => {
    await mkdir(out(f), { recursive: true });
    if (user) await chown(out(f), user.uid, user.gid);
    return out(f);
  };
  const cwd = await mkUserDir("cwd");
  const repo = `file://${await mkUserDir("repo")}`;
  const env = { REPLICATOR_DB_PASSWORD: PASSWORD, XDG_CACHE_HOME: out("cwd") };

  const servers = new Set<SandboxServer>();
  const sandbox = async (opts: { empty?: boolean } = {}): Promise<SandboxServer> => {
    const s = await startPostgresSandbox({ password: PASSWORD, ...opts });
    servers.add(s);
    return s;
  };
  onCleanup("PostgreSQL servers", async () => {
    await Promise.all([...servers].map((s) => s.destroy()));
  });
  const destroy = async (s: SandboxServer): Promise<void> => {
    servers.delete(s);
    await s.destroy();
  };
  const url = (s: SandboxServer): string => endpointUrl(s.endpoint);
  /** libpq's environment for the plain tools (PGPASSWORD: a throw-away local server). */
  const pgEnv = (s: SandboxServer): Record<string, string> => ({
    PGHOST: "127.0.0.1",
    PGPORT: String(s.endpoint.port),
    PGUSER: "postgres",
    PGPASSWORD: PASSWORD,
    PGDATABASE: "postgres",
  });
  const run = (s: SandboxServer, script: string, what: string): Promise<void> => sh(script, what, { env: pgEnv(s), user, cwd });
  const sql = (s: SandboxServer, text: string, what: string): Promise<string[][]> => pgQuery(s.endpoint, text, { what, timeoutMs: 1_800_000 });

  process.stderr.write(`bench: starting a PostgreSQL server (work dir ${dir})\n`);
  const src = await sandbox();
  process.stderr.write(`bench: generating ~${o.sizeMb} MB (plain pg_dump size) of PostgreSQL data\n`);
  const tGen = performance.now();
  const rows = await generate(src, o.sizeMb * MB, (text, what) => sql(src, text, what));
  const genSeconds = (performance.now() - tGen) / 1000;
  const counts = async (s: SandboxServer): Promise<Record<Table, number>> => {
    const [r] = await sql(s, `SELECT ${TABLES.map((t) => `(SELECT count(*) FROM ${t})`).join(", ")}`, "count the rows");
    return { orders: Number(r?.[0]), customers: Number(r?.[1]), events: Number(r?.[2]) };
  };
  const expected = await counts(src);
  for (const t of TABLES) {
    if (expected[t] !== rows[t]) throw new Error(`generated ${t} has ${String(expected[t])} rows, wanted ${rows[t]}`);
  }
  const [[dbSize]] = (await sql(src, "SELECT pg_database_size('postgres')", "measure the database")) as [[string]];
  const [[pgVersion]] = (await sql(src, "SHOW server_version", "ask the version")) as [[string]];
  const checkRows = async (s: SandboxServer): Promise<string> => {
    const got = await counts(s);
    const bad = TABLES.filter((t) => got[t] !== expected[t]).map((t) => `${t} ${String(got[t])} != ${String(expected[t])}`);
    if (bad.length > 0) throw new Error(`row counts differ: ${bad.join(", ")}`);
    return `rows ok (${TABLES.length} tables; orders ${fmt(expected.orders, 0)})`;
  };

  const cli = (args: string[]): Promise<CliJson> => runReplicator(o.cliMain, args, env, cwd, user);
  const files = { dump: out("dump.sql.zst"), dump1: out("dump-1.sql.zst"), base: out("base.tar.zst"), base1: out("base-1.tar.zst") };
  const dumpArgs = "--format=plain --clean --if-exists --no-password postgres";
  const baseArgs = "-D - -Ft -X fetch --checkpoint=fast --no-password";
  const lvl = String(ZSTD_LEVEL);

  // ------------------------------------------------------------ pg_dump
  const backups: Row[] = [];
  const backupPipelines: Pipeline[] = [
    {
      name: "replicator backup --method pg_dump → file:// (zstd)",
      run: async (row) => {
        let j: CliJson | undefined;
        const sec = await timed(async () => {
          j = await cli(["backup", "--method", "pg_dump", "--source", url(src), "--repository", repo, "--cluster", "pg", "--compression", "zstd"]);
        });
        noteAgent(row, j);
        row.bytes = j?.size;
        row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
        return sec;
      },
    },
    {
      name: `pg_dump | zstd -${lvl}`,
      baseline: true,
      run: async (row) => {
        const sec = await timed(() => run(src, `pg_dump ${dumpArgs} | zstd -q -${lvl} > ${q(files.dump)}`, `pg_dump | zstd -${lvl}`));
        row.bytes = await fileSize(files.dump);
        row.check = "ok";
        return sec;
      },
    },
    {
      name: "pg_dump | zstd -1 (another level: for reference)",
      run: async (row) => {
        const sec = await timed(() => run(src, `pg_dump ${dumpArgs} | zstd -q -1 > ${q(files.dump1)}`, "pg_dump | zstd -1"));
        row.bytes = await fileSize(files.dump1);
        row.check = "ok";
        return sec;
      },
    },
  ];
  await pairedRounds(backups, backupPipelines, o.runs);

  // The raw size MB/s is measured against: the plain dump, uncompressed.
  let rawBytes: number | undefined;
  if (backups.find((b) => b.baseline)?.error === undefined) {
    const r = await execa("bash", ["-c", `set -o pipefail; zstd -dc ${q(files.dump)} | wc -c`], { reject: false });
    if (r.exitCode === 0) rawBytes = Number(r.stdout.trim());
  }

  const need = (rows: Row[], prefix: string): Row => {
    const b = rows.find((x) => x.name.startsWith(prefix));
    if (!b || b.error !== undefined) throw new Error("its backup failed");
    return b;
  };
  /** Time `load` into a fresh server, then (not timed) count its rows. */
  const intoFresh = async (row: Row, load: (t: SandboxServer) => Promise<string>): Promise<number> => {
    const target = await sandbox();
    try {
      let detail = "";
      const sec = await timed(async () => { detail = await load(target); });
      row.check = `${detail}${await checkRows(target)}`;
      return sec;
    } finally {
      await destroy(target);
    }
  };
  const restores: Row[] = [];
  await pairedRounds(
    restores,
    [
      {
        name: "replicator restore (pg_dump) ← file://",
        run: (row) => {
          row.bytes = need(backups, "replicator").bytes;
          return intoFresh(row, async (t) => {
            const j = await cli(["restore", "--target", url(t), "--repository", repo, "--cluster", "pg"]);
            noteAgent(row, j);
            return `CLI ${fmt((j.durationMs ?? 0) / 1000, 2)} s; `;
          });
        },
      },
      {
        name: "zstd -dc | psql --single-transaction",
        baseline: true,
        run: (row) => {
          row.bytes = need(backups, "pg_dump | zstd").bytes;
          return intoFresh(row, (t) =>
            run(t, `zstd -dc ${q(files.dump)} | psql -X -w -q -v ON_ERROR_STOP=1 --single-transaction -f - > /dev/null`, "zstd -dc | psql").then(() => ""),
          );
        },
      },
    ],
    o.runs,
  );

  // ------------------------------------------------------------ pg_basebackup
  const physBackups: Row[] = [];
  await pairedRounds(
    physBackups,
    [
      {
        name: "replicator backup --method pg_basebackup → file:// (zstd)",
        run: async (row) => {
          let j: CliJson | undefined;
          const sec = await timed(async () => {
            j = await cli(["backup", "--method", "pg_basebackup", "--source", url(src), "--repository", repo, "--cluster", "pgb", "--compression", "zstd"]);
          });
          noteAgent(row, j);
          row.bytes = j?.size;
          row.check = `ok (CLI ${fmt((j?.durationMs ?? 0) / 1000, 2)} s)`;
          return sec;
        },
      },
      {
        name: `pg_basebackup -Ft -D- | zstd -${lvl}`,
        baseline: true,
        run: async (row) => {
          const sec = await timed(() => run(src, `pg_basebackup ${baseArgs} | zstd -q -${lvl} > ${q(files.base)}`, `pg_basebackup | zstd -${lvl}`));
          row.bytes = await fileSize(files.base);
          row.check = "ok";
          return sec;
        },
      },
      {
        name: "pg_basebackup -Ft -D- | zstd -1 (another level: for reference)",
        run: async (row) => {
          const sec = await timed(() => run(src, `pg_basebackup ${baseArgs} | zstd -q -1 > ${q(files.base1)}`, "pg_basebackup | zstd -1"));
          row.bytes = await fileSize(files.base1);
          row.check = "ok";
          return sec;
        },
      },
    ],
    o.runs,
  );

  /** Time `restore` into the empty data directory of a new server, then (not timed) start it and count its rows. */
  const intoDatadir = async (row: Row, restore: (datadir: string) => Promise<string>): Promise<number> => {
    const target = await sandbox({ empty: true });
    try {
      let detail = "";
      const sec = await timed(async () => { detail = await restore(target.datadir); });
      await target.start();
      row.check = `${detail}${await checkRows(target)}, checked by starting postgres on it (not timed)`;
      return sec;
    } finally {
      await destroy(target);
    }
  };
  const physRestores: Row[] = [];
  await pairedRounds(
    physRestores,
    [
      {
        name: "replicator restore --datadir (pg_basebackup) ← file://",
        run: (row) => {
          row.bytes = need(physBackups, "replicator").bytes;
          return intoDatadir(row, async (datadir) => {
            const j = await cli(["restore", "--datadir", datadir, "--repository", repo, "--cluster", "pgb"]);
            noteAgent(row, j);
            return `CLI ${fmt((j.durationMs ?? 0) / 1000, 2)} s; `;
          });
        },
      },
      {
        name: "zstd -dc | tar -x",
        baseline: true,
        run: (row) => {
          row.bytes = need(physBackups, "pg_basebackup -Ft -D- | zstd").bytes;
          return intoDatadir(row, (datadir) => run(src, `zstd -dc ${q(files.base)} | tar -x -f - -C ${q(datadir)}`, "zstd -dc | tar -x").then(() => ""));
        },
      },
    ],
    o.runs,
  );
  await destroy(src);

  return {
    facts: [
      `- PostgreSQL ${pgVersion}; ${await version("pg_dump", ["--version"])}; the plain pipelines at zstd -${lvl} (replicator's level; \`zstd -1\` rows for reference), single-threaded as typed`,
      `- PostgreSQL data set: BENCH_SIZE_MB=${o.sizeMb}; plain pg_dump ${rawBytes !== undefined ? fmt(rawBytes / MB, 1) : "?"} MB; database ${fmt(Number(dbSize) / MB, 1)} MB; ` +
        `rows: ${TABLES.map((t) => `${t} ${fmt(expected[t], 0)}`).join(", ")} (generated server-side in ${fmt(genSeconds, 1)} s); ` +
        `servers: the conformance kit's sandbox (shared_buffers 32MB, fsync off), every restore into a fresh one${user ? `; everything runs as OS user uid ${user.uid}` : ""}`,
    ],
    tables: [
      { title: "PostgreSQL logical backup (pg_dump)", chartTitle: "PostgreSQL pg_dump backup", rows: backups, rawBytes, bytesLabel: "Stored MB" },
      { title: "PostgreSQL logical restore (pg_dump; psql in one transaction)", chartTitle: "PostgreSQL pg_dump restore", rows: restores, rawBytes, bytesLabel: "Read MB" },
      { title: "PostgreSQL physical backup (pg_basebackup -X fetch)", chartTitle: "PostgreSQL pg_basebackup backup", rows: physBackups, rawBytes, bytesLabel: "Stored MB" },
      { title: "PostgreSQL physical restore (into an empty data directory)", chartTitle: "PostgreSQL pg_basebackup restore", rows: physRestores, rawBytes, bytesLabel: "Read MB" },
    ],
  };
}

/** Fill `src` with about `targetBytes` of plain pg_dump output; returns the rows per table. */
async function generate(src: SandboxServer, targetBytes: number, sql: (text: string, what: string) => Promise<string[][]>): Promise<Record<Table, number>> {
  await sql(DDL, "create the tables");
  const fill = async (rows: Record<Table, number>): Promise<void> => {
    const CHUNK = 50_000;
    const jobs: string[] = [];
    for (const t of TABLES) {
      for (let a = 1; a <= rows[t]; a += CHUNK) jobs.push(insertSql(t, a, Math.min(rows[t], a + CHUNK - 1), rows.customers));
    }
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < jobs.length) await sql(jobs[next++] ?? "", "load the data set");
    };
    await Promise.all([worker(), worker()]);
  };
  // Calibrate: dump a sample to learn the dump bytes per row, then fill.
  const sample = { orders: 20_000, customers: 2_000, events: 40_000 };
  await fill(sample);
  const r = await execa("pg_dump", ["--data-only", "--no-password", "postgres"], {
    env: { PGHOST: "127.0.0.1", PGPORT: String(src.endpoint.port), PGUSER: "postgres", PGPASSWORD: PASSWORD },
    stripFinalNewline: false,
    encoding: "buffer",
  });
  const perUnit = r.stdout.length / sample.orders;
  await sql(`TRUNCATE ${TABLES.join(", ")}`, "empty the tables");
  const units = Math.max(1000, Math.round(targetBytes / perUnit));
  const rows = { orders: units, customers: Math.max(10, Math.round(units * MIX.customers)), events: Math.round(units * MIX.events) };
  await fill(rows);
  // Hint bits set, statistics and the visibility map made, and a checkpoint: no backup races them.
  await sql("VACUUM ANALYZE", "vacuum the data set");
  await sql("CHECKPOINT", "checkpoint");
  return rows;
}
