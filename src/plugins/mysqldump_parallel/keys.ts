// Secondary indexes built after the rows (as myloader's --innodb-optimize-keys).
//
// Loading rows into a table whose secondary indexes already exist inserts
// every row into each index in key order, a random write per row once the
// index outgrows the buffer pool. Building the index after the rows sorts
// them once (ALTER TABLE ... ADD KEY, InnoDB's merge sort). Measured on one
// 650 MB table with two secondary keys and a 1 GB buffer pool (bench/README.md):
// a single-stream load 112 s with the keys in place, 59 s with them added
// after; two row ranges at once 62 s and 48 s.
//
// So a restore, once the schema is loaded and before the first row, drops
// the secondary keys of each table it will load (instant: the tables are
// empty) and adds them back, with their definitions exactly as SHOW CREATE
// TABLE printed them and in the same order, when all the rows are in and
// before triggers, routines and events. Only what is safe to move:
// InnoDB tables, plain KEY and UNIQUE KEY (the latter only beside a PRIMARY
// KEY, else InnoDB might cluster the table on it), and no table that has a
// foreign key or is referenced by one, is partitioned or system-versioned.
// FULLTEXT, SPATIAL and long unique (USING HASH) keys stay where they are,
// and so does any key before one of them (the order of a table's keys is
// part of its definition).
import type { Logger } from "pino";
import { failed } from "../../lib/errors.js";
import { queryRows, withConn, type Conn } from "../../db/connection.js";
import type { Endpoint } from "../../db/endpoint.js";
import { qualified } from "./plan.js";

export interface DeferredKeys {
  db: string;
  table: string;
  /** The key definitions, as SHOW CREATE TABLE prints them ("KEY `k` (`c`)"), in its order. */
  keys: string[];
}

const KEY_LINE = /^ {2}(UNIQUE )?KEY (`(?:[^`]|``)+`) \(.*\)/;

/** Pure: the secondary keys of `create` (SHOW CREATE TABLE's text) that may be built after the rows; none when the table is not one this is safe for. */
export function deferrableKeys(create: string): string[] {
  const lines = create.split("\n");
  const options = lines[lines.length - 1] ?? "";
  if (!/\bENGINE=InnoDB\b/.test(options)) return [];
  if (/\bPARTITION BY\b|\bWITH SYSTEM VERSIONING\b/.test(options) || lines.some((l) => /^ {2}CONSTRAINT .* FOREIGN KEY /.test(l) || /^ {2}PERIOD FOR /.test(l))) return [];
  const hasPrimary = lines.some((l) => l.startsWith("  PRIMARY KEY "));
  // The keys in the order SHOW CREATE TABLE printed them. Added back, a key goes after
  // every key left in place (but FULLTEXT, which MariaDB always puts last): so only the
  // keys after the last one left in place move, and the table's key order stays its own.
  const keys: string[] = [];
  for (const line of lines) {
    if (!/^ {2}(UNIQUE |FULLTEXT |SPATIAL |VECTOR )?KEY /.test(line) || line.startsWith("  FULLTEXT KEY ")) continue;
    const m = KEY_LINE.exec(line);
    const movable = m !== null && !(m[1] && !hasPrimary) && !/ USING HASH\b/.test(line);
    if (movable) keys.push(line.trim().replace(/,$/, ""));
    else keys.length = 0;
  }
  return keys;
}

/** Pure: a key definition's quoted name ("`k`"). */
export function keyName(definition: string): string {
  const m = /^(?:UNIQUE )?KEY (`(?:[^`]|``)+`)/.exec(definition);
  if (!m?.[1]) throw new Error(`not a key definition: ${definition}`);
  return m[1];
}


/** Pure: the statement that drops `d`'s keys. */
export function dropKeysSql(d: DeferredKeys): string {
  return `ALTER TABLE ${qualified(d)} ${d.keys.map((k) => `DROP KEY ${keyName(k)}`).join(", ")}`;
}

/** Pure: the statement that adds `d`'s keys back (one statement: one pass over the rows for all of them). */
export function addKeysSql(d: DeferredKeys): string {
  return `ALTER TABLE ${qualified(d)} ${d.keys.map((k) => `ADD ${k}`).join(", ")}`;
}

const REFUSED = new Set(["ER_TABLEACCESS_DENIED_ERROR", "ER_DBACCESS_DENIED_ERROR", "ER_SPECIFIC_ACCESS_DENIED_ERROR"]);

/**
 * Drop the deferrable secondary keys of `tables` (empty tables the schema just
 * created) on `c`; return what was dropped, to be added back by addKeysBack.
 * A user the target does not let ALTER a table stops it there: the keys not
 * yet dropped load with the rows, and `refused` says why.
 */
export async function dropDeferrableKeys(c: Conn, tables: { db: string; table: string }[]): Promise<{ deferred: DeferredKeys[]; refused?: string }> {
  if (tables.length === 0) return { deferred: [] };
  const dbs = [...new Set(tables.map((t) => t.db))];
  // A key that backs a foreign key cannot be dropped, whichever side of it the table is on.
  const fk = await queryRows<{ s: string; t: string; rs: string; rt: string }>(
    c,
    `SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, REFERENCED_TABLE_SCHEMA AS rs, REFERENCED_TABLE_NAME AS rt
       FROM information_schema.KEY_COLUMN_USAGE
      WHERE REFERENCED_TABLE_NAME IS NOT NULL AND (TABLE_SCHEMA IN (?) OR REFERENCED_TABLE_SCHEMA IN (?))`,
    [dbs, dbs],
  );
  const tied = new Set(fk.flatMap((r) => [`${r.s}.${r.t}`, `${r.rs}.${r.rt}`]));
  const out: DeferredKeys[] = [];
  for (const t of tables) {
    if (tied.has(`${t.db}.${t.table}`)) continue;
    const [row] = await queryRows<Record<string, string>>(c, `SHOW CREATE TABLE ${qualified(t)}`);
    const create = row?.["Create Table"];
    if (typeof create !== "string") continue;
    const keys = deferrableKeys(create);
    if (keys.length === 0) continue;
    const d = { db: t.db, table: t.table, keys };
    try {
      await c.query(dropKeysSql(d));
    } catch (err) {
      const x = err as { code?: string; sqlMessage?: string };
      if (!REFUSED.has(x.code ?? "")) throw err;
      return { deferred: out, refused: x.sqlMessage ?? String(err) };
    }
    out.push(d);
  }
  return { deferred: out };
}

/**
 * Add `deferred`'s keys back, over up to `threads` connections at once, the
 * largest table first. Each connection keeps its statements out of the
 * target's binlog, as the loading clients do. The first failure stops the
 * others taking more tables and is what this rejects with.
 */
export async function addKeysBack(target: Endpoint, deferred: DeferredKeys[], threads: number, log: Logger, signal: AbortSignal): Promise<void> {
  if (deferred.length === 0) return;
  const started = performance.now();
  const sizes = await withConn(target, "read the loaded tables' sizes", (c) =>
    queryRows<{ s: string; t: string; n: string | number }>(
      c,
      "SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, DATA_LENGTH AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (?)",
      [[...new Set(deferred.map((d) => d.db))]],
    ),
  );
  const size = new Map(sizes.map((r) => [`${r.s}.${r.t}`, Number(r.n)]));
  const queue = [...deferred].sort((a, b) => (size.get(`${b.db}.${b.table}`) ?? 0) - (size.get(`${a.db}.${a.table}`) ?? 0));
  let stop = false;
  const worker = (): Promise<void> =>
    withConn(target, "add secondary keys back", async (c) => {
      const cancel = (): void => {
        c.destroy();
      };
      signal.addEventListener("abort", cancel, { once: true });
      try {
        await c.query("SET SESSION sql_log_bin=0");
        for (let d = queue.shift(); d && !stop && !signal.aborted; d = queue.shift()) {
          const t0 = performance.now();
          try {
            await c.query(addKeysSql(d));
          } catch (err) {
            stop = true;
            const why = (err as { sqlMessage?: string; message?: string }).sqlMessage ?? (err as Error).message;
            throw failed("LoadFailed", `adding the secondary keys of ${qualified(d)} back after its rows failed: ${why}`, { cause: err });
          }
          log.info({ table: `${d.db}.${d.table}`, keys: d.keys.length, seconds: Math.round(performance.now() - t0) / 1000 }, "secondary keys added back");
        }
      } finally {
        signal.removeEventListener("abort", cancel);
      }
    });
  await Promise.all(Array.from({ length: Math.max(1, Math.min(threads, queue.length)) }, worker));
  log.info({ tables: deferred.length, seconds: Math.round(performance.now() - started) / 1000 }, "every deferred secondary key added back");
}
