// The conformance kit's MySQL/MariaDB data: two databases (one with a "-" in
// its name) holding InnoDB and MyISAM tables of most column types (exact and
// approximate numbers, dates with fractions, unicode text, binary blobs with
// every byte value, JSON, ENUM/SET/BIT, NULLs), 20 000 bulk rows, a view, a
// function, a procedure, a trigger and an event. A copy is compared object by
// object: CHECKSUM TABLE per table, and a digest of each view's rows and each
// routine's, trigger's and event's definition.
import { createHash } from "node:crypto";
import mysql from "mysql2/promise";
import type { Fixture, SandboxServer } from "./types.js";

export const FIXTURE_SCHEMAS = ["kit_data", "kit-more"];
const AFTER_TOKEN = "written-after-the-backup";

async function conn(server: SandboxServer): Promise<mysql.Connection> {
  const e = server.endpoint;
  return mysql.createConnection({
    host: e.host,
    port: e.port,
    user: e.user,
    password: e.password ?? "",
    multipleStatements: false,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    charset: "utf8mb4_general_ci",
    connectTimeout: 10_000,
  });
}

async function withConn<T>(server: SandboxServer, fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  const c = await conn(server);
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** A small deterministic generator, so every run seeds the same data. */
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const WORDS = ["Zürich", "東京", "Ελληνικά", "naïve café", "emoji 🦭🚀", "O'Reilly", 'quote "x"', "back\\slash", "tab\there", "new\nline", "NULL", "", "ünïcödé ✓"];

function bytes(n: number, rnd: () => number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i < 256 ? i : Math.floor(rnd() * 256);
  return b;
}

async function seed(server: SandboxServer): Promise<void> {
  await withConn(server, async (c) => {
    const rnd = lcg(42);
    const ddl = [
      "CREATE DATABASE kit_data CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
      "CREATE DATABASE `kit-more` CHARACTER SET utf8mb4",
      `CREATE TABLE kit_data.kinds (
         id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
         tiny TINYINT, small SMALLINT UNSIGNED, big BIGINT UNSIGNED,
         price DECIMAL(20,6), ratio DOUBLE, half FLOAT,
         d DATE, dt DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL, tm TIME(2), yr YEAR,
         code CHAR(8), label VARCHAR(200), body MEDIUMTEXT,
         bin VARBINARY(64), data MEDIUMBLOB,
         doc JSON, color ENUM('red','green','blue'), flags SET('a','b','c'), bits BIT(8),
         note VARCHAR(50) NULL,
         KEY label_idx (label(20))
       ) ENGINE=InnoDB`,
      `CREATE TABLE kit_data.legacy (
         id INT NOT NULL PRIMARY KEY, name VARCHAR(100) CHARACTER SET latin1, payload BLOB, created DATETIME
       ) ENGINE=MyISAM`,
      "CREATE TABLE kit_data.bulk (id INT NOT NULL PRIMARY KEY, grp INT NOT NULL, payload VARCHAR(100), KEY grp_idx (grp)) ENGINE=InnoDB",
      "CREATE TABLE kit_data.after_backup (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, token VARCHAR(64) NOT NULL, UNIQUE KEY token_uq (token)) ENGINE=InnoDB",
      "CREATE TABLE `kit-more`.notes (id INT NOT NULL PRIMARY KEY, txt TEXT, at DATETIME(3)) ENGINE=InnoDB",
      "CREATE VIEW kit_data.kinds_by_color AS SELECT color, COUNT(*) AS n, SUM(price) AS total FROM kit_data.kinds GROUP BY color",
      "CREATE FUNCTION kit_data.kit_tax(p DECIMAL(20,6)) RETURNS DECIMAL(20,6) DETERMINISTIC RETURN p * 1.19",
      "CREATE PROCEDURE kit_data.kit_count_bulk(OUT n INT) READS SQL DATA SELECT COUNT(*) INTO n FROM kit_data.bulk",
      "CREATE TRIGGER kit_data.legacy_upper BEFORE INSERT ON kit_data.legacy FOR EACH ROW SET NEW.name = UPPER(NEW.name)",
      "CREATE EVENT kit_data.kit_nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM kit_data.after_backup WHERE id < 0",
    ];
    for (const s of ddl) await c.query(s);

    const colors = ["red", "green", "blue", null];
    const sets = ["", "a", "a,c", "a,b,c"];
    const kinds: unknown[][] = [];
    for (let i = 0; i < 300; i++) {
      const word = WORDS[i % WORDS.length] ?? "";
      kinds.push([
        Math.floor(rnd() * 256) - 128,
        Math.floor(rnd() * 65536),
        (BigInt(Math.floor(rnd() * 2 ** 32)) * 4294967296n + BigInt(i)).toString(),
        (rnd() * 1e9).toFixed(6),
        rnd() * 1e6 - 5e5,
        [0.5, 1.25, -2.75, 1024][i % 4],
        `20${String(10 + (i % 20)).padStart(2, "0")}-${String(1 + (i % 12)).padStart(2, "0")}-${String(1 + (i % 28)).padStart(2, "0")}`,
        `2026-11-24 10:${String(i % 60).padStart(2, "0")}:05.${String(i * 7919 % 1000000).padStart(6, "0")}`,
        i % 5 === 0 ? null : `2026-01-02 03:04:${String(i % 60).padStart(2, "0")}.123`,
        `${String(i % 24).padStart(2, "0")}:30:15.25`,
        1990 + (i % 50),
        `c${i}`,
        `${word} #${i}`,
        i % 7 === 0 ? null : `${word} `.repeat(1 + (i % 40)),
        bytes(1 + (i % 64), rnd),
        i === 7 ? bytes(200_000, rnd) : bytes(256 + (i % 300), rnd),
        JSON.stringify({ i, word, nested: { ok: i % 2 === 0, list: [1, "two", null] } }),
        colors[i % colors.length],
        sets[i % sets.length],
        Buffer.from([i % 256]),
        i % 3 === 0 ? null : "not null",
      ]);
    }
    await c.query(
      "INSERT INTO kit_data.kinds (tiny, small, big, price, ratio, half, d, dt, ts, tm, yr, code, label, body, bin, data, doc, color, flags, bits, note) VALUES ?",
      [kinds],
    );
    const legacy: unknown[][] = [];
    for (let i = 1; i <= 500; i++) legacy.push([i, `name ${i} café`, bytes(10 + (i % 90), rnd), `2020-02-${String(1 + (i % 28)).padStart(2, "0")} 12:00:00`]);
    await c.query("INSERT INTO kit_data.legacy (id, name, payload, created) VALUES ?", [legacy]);
    for (let start = 1; start <= 20_000; start += 2000) {
      const rows: unknown[][] = [];
      for (let i = start; i < start + 2000; i++) rows.push([i, i % 97, createHash("md5").update(String(i)).digest("hex").repeat(2)]);
      await c.query("INSERT INTO kit_data.bulk (id, grp, payload) VALUES ?", [rows]);
    }
    const notes: unknown[][] = [];
    for (let i = 1; i <= 50; i++) notes.push([i, `${WORDS[i % WORDS.length] ?? ""} — note ${i}`, `2026-11-24 00:00:${String(i % 60).padStart(2, "0")}.500`]);
    await c.query("INSERT INTO `kit-more`.notes (id, txt, at) VALUES ?", [notes]);
  });
}

function digest(v: unknown): string {
  return createHash("sha256").update(JSON.stringify(v)).digest("hex").slice(0, 16);
}

async function checksums(server: SandboxServer): Promise<Record<string, string>> {
  return withConn(server, async (c) => {
    const out: Record<string, string> = {};
    const q = async <T>(sql: string, params?: unknown[]): Promise<T[]> => (await c.query(sql, params))[0] as T[];
    const tables = await q<{ s: string; t: string; type: string }>(
      "SELECT table_schema AS s, table_name AS t, table_type AS type FROM information_schema.tables WHERE table_schema IN (?) ORDER BY 1, 2",
      [FIXTURE_SCHEMAS],
    );
    for (const { s, t, type } of tables) {
      const id = `\`${s}\`.\`${t}\``;
      if (type === "VIEW") {
        const rows = await q<Record<string, unknown>>(`SELECT * FROM ${id} ORDER BY 1`);
        out[`view ${s}.${t}`] = digest(rows);
      } else {
        const [row] = await q<{ Checksum: string | number | null }>(`CHECKSUM TABLE ${id}`);
        out[`table ${s}.${t}`] = String(row?.Checksum ?? "none");
      }
    }
    const routines = await q<{ s: string; n: string; type: string; def: string | null }>(
      "SELECT routine_schema AS s, routine_name AS n, routine_type AS type, routine_definition AS def FROM information_schema.routines WHERE routine_schema IN (?) ORDER BY 1, 2",
      [FIXTURE_SCHEMAS],
    );
    for (const r of routines) out[`${r.type.toLowerCase()} ${r.s}.${r.n}`] = digest(r.def);
    const triggers = await q<{ s: string; n: string; def: string }>(
      "SELECT trigger_schema AS s, trigger_name AS n, action_statement AS def FROM information_schema.triggers WHERE trigger_schema IN (?) ORDER BY 1, 2",
      [FIXTURE_SCHEMAS],
    );
    for (const t of triggers) out[`trigger ${t.s}.${t.n}`] = digest(t.def);
    const events = await q<{ s: string; n: string; def: string; status: string }>(
      "SELECT event_schema AS s, event_name AS n, event_definition AS def, status FROM information_schema.events WHERE event_schema IN (?) ORDER BY 1, 2",
      [FIXTURE_SCHEMAS],
    );
    for (const e of events) out[`event ${e.s}.${e.n}`] = digest([e.def, e.status === "SLAVESIDE_DISABLED" ? "DISABLED" : e.status]);
    return out;
  });
}

async function slaveStatus(server: SandboxServer): Promise<Record<string, unknown> | undefined> {
  return withConn(server, async (c) => {
    const [rows] = await c.query("SHOW SLAVE STATUS");
    return (rows as Record<string, unknown>[])[0];
  });
}

export const mysqlFixture: Fixture = {
  seed,
  checksums,
  async writeAfter(server) {
    await withConn(server, async (c) => {
      await c.query("INSERT INTO kit_data.after_backup (token) VALUES (?)", [AFTER_TOKEN]);
    });
  },
  async sawWriteAfter(server) {
    try {
      return await withConn(server, async (c) => {
        const [rows] = await c.query("SELECT COUNT(*) AS n FROM kit_data.after_backup WHERE token = ?", [AFTER_TOKEN]);
        return Number((rows as { n: number | string }[])[0]?.n ?? 0) > 0;
      });
    } catch {
      return false;
    }
  },
  async replicating(server) {
    const s = await slaveStatus(server).catch(() => undefined);
    return s?.Slave_IO_Running === "Yes" && s.Slave_SQL_Running === "Yes";
  },
  async replicationError(server) {
    const s = await slaveStatus(server).catch((err: unknown): Record<string, unknown> => ({ Last_IO_Error: `cannot ask the replica: ${(err as Error).message}` }));
    if (!s) return "replication is not configured on it (SHOW SLAVE STATUS is empty)";
    const errs = [s.Last_IO_Error, s.Last_SQL_Error].filter((e): e is string => typeof e === "string" && e !== "");
    if (errs.length > 0) return errs.join("; ");
    return `Slave_IO_Running=${String(s.Slave_IO_Running)}, Slave_SQL_Running=${String(s.Slave_SQL_Running)}`;
  },
};
