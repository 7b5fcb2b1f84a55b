// The LOAD DATA loader of the parallel restore (src/plugins/mysqldump_parallel/rows.ts)
// on a real MariaDB: mariadb-dump's own output for a table of awkward values,
// cut into pieces of every size from 1 byte up, loads the same rows as the
// mariadb client loads from the whole dump; a row the server refuses fails
// the load with the server's reason; a killed loader stops.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect } from "../../src/db/connection.js";
import type { Endpoint } from "../../src/db/endpoint.js";
import { loadableTables, RowsLoader, type LoadableTable } from "../../src/plugins/mysqldump_parallel/rows.js";
import { checksums, startMariaDb, type MariaDb } from "../harness/mariadb.js";

const run = promisify(execFile);
let server: MariaDb;
let dump = Buffer.alloc(0);
let table: LoadableTable;

const endpoint = (): Endpoint => ({ engine: "mysql", host: "127.0.0.1", port: server.port, user: "root", password: undefined });

/** Feed `bytes` to a new loader in pieces of `size` (cycling through `sizes` when given), and wait for it. */
async function load(bytes: Buffer, sizes: number[]): Promise<void> {
  const conn = await connect(endpoint());
  const loader = new RowsLoader(Promise.resolve(conn), { id: 1, db: "dst" }, [table], new AbortController().signal);
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = sizes[i % sizes.length] ?? 1;
    const piece = bytes.subarray(at, at + n);
    at += n;
    if (!loader.sink.write(piece)) await new Promise<void>((r, j) => { loader.sink.once("drain", r); loader.sink.once("error", j); });
  }
  loader.sink.end();
  await loader.done;
}

beforeAll(async () => {
  server = await startMariaDb({});
  await server.query("CREATE DATABASE src");
  await server.query(
    "CREATE TABLE src.t (id INT PRIMARY KEY, s VARCHAR(80), b VARBINARY(40), n DECIMAL(20,6), d DATETIME(3), j LONGTEXT) ENGINE=InnoDB",
  );
  const awkward = ["it's", "a\tb", "x),\n(y", ";\n", "');\n", "\\N", "NULL", "", "\0\x1a\r", "ünï 🐬", "),(", ";"];
  await server.query(
    `INSERT INTO src.t SELECT seq, ELT(1 + seq % ?, ${awkward.map(() => "?").join(", ")}), IF(seq % 5 = 0, NULL, UNHEX(MD5(seq))),
       IF(seq % 7 = 0, NULL, seq / 3), '2020-02-02 02:02:02.5' + INTERVAL seq SECOND, IF(seq % 3 = 0, 'NULL', REPEAT('word;', seq % 9))
       FROM src.seq_1_to_4000`,
    [awkward.length, ...awkward],
  );
  // The dump exactly as a data part of the method holds it (rows.ts reads these lines).
  const r = await run("mariadb-dump", [
    "--no-defaults", "--host=127.0.0.1", `--port=${server.port}`, "--user=root", "--protocol=TCP", "--hex-blob", "--quick",
    "--default-character-set=utf8mb4", "--skip-dump-date", "--skip-add-locks", "--skip-lock-tables", "--no-create-info",
    "--skip-triggers", "--skip-disable-keys", "--net-buffer-length=4096", "src", "t",
  ], { encoding: "buffer", maxBuffer: 64 * 1024 * 1024 });
  dump = r.stdout;
  expect(dump.toString("utf8")).toContain("INSERT INTO `t` VALUES\n(1,");
  expect(dump.toString("utf8").match(/^INSERT INTO/gm)?.length).toBeGreaterThan(10);
  await server.query("CREATE DATABASE dst");
  await server.query("CREATE TABLE dst.t LIKE src.t");
  const conn = await connect(endpoint());
  try {
    const found = await loadableTables(conn, [{ db: "dst", table: "t" }]);
    expect(found.off).toBeUndefined();
    table = found.tables.get("dst.t")!;
    expect(table.columns.map((c) => c.binary)).toEqual([false, false, true, false, false, false]);
  } finally {
    await conn.end();
  }
}, 120_000);

afterAll(async () => {
  await server.destroy();
});

describe("RowsLoader", () => {
  it("loads mariadb-dump's rows by LOAD DATA, cut anywhere, into the same rows as the whole dump's INSERTs", async () => {
    const want = (await checksums(server, ["src"]))["src.t"];
    for (const sizes of [[dump.length], [1, 2, 3, 5, 7, 11, 13], [4095, 4096, 4097], [65536]]) {
      await server.query("TRUNCATE TABLE dst.t");
      const [before] = await server.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Com_load'");
      await load(dump, sizes);
      const [after] = await server.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Com_load'");
      // One LOAD DATA for the whole table, however many INSERT statements the dump cut it into.
      expect(Number(after?.Value) - Number(before?.Value)).toBe(1);
      expect((await checksums(server, ["dst"]))["dst.t"]).toBe(want);
    }
  }, 300_000);

  it("runs INSERTs it cannot read as row lines (one statement a line, as other dump versions write them) as they are", async () => {
    const r = await run("mariadb-dump", [
      "--no-defaults", "--host=127.0.0.1", `--port=${server.port}`, "--user=root", "--protocol=TCP", "--hex-blob", "--quick",
      "--default-character-set=utf8mb4", "--skip-dump-date", "--skip-add-locks", "--skip-lock-tables", "--no-create-info",
      "--skip-triggers", "--skip-disable-keys", "--skip-extended-insert", "src", "t",
    ], { encoding: "buffer", maxBuffer: 64 * 1024 * 1024 });
    expect(r.stdout.toString("utf8")).toMatch(/^INSERT INTO `t` VALUES \(1,/m);
    await server.query("TRUNCATE TABLE dst.t");
    const [before] = await server.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Com_load'");
    await load(r.stdout, [4093]);
    const [after] = await server.query<{ Value: string }>("SHOW GLOBAL STATUS LIKE 'Com_load'");
    expect(Number(after?.Value) - Number(before?.Value)).toBe(0);
    expect((await checksums(server, ["dst"]))["dst.t"]).toBe((await checksums(server, ["src"]))["src.t"]);
  }, 120_000);

  it("fails with the server's reason, naming the table, when the server refuses a row", async () => {
    await server.query("TRUNCATE TABLE dst.t");
    await server.query("INSERT INTO dst.t (id) VALUES (2000)");
    await server.query("SET GLOBAL sql_mode = 'STRICT_ALL_TABLES'");
    try {
      // The dump's header sets its own sql_mode; a duplicate key fails in any.
      await expect(load(dump, [65536])).rejects.toThrow(/loading the rows of `dst`\.`t` \(part 1\) by LOAD DATA failed: Duplicate entry '2000' for key 'PRIMARY'/);
    } finally {
      await server.query("SET GLOBAL sql_mode = DEFAULT");
    }
  }, 120_000);

  it("stops when killed, with its connection closed", async () => {
    await server.query("TRUNCATE TABLE dst.t");
    const conn = await connect(endpoint());
    const [me] = await server.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'root'");
    const loader = new RowsLoader(Promise.resolve(conn), { id: 7, db: "dst" }, [table], new AbortController().signal);
    loader.sink.write(dump.subarray(0, dump.indexOf("),\n(3,") + 3));
    await new Promise((r) => setTimeout(r, 200));
    loader.kill();
    await loader.settled;
    expect(await loader.failureUnlessKilled()).toBeUndefined();
    await expect(loader.done).rejects.toThrow(/loading part 7 was stopped/);
    // The loader's connection is gone from the server.
    for (let i = 0; i < 50; i++) {
      const [now] = await server.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'root'");
      if (Number(now?.n) < Number(me?.n)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const [now] = await server.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = 'root'");
    expect(Number(now?.n)).toBeLessThan(Number(me?.n));
  }, 60_000);
});
