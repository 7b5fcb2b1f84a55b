// The mysqldump_parallel method on real MariaDB servers: several dump
// processes from one snapshot taken under a brief read lock while writes go
// on, restored by several connections; every table's checksum, routines,
// views, triggers and events equal; a replica seeded from it replicates; one
// database or one table restored alone; a slave's backup leaves it replicating.
import { chmod, mkdir, mkdtemp, readFile, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { count, routines, seedShop } from "../harness/fixtures.js";
import { checksums as tableChecksums, startMariaDb, waitCaughtUp, type MariaDb } from "../harness/mariadb.js";

let master: MariaDb;
let repo: string;
let repoDir: string;
const servers: MariaDb[] = [];
const SCHEMAS = ["shop", "app", "pair", "bulk", "empty_db", "keyed", "types"];
const replEnv = { REPLICATOR_REPLICATION_PASSWORD: "replpass" };

async function newServer(opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb(opts);
  servers.push(s);
  return s;
}

/** Definitions of routines, triggers, events and views, as the server shows them (definer and times aside). */
async function definitions(s: MariaDb, schema: string): Promise<string[]> {
  const rows = await s.query<{ d: string }>(
    `SELECT CONCAT('R ', routine_name, ' ', routine_definition) AS d FROM information_schema.routines WHERE routine_schema = ?
     UNION ALL SELECT CONCAT('T ', trigger_name, ' ', event_manipulation, ' ', action_statement) FROM information_schema.triggers WHERE trigger_schema = ?
     UNION ALL SELECT CONCAT('E ', event_name, ' ', event_definition, ' ', interval_value, interval_field) FROM information_schema.events WHERE event_schema = ?
     UNION ALL SELECT CONCAT('V ', table_name, ' ', view_definition) FROM information_schema.views WHERE table_schema = ?`,
    [schema, schema, schema, schema],
  );
  return rows.map((r) => r.d).sort();
}

/** Every base table's definition, as SHOW CREATE TABLE prints it (its AUTO_INCREMENT counter aside). */
async function tableDefinitions(s: MariaDb, schemas: string[]): Promise<Record<string, string>> {
  const tables = await s.query<{ s: string; t: string }>(
    "SELECT table_schema AS s, table_name AS t FROM information_schema.tables WHERE table_type='BASE TABLE' AND table_schema IN (?) ORDER BY 1, 2",
    [schemas],
  );
  const out: Record<string, string> = {};
  for (const { s: db, t } of tables) {
    const [row] = await s.query<Record<string, string>>(`SHOW CREATE TABLE \`${db}\`.\`${t}\``);
    out[`${db}.${t}`] = (row?.["Create Table"] ?? "").replace(/ AUTO_INCREMENT=\d+/, "");
  }
  return out;
}

/** CHECKSUM TABLE of every table, but types.gen by its rows: MariaDB's checksum of a table with a generated column depends on how its rows were written, not only on what they hold. */
async function checksumsOf(s: MariaDb, schemas: string[]): Promise<Record<string, string>> {
  const out = await tableChecksums(s, schemas);
  if ("types.gen" in out) {
    const [r] = await s.query<{ d: string | number }>("SELECT CONCAT(COUNT(*), ':', SUM(CRC32(CONCAT_WS(':', id, a, twice)))) AS d FROM types.gen");
    out["types.gen"] = String(r?.d);
  }
  return out;
}

async function manifestOf(name: string): Promise<{ method: string; details: Record<string, unknown>; replication?: { gtid?: string } }> {
  return JSON.parse(await readFile(path.join(repoDir, "default", name, "manifest.json"), "utf8")) as { method: string; details: Record<string, unknown> };
}

beforeAll(async () => {
  master = await newServer({ binlog: true, serverId: 1 });
  await seedShop(master, { rows: 2000 });
  await master.query("CREATE DATABASE pair");
  await master.query("CREATE TABLE pair.a (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB");
  await master.query("CREATE TABLE pair.b (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB");
  await master.query("CREATE DATABASE bulk");
  // Large enough to be cut into key ranges (more than a thread's share of the whole).
  await master.query("CREATE TABLE bulk.big (id BIGINT PRIMARY KEY, pad VARCHAR(200), n DOUBLE, KEY n (n), KEY pad (pad(12), n DESC)) ENGINE=InnoDB");
  await master.query("INSERT INTO bulk.big SELECT seq, REPEAT(MD5(seq), 6), seq / 7 FROM bulk.seq_1_to_120000");
  await master.query("CREATE TABLE bulk.nokey (v VARCHAR(20)) ENGINE=InnoDB");
  await master.query("INSERT INTO bulk.nokey SELECT CONCAT('row ', seq) FROM bulk.seq_1_to_500");
  await master.query("CREATE DATABASE empty_db");
  // Keys a restore builds after the rows, and keys it must leave in place.
  await master.query("CREATE DATABASE keyed");
  await master.query(
    `CREATE TABLE keyed.many (id INT PRIMARY KEY, a INT NOT NULL, b VARCHAR(40) NOT NULL, c TEXT, g POINT NOT NULL,
       UNIQUE KEY b (b), SPATIAL KEY g (g), KEY a_b (a DESC, b(10)) COMMENT 'two, parts', KEY ign (a) IGNORED, FULLTEXT KEY ft (c)) ENGINE=InnoDB`,
  );
  await master.query("INSERT INTO keyed.many SELECT seq, seq % 97, CONCAT('b', seq), REPEAT('word ', seq % 9), POINT(seq, seq) FROM keyed.seq_1_to_3000");
  await master.query("CREATE TABLE keyed.nopk (a INT NOT NULL, b INT NOT NULL, UNIQUE KEY a (a), KEY b (b)) ENGINE=InnoDB");
  await master.query("INSERT INTO keyed.nopk SELECT seq, seq % 13 FROM keyed.seq_1_to_2000");
  await master.query("CREATE TABLE keyed.parent (id INT PRIMARY KEY, code INT NOT NULL, KEY code (code)) ENGINE=InnoDB");
  await master.query("CREATE TABLE keyed.child (id INT PRIMARY KEY, parent INT NOT NULL, n INT, KEY n (n), CONSTRAINT fk FOREIGN KEY (parent) REFERENCES keyed.parent (id)) ENGINE=InnoDB");
  await master.query("INSERT INTO keyed.parent SELECT seq, seq * 2 FROM keyed.seq_1_to_300");
  await master.query("INSERT INTO keyed.child SELECT seq, 1 + seq % 300, seq % 7 FROM keyed.seq_1_to_900");
  // Every kind of column value a LOAD DATA of the dump's rows must read as the INSERT would (rows.ts),
  // and tables it must leave to the INSERTs (a BIT column, a generated column, an invisible column).
  await master.query("CREATE DATABASE types");
  await master.query(
    `CREATE TABLE types.every (id INT PRIMARY KEY, b BLOB, vb VARBINARY(64), bn BINARY(4), j JSON, d DATETIME(6), ts TIMESTAMP(3) NULL,
       e ENUM('a','b'), f FLOAT, dbl DOUBLE, dec_ DECIMAL(30,10), u UUID, st SET('x','y'), l1 TEXT CHARACTER SET latin1, u8 VARCHAR(64),
       tm TIME(2), yr YEAR, ip INET6, big BIGINT UNSIGNED, KEY u8 (u8)) ENGINE=InnoDB`,
  );
  const tricky = ["it's \"q\" \\ \0 \x1a \r\n;\n),\n(", "a\tb", "NULL", "\\N", "');\n", "ünïcødé 🐬", "),(", ";"];
  await master.query(
    `INSERT INTO types.every VALUES
       (1, '', '', '', '{"a":1}', '2020-01-01 00:00:00.123456', '2021-02-03 04:05:06.789', 'b', 0.1, 1e-300, -12345678901234567890.0123456789,
        '73d83579-ed35-11f1-b4e6-02fc00000001', 'x,y', ?, ?, '-838:59:59.99', 2155, '::1', 18446744073709551615),
       (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
       (3, 0x00ff0a0d275c2c28295c4e3b, ?, 'ab', '[]', '0000-00-00', '1970-01-02', 'a', -3.4e38, -0.0, 0, NULL, '', ?, ?, '00:00:00', 0, '::ffff:10.0.0.1', 0),
       (4, 'NULL', ?, 'c', '"x"', '2026-12-01 03:15:25', '2038-01-19 03:14:07', 'a', 1, 2.5e-7, 1, NULL, 'y', ?, ?, '12:34:56', 1901, 'fe80::1', 1),
       (5, 0x3b0a, 0x29, 0x2c, '{"k":"),\\\\n("}', NULL, NULL, 'b', 0, 0, 0.5, NULL, 'x', ?, ?, NULL, NULL, NULL, 42)`,
    ["café", tricky[5], tricky[1], tricky[2], tricky[3], tricky[0], "x\\Ny", tricky[0], tricky[6], tricky[4]],
  );
  await master.query("INSERT INTO types.every (id, u8, b) SELECT 10 + seq, CONCAT('row\t', seq, '\n;'), UNHEX(MD5(seq)) FROM types.seq_1_to_5000");
  await master.query("CREATE TABLE types.bits (id INT PRIMARY KEY, f BIT(10), n INT) ENGINE=InnoDB");
  await master.query("INSERT INTO types.bits SELECT seq, seq % 1024, seq FROM types.seq_1_to_300");
  await master.query("CREATE TABLE types.gen (id INT PRIMARY KEY, a INT, twice INT AS (a * 2) PERSISTENT) ENGINE=InnoDB");
  await master.query("INSERT INTO types.gen (id, a) SELECT seq, seq FROM types.seq_1_to_300");
  await master.query("CREATE TABLE types.hidden (id INT PRIMARY KEY, a INT, secret VARCHAR(10) INVISIBLE DEFAULT 'def') ENGINE=InnoDB");
  await master.query("INSERT INTO types.hidden (id, a, secret) SELECT seq, seq, CONCAT('s', seq) FROM types.seq_1_to_300");
  await master.query("ANALYZE TABLE bulk.big, bulk.nokey, shop.customers");
  await master.query("CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'");
  await master.query("GRANT REPLICATION SLAVE, REPLICATION CLIENT, BINLOG MONITOR ON *.* TO 'repl'@'%'");
  repoDir = await mkdtemp(path.join(tmpdir(), "replicator-parallel-"));
  repo = `file://${repoDir}`;
}, 180_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
});

describe("mysqldump_parallel", () => {
  let name = "";

  it("backs up with several processes from one snapshot while writes go on: pairs written in one transaction are never split", async () => {
    // A writer that commits one row into pair.a and one into pair.b per transaction, without pause.
    const state = { writing: true };
    let written = 0;
    const writer = (async () => {
      while (state.writing) {
        await master.query("BEGIN NOT ATOMIC START TRANSACTION; INSERT INTO pair.a (v) VALUES (1); INSERT INTO pair.b (v) VALUES (1); COMMIT; END");
        written++;
      }
    })();
    let b;
    try {
      await new Promise((r) => setTimeout(r, 300));
      b = await runCli(["backup", "--source", master.url, "--repository", repo, "--method", "mysqldump_parallel", "--threads", "4", "--json"]);
    } finally {
      state.writing = false;
      await writer;
    }
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    name = b.json!.name as string;
    expect(name).toContain("mysqldump_parallel");
    expect(written).toBeGreaterThan(0);
    const m = await manifestOf(name);
    expect(m.method).toBe("mysqldump_parallel");
    expect(m.details.format).toBe("parallel/1");
    expect(m.details.processes).toBeGreaterThanOrEqual(4);
    expect(m.details.chunkedTables).toBeGreaterThanOrEqual(1);
    expect(m.replication?.gtid).toMatch(/^0-1-\d+$/);
    // One stored object, readable with the stock zstd tool.
    expect((await readdir(path.join(repoDir, "default", name))).filter((f) => f.startsWith("data."))).toEqual(["data.pdump.zst"]);

    const fresh = await newServer({ binlog: true, serverId: 11 });
    const r = await runCli(["restore", "--target", fresh.url, "--repository", repo, "--backup", name, "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    // The snapshot is one point in time: every pair is whole.
    expect(await count(fresh, "pair.a")).toBe(await count(fresh, "pair.b"));
    expect(await count(fresh, "bulk.big")).toBe(120000);
    expect(await count(fresh, "bulk.nokey")).toBe(500);
    const [db] = await fresh.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = 'empty_db'");
    expect(Number(db?.n)).toBe(1);
    for (const s of ["shop", "app", "bulk"]) {
      expect(await definitions(fresh, s)).toEqual(await definitions(master, s));
    }
    expect(await routines(fresh, "shop")).toEqual(await routines(master, "shop"));
    // Tables the writer did not touch are equal to the master's, checksum for checksum.
    expect(await checksumsOf(fresh, ["shop", "app", "bulk", "keyed", "types"])).toEqual(await checksumsOf(master, ["shop", "app", "bulk", "keyed", "types"]));
    // Every table as the master defines it: the keys built after the rows are the same keys, in the same order.
    expect(await tableDefinitions(fresh, SCHEMAS)).toEqual(await tableDefinitions(master, SCHEMAS));
    // The load did not go into the new server's own binlog.
    const [g] = await fresh.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(g?.pos ?? "").toBe("");
  }, 240_000);

  it("seeds a replica that replicates from the backup's position with every checksum equal to the master's", async () => {
    expect(name).not.toBe("");
    await master.query("INSERT INTO pair.a (v) VALUES (2)");
    const fresh = await newServer({ binlog: true, serverId: 12 });
    const r = await runCli(["restore", "--target", fresh.url, "--repository", repo, "--backup", name, "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"], replEnv);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.replicating).toBe(true);
    await waitCaughtUp(master, fresh);
    expect(await checksumsOf(fresh, SCHEMAS)).toEqual(await checksumsOf(master, SCHEMAS));
    const [st] = await fresh.query<{ Slave_SQL_Running: string; Last_SQL_Error: string }>("SHOW SLAVE STATUS");
    expect(st?.Last_SQL_Error).toBe("");
    expect(st?.Slave_SQL_Running).toBe("Yes");
  }, 240_000);

  it("loads rows by LOAD DATA where every column allows it and as INSERTs elsewhere; with loadData: false or local_infile OFF all as INSERTs: the same rows", async () => {
    expect(name).not.toBe("");
    const loads = async (s: MariaDb): Promise<number> => {
      const [row] = await s.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Com_load'");
      return Number(row?.Value ?? NaN);
    };
    const SETS = ["shop", "bulk", "keyed", "types"];
    const fresh = await newServer({ serverId: 16 });
    const before = await loads(fresh);
    const r = await runCli(["restore", "--target", fresh.url, "--repository", repo, "--backup", name, "--log-level", "info"]);
    expect(r.exitCode).toBe(0);
    // At least one LOAD DATA per loadable table (types.every, bulk.big's ranges, ...); not one per table of the backup (types.bits, .gen, .hidden are INSERTs).
    const loaded = (await loads(fresh)) - before;
    expect(loaded).toBeGreaterThanOrEqual(3);
    const info = r.stderr.split("\n").filter((l) => l.includes("rows load by LOAD DATA")).map((l) => JSON.parse(l) as { tables: number; of: number });
    expect(info).toHaveLength(1);
    expect(info[0]!.tables).toBeLessThanOrEqual(info[0]!.of - 3);
    expect(await checksumsOf(fresh, SETS)).toEqual(await checksumsOf(master, SETS));
    const [hidden] = await fresh.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM types.hidden WHERE secret = CONCAT('s', id)");
    expect(Number(hidden?.n)).toBe(300);

    const dir = await mkdtemp(path.join(tmpdir(), "replicator-load-"));
    await writeFile(path.join(dir, "replicator.yaml"), "methodOptions:\n  loadData: false\n");
    const inserts = await newServer({ serverId: 17 });
    const before2 = await loads(inserts);
    const k = await runCli(["restore", "--target", inserts.url, "--repository", repo, "--backup", name], {}, { cwd: dir });
    expect(k.exitCode).toBe(0);
    expect((await loads(inserts)) - before2).toBe(0);
    expect(await checksumsOf(inserts, SETS)).toEqual(await checksumsOf(master, SETS));

    const off = await newServer({ serverId: 18 });
    await off.query("SET GLOBAL local_infile = OFF");
    const before3 = await loads(off);
    const o = await runCli(["restore", "--target", off.url, "--repository", repo, "--backup", name]);
    expect(o.exitCode).toBe(0);
    expect(o.stderr).toMatch(/local_infile is OFF on the target: the rows load as INSERT statements.*SET GLOBAL local_infile=ON/);
    expect((await loads(off)) - before3).toBe(0);
    expect(await checksumsOf(off, SETS)).toEqual(await checksumsOf(master, SETS));
  }, 240_000);

  it("builds secondary keys after the rows where that is safe, and with the rows when methodOptions.deferKeys is false: the tables come out the same", async () => {
    expect(name).not.toBe("");
    const logLines = (stderr: string): { msg?: string; table?: string; tables?: number }[] =>
      stderr.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { msg?: string; table?: string });
    const fresh = await newServer({ serverId: 13 });
    const r = await runCli(["restore", "--target", fresh.url, "--repository", repo, "--backup", name, "--log-level", "info"]);
    expect(r.exitCode).toBe(0);
    const added = logLines(r.stderr).filter((l) => l.msg === "secondary keys added back").map((l) => l.table ?? "");
    // The chunked table and the keyed tables; not a table with a foreign key nor one a foreign key references.
    expect(added).toEqual(expect.arrayContaining(["bulk.big", "keyed.many", "keyed.nopk"]));
    expect(added).not.toContain("keyed.parent");
    expect(added).not.toContain("keyed.child");
    expect(new Set(added).size).toBe(added.length);
    expect(await tableDefinitions(fresh, ["shop", "app", "bulk", "keyed"])).toEqual(await tableDefinitions(master, ["shop", "app", "bulk", "keyed"]));
    expect(await checksumsOf(fresh, ["shop", "app", "bulk", "keyed"])).toEqual(await checksumsOf(master, ["shop", "app", "bulk", "keyed"]));
    // Nothing of the rebuild went into the new server's binlog either.
    const [g] = await fresh.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(g?.pos ?? "").toBe("");

    const dir = await mkdtemp(path.join(tmpdir(), "replicator-keys-"));
    await writeFile(path.join(dir, "replicator.yaml"), "methodOptions:\n  deferKeys: false\n");
    const withRows = await newServer({ serverId: 14 });
    const k = await runCli(["restore", "--target", withRows.url, "--repository", repo, "--backup", name, "--log-level", "info"], {}, { cwd: dir });
    expect(k.exitCode).toBe(0);
    expect(logLines(k.stderr).filter((l) => /secondary key/.test(l.msg ?? ""))).toEqual([]);
    expect(await tableDefinitions(withRows, ["shop", "app", "bulk", "keyed"])).toEqual(await tableDefinitions(master, ["shop", "app", "bulk", "keyed"]));
    expect(await checksumsOf(withRows, ["bulk", "keyed"])).toEqual(await checksumsOf(master, ["bulk", "keyed"]));

    // A restore user the target does not let ALTER tables: the keys load with the rows, one warning says why and what to grant.
    const noAlter = await newServer({ serverId: 15 });
    await noAlter.query("CREATE USER 'loader'@'%' IDENTIFIED BY 'loadpw'");
    await noAlter.query("GRANT ALL ON *.* TO 'loader'@'%'");
    await noAlter.query("REVOKE ALTER ON *.* FROM 'loader'@'%'");
    const n = await runCli(["restore", "--target", `mysql://loader@127.0.0.1:${noAlter.port}`, "--repository", repo, "--backup", name], { REPLICATOR_DB_PASSWORD: "loadpw" });
    expect(n.exitCode).toBe(0);
    const warned = logLines(n.stderr).filter((l) => /may not ALTER/.test(l.msg ?? ""));
    expect(warned).toHaveLength(1);
    expect(JSON.stringify(warned[0])).toContain("ALTER command denied");
    expect(n.stderr).not.toContain("loadpw");
    expect(await tableDefinitions(noAlter, ["shop", "app", "bulk", "keyed"])).toEqual(await tableDefinitions(master, ["shop", "app", "bulk", "keyed"]));
    expect(await checksumsOf(noAlter, ["bulk", "keyed"])).toEqual(await checksumsOf(master, ["bulk", "keyed"]));

    await writeFile(path.join(dir, "replicator.yaml"), "methodOptions:\n  deferKeys: later\n");
    const bad = await runCli(["restore", "--target", withRows.url, "--repository", repo, "--backup", name], {}, { cwd: dir });
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr.trim()).toBe('replicator restore: deferKeys must be true or false (got "later")');
  }, 240_000);

  it("fails with the server's own reason when a table's keys cannot be added back after its rows, marks the target partial, and a good backup then redoes it", async () => {
    // A backup whose rows do not fit its keys: its schema says UNIQUE where the source's rows repeat
    // (a dump wrapper rewrites the key), so adding the key back after the rows must fail.
    const src = await newServer({ binlog: true, serverId: 21 });
    await src.query("CREATE DATABASE dup");
    await src.query("CREATE TABLE dup.t (id INT PRIMARY KEY, v INT NOT NULL, KEY v (v)) ENGINE=InnoDB");
    await src.query("INSERT INTO dup.t SELECT seq, seq % 10 FROM dup.seq_1_to_1000");
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-dupkey-"));
    const wrapper = path.join(dir, "dump-unique");
    await writeFile(wrapper, ["#!/bin/bash", "set -o pipefail", String.raw`mariadb-dump "$@" | sed 's/^  KEY \(.v. (.v.)\)/  UNIQUE KEY \1/'`, ""].join("\n"));
    await chmod(wrapper, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  dumpCommand: ${wrapper}\n`);
    await mkdir(path.join(dir, "repo"));
    const dupRepo = `file://${dir}/repo`;
    const b = await runCli(["backup", "--source", src.url, "--repository", dupRepo, "--method", "mysqldump_parallel", "--threads", "2", "--json"], {}, { cwd: dir });
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    const target = await newServer({ serverId: 22 });
    const r = await runCli(["restore", "--target", target.url, "--repository", dupRepo]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/^replicator restore: restore failed midway and target .* is now partial: adding the secondary keys of `dup`\.`t` back after its rows failed: Duplicate entry '\d+' for key 'v'; .*run the same restore again to redo it/);
    // The rows are there, the key is not: the target says it is partial, and a restore of a good backup redoes it.
    const good = await runCli(["backup", "--source", src.url, "--repository", dupRepo, "--method", "mysqldump_parallel", "--threads", "2", "--json"]);
    expect(good.exitCode).toBe(0);
    const redo = await runCli(["restore", "--target", target.url, "--repository", dupRepo]);
    expect(redo.stderr).toBe("");
    expect(redo.exitCode).toBe(0);
    expect(await tableDefinitions(target, ["dup"])).toEqual(await tableDefinitions(src, ["dup"]));
    expect(await checksumsOf(target, ["dup"])).toEqual(await checksumsOf(src, ["dup"]));
  }, 240_000);

  it("restores one table alone into a server with other data, leaving the rest untouched", async () => {
    const other = await newServer({ serverId: 13 });
    await other.query("CREATE DATABASE shop");
    await other.query("CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(10))");
    await other.query("INSERT INTO shop.orders VALUES (1, 'mine')");
    await other.query("CREATE TABLE shop.customers (id INT PRIMARY KEY)");
    await other.query("INSERT INTO shop.customers VALUES (424242)");
    const r = await runCli(["restore", "--target", other.url, "--repository", repo, "--backup", name, "--tables", "shop.customers", "--force", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect((await checksumsOf(other, ["shop"]))["shop.customers"]).toBe((await checksumsOf(master, ["shop"]))["shop.customers"]);
    expect(await other.query("SELECT id, note FROM shop.orders")).toEqual([{ id: 1, note: "mine" }]);
    const [dbs] = await other.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name IN ('app', 'bulk', 'pair')");
    expect(Number(dbs?.n)).toBe(0);
  }, 120_000);

  it("restores one database alone; a table that is not in the backup is named", async () => {
    const other = await newServer({ serverId: 14 });
    const r = await runCli(["restore", "--target", other.url, "--repository", repo, "--backup", name, "--databases", "app", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(await checksumsOf(other, ["app"])).toEqual(await checksumsOf(master, ["app"]));
    const [dbs] = await other.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name IN ('shop', 'bulk', 'pair')");
    expect(Number(dbs?.n)).toBe(0);

    const bad = await runCli(["restore", "--target", other.url, "--repository", repo, "--backup", name, "--tables", "shop.nope", "--force"]);
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr).toContain("tables not in backup");
    expect(bad.stderr).toContain("shop.nope");
  }, 120_000);

  it("refuses --tables for a backup whose single stream cannot be restored in part, before touching the target", async () => {
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--databases", "app", "--json"]);
    expect(b.exitCode).toBe(0);
    const other = await newServer({ serverId: 15 });
    const r = await runCli(["restore", "--target", other.url, "--repository", repo, "--backup", b.json!.name as string, "--tables", "app.settings"]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain("can only be restored whole");
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    const [dbs] = await other.query<{ n: number | string }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = 'app'");
    expect(Number(dbs?.n)).toBe(0);
  }, 120_000);

  it("backs up a slave: the master's coordinates, and the slave replicating afterwards", async () => {
    const slave = await newServer({ binlog: true, serverId: 16, args: ["--log-slave-updates", "--read-only"] });
    const seed = await runCli(["restore", "--target", slave.url, "--repository", repo, "--backup", name, "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"], replEnv);
    expect(seed.exitCode).toBe(0);
    await waitCaughtUp(master, slave);
    const b = await runCli(["backup", "--source", slave.url, "--repository", repo, "--cluster", "fromslave", "--method", "mysqldump_parallel", "--json"]);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    expect((b.json!.replication as { role: string; sourceServerId: number }).sourceServerId).toBe(1);
    const [st] = await slave.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
    expect(st?.Slave_SQL_Running).toBe("Yes");
    expect(st?.Slave_IO_Running).toBe("Yes");
    await master.query("INSERT INTO pair.b (v) VALUES (3)");
    await waitCaughtUp(master, slave);
    expect(await checksumsOf(slave, SCHEMAS)).toEqual(await checksumsOf(master, SCHEMAS));
  }, 240_000);
});

