// Rows loaded by LOAD DATA rather than parsed as INSERT statements.
//
// A table's rows in a data part are mariadb-dump's extended INSERTs, one row
// a line: "INSERT INTO `t` VALUES" on its own line, then "(1,'a',NULL),"
// lines, the last ending ");". Parsing those statements is most of what the
// server does in a logical restore. The same lines are almost a LOAD DATA
// file: fields split by ',', strings enclosed in '\'' with backslash escapes
// (mariadb-dump escapes \0 \n \r \\ \' \" \Z, which LOAD DATA reads back
// the same), an unquoted NULL read as NULL, each row starting with '(' and
// ending with "),\n". So the loader passes the row lines through unchanged,
// bar the ";" that ends each statement, as one LOAD DATA LOCAL INFILE per
// table and part over the agent's own connection, and runs every other
// statement of the part (the header's SETs, the footer's) as it is.
// Measured on one 378 MB table (1.5 M rows, primary key only), loaded by the
// mariadb client: the server spent 13.4-14.0 CPU-s on the INSERTs (one
// transaction each, as the pipe loads) and 27.5 on the same rows in one
// transaction with unique checks off (MariaDB's bulk path), 8.8 on LOAD DATA.
//
// Only where it reads the same values: a table whose columns all have a type
// whose dump literal LOAD DATA parses as INSERT does (numbers, strings,
// temporal types, enum/set, uuid/inet; binary types, which the dump writes as
// 0x… with --hex-blob, through UNHEX), with no generated or invisible column,
// not system-versioned; a part whose preamble says SET NAMES utf8mb4 and not
// NO_BACKSLASH_ESCAPES (which would leave newlines raw in strings); and a
// target with local_infile on. Everything else loads as before, through the
// mariadb client.
import { once } from "node:events";
import { PassThrough, Writable } from "node:stream";
import type { Socket } from "node:net";
import { failed } from "../../lib/errors.js";
import { queryRows, type Conn } from "../../db/connection.js";
import { qualified, quoteIdent } from "./plan.js";

/** A table the rows of which can load by LOAD DATA: its columns in order, the binary ones marked. */
export interface LoadableTable {
  db: string;
  table: string;
  columns: { name: string; binary: boolean }[];
}

/** Column types whose dump literal LOAD DATA reads as INSERT does. */
const TEXT_TYPES = new Set([
  "tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "float", "double",
  "char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set",
  "date", "time", "datetime", "timestamp", "year", "uuid", "inet4", "inet6",
]);
/** Written as 0x… (--hex-blob), '' when empty: loaded through UNHEX. */
const BINARY_TYPES = new Set(["binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"]);
/** EXTRA of a column LOAD DATA would not fill as the INSERT does. */
const UNLOADABLE_EXTRA = /GENERATED|VIRTUAL|STORED|PERSISTENT|INVISIBLE|ROW START|ROW END/i;

/** Pure: the loadable tables among `columns` (information_schema.COLUMNS rows, in ORDINAL_POSITION order) of `tables`, less `versioned` ones. */
export function loadable(
  tables: { db: string; table: string }[],
  columns: { s: string; t: string; c: string; type: string; extra: string }[],
  versioned: Set<string>,
): Map<string, LoadableTable> {
  const byTable = new Map<string, { name: string; type: string; extra: string }[]>();
  for (const col of columns) {
    const k = `${col.s}.${col.t}`;
    const list = byTable.get(k) ?? [];
    list.push({ name: col.c, type: col.type.toLowerCase(), extra: col.extra });
    byTable.set(k, list);
  }
  const out = new Map<string, LoadableTable>();
  for (const t of tables) {
    const k = `${t.db}.${t.table}`;
    const cols = byTable.get(k);
    if (!cols || versioned.has(k)) continue;
    if (!cols.every((c) => (TEXT_TYPES.has(c.type) || BINARY_TYPES.has(c.type)) && !UNLOADABLE_EXTRA.test(c.extra))) continue;
    out.set(k, { db: t.db, table: t.table, columns: cols.map((c) => ({ name: c.name, binary: BINARY_TYPES.has(c.type) })) });
  }
  return out;
}

/** The tables of `tables` on the target (their schema loaded) whose rows may load by LOAD DATA; none, and why, when the target refuses LOAD DATA LOCAL. */
export async function loadableTables(c: Conn, tables: { db: string; table: string }[]): Promise<{ tables: Map<string, LoadableTable>; off?: string }> {
  if (tables.length === 0) return { tables: new Map() };
  const [flag] = await queryRows<{ v: number | string }>(c, "SELECT @@GLOBAL.local_infile AS v");
  if (Number(flag?.v) !== 1) return { tables: new Map(), off: "local_infile is OFF on the target" };
  const dbs = [...new Set(tables.map((t) => t.db))];
  const columns = await queryRows<{ s: string; t: string; c: string; type: string; extra: string }>(
    c,
    `SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t, COLUMN_NAME AS c, DATA_TYPE AS type, EXTRA AS extra
       FROM information_schema.COLUMNS WHERE TABLE_SCHEMA IN (?) ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION`,
    [dbs],
  );
  const versioned = await queryRows<{ s: string; t: string }>(
    c,
    "SELECT TABLE_SCHEMA AS s, TABLE_NAME AS t FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (?) AND TABLE_TYPE = 'SYSTEM VERSIONED'",
    [dbs],
  );
  return { tables: loadable(tables, columns, new Set(versioned.map((r) => `${r.s}.${r.t}`))) };
}

/** Pure: the rows a LOAD DATA skipped, from its result's info ("Records: 3  Deleted: 0  Skipped: 1  Warnings: 1"). */
export function skippedRows(info: string): number {
  const m = /Skipped:\s*(\d+)/.exec(info);
  return m ? Number(m[1]) : 0;
}

/** Pure: whether a data part's preamble (mariadb-dump's header) leaves its rows readable by LOAD DATA. */
export function preambleAllows(preamble: string): boolean {
  return /SET NAMES utf8mb4\b/.test(preamble) && !/NO_BACKSLASH_ESCAPES/i.test(preamble);
}

/** Pure: the LOAD DATA statement for `t`'s row lines, as rewritten by RowsLoader. */
export function loadDataSql(t: LoadableTable): string {
  const targets: string[] = [];
  const sets: string[] = [];
  t.columns.forEach((c, i) => {
    if (!c.binary) {
      targets.push(quoteIdent(c.name));
      return;
    }
    targets.push(`@b${i}`);
    sets.push(`${quoteIdent(c.name)} = UNHEX(SUBSTRING(@b${i}, 3))`);
  });
  return (
    `LOAD DATA LOCAL INFILE 'rows' INTO TABLE ${qualified(t)} CHARACTER SET utf8mb4 ` +
    `FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\\'' ESCAPED BY '\\\\' LINES STARTING BY '(' TERMINATED BY '),\\n' ` +
    `(${targets.join(", ")})${sets.length > 0 ? ` SET ${sets.join(", ")}` : ""}`
  );
}

const NL = 0x0a;
const SEMI = 0x3b;
const COMMA_NL = Buffer.from(",\n");
const STATEMENT_END = Buffer.from(";\n");
/** Largest piece of rows handed to the connection at once (one protocol packet each). */
const PIECE = 1024 * 1024;
/** Bytes the connection's socket may hold unsent before the loader waits for it. */
const SOCKET_HIGH = 8 * 1024 * 1024;
/** Longest statement line kept in memory (the longest a one-line INSERT of another dump version may be). */
const MAX_LINE = 1024 * 1024 * 1024;

function sqlMessage(err: unknown): string {
  const x = err as { sqlMessage?: string; message?: string };
  return x.sqlMessage ?? x.message ?? String(err);
}

/**
 * The sink of one data part's bytes (the part's SQL, as the mariadb client
 * would read it), loading them over `conn`: row lines of a loadable table by
 * LOAD DATA, other statements as they are. `done` resolves when the sink has
 * ended and every statement has run; it rejects with the first failure.
 */
export class RowsLoader {
  readonly sink: Writable;
  readonly done: Promise<void>;
  /** Settles with `done`; never rejects. */
  readonly settled: Promise<void>;
  private killed = false;
  private partial: Buffer[] = [];
  private partialBytes = 0;
  private stmt = "";
  private inRows = false;
  private semi = false;
  private open: { key: string; infile: PassThrough; query: Promise<void> } | undefined;
  private readonly inserts = new Map<string, LoadableTable>();
  private failure: Promise<never> | undefined;
  /** The connection, once it keeps out of the binlog and uses the part's database. */
  private readonly ready: Promise<Conn>;

  constructor(
    /** The connection to load over; the loader closes it. */
    private readonly connecting: Promise<Conn>,
    private readonly part: { id: number; db: string },
    tables: LoadableTable[],
    signal: AbortSignal,
  ) {
    // Not into the target's binlog, as the mariadb clients; the part's statements name their tables
    // without the database, as the clients' --database lets them.
    this.ready = connecting.then(async (c) => {
      await c.query("SET SESSION sql_log_bin=0");
      await c.query(`USE ${quoteIdent(part.db)}`);
      return c;
    });
    this.ready.catch(() => undefined);
    const stop = (): void => { this.kill(); };
    signal.addEventListener("abort", stop, { once: true });
    for (const t of tables) this.inserts.set(`INSERT INTO ${quoteIdent(t.table)} VALUES`, t);
    let resolveDone!: () => void;
    let rejectDone!: (err: unknown) => void;
    this.done = new Promise<void>((resolve, reject) => { resolveDone = resolve; rejectDone = reject; });
    this.settled = this.done.then(() => undefined, () => undefined);
    this.sink = new Writable({
      highWaterMark: 1024 * 1024,
      write: (chunk: Buffer, _enc, cb) => { this.consume(chunk).then(() => { cb(); }, cb); },
      final: (cb) => { this.finish().then(() => { cb(); }, cb); },
    });
    this.sink.on("finish", () => { resolveDone(); });
    this.sink.on("error", (err) => { rejectDone(err); });
    connecting.catch(() => undefined);
    void this.settled.then(async () => {
      signal.removeEventListener("abort", stop);
      const c = await connecting.catch(() => undefined);
      if (c && !this.killed) await c.end().catch(() => { c.destroy(); });
    });
  }

  /** The load's error, unless it stopped because the restore killed it. */
  async failureUnlessKilled(): Promise<unknown> {
    return this.done.then(() => undefined, (err: unknown) => (this.killed ? undefined : err));
  }

  /** Stop now: the connection is closed, the statement running on it is abandoned. */
  kill(): void {
    if (this.killed) return;
    this.killed = true;
    void this.connecting.then((c) => { c.destroy(); }, () => undefined);
    this.sink.destroy(new Error(`loading part ${this.part.id} was stopped`));
  }

  private async consume(input: Buffer): Promise<void> {
    let chunk = input;
    if (this.semi) {
      chunk = Buffer.concat([Buffer.of(SEMI), chunk]);
      this.semi = false;
    }
    let pos = 0;
    while (pos < chunk.length) {
      if (this.inRows) {
        const i = chunk.indexOf(STATEMENT_END, pos);
        if (i < 0) {
          let end = chunk.length;
          // A ';' last in the chunk may be the statement's end: decided with the next chunk.
          if (chunk[end - 1] === SEMI) {
            end--;
            this.semi = true;
          }
          await this.rows(chunk.subarray(pos, end));
          return;
        }
        // "…);\n" ends the statement: its last row line becomes "…),\n" like the others.
        await this.rows(chunk.subarray(pos, i));
        await this.rows(COMMA_NL);
        this.inRows = false;
        pos = i + 2;
        continue;
      }
      const nl = chunk.indexOf(NL, pos);
      if (nl < 0) {
        this.keepPartial(chunk.subarray(pos));
        return;
      }
      const piece = chunk.subarray(pos, nl);
      const line = this.partialBytes > 0 ? Buffer.concat([...this.partial, piece]).toString("utf8") : piece.toString("utf8");
      this.partial = [];
      this.partialBytes = 0;
      pos = nl + 1;
      await this.line(line);
    }
  }

  private keepPartial(b: Buffer): void {
    this.partialBytes += b.length;
    if (this.partialBytes > MAX_LINE) throw failed("CorruptBackup", `part ${this.part.id} has a line longer than ${MAX_LINE} bytes, which no dump writes`);
    this.partial.push(Buffer.from(b));
  }

  private async line(line: string): Promise<void> {
    if (this.stmt === "") {
      if (line === "" || line.startsWith("--") || line.startsWith("/*M!999999\\-")) return;
      const t = this.inserts.get(line);
      if (t) {
        await this.startRows(t);
        this.inRows = true;
        return;
      }
    }
    await this.endRows();
    this.stmt = this.stmt === "" ? line : `${this.stmt}\n${line}`;
    if (!line.trimEnd().endsWith(";")) return;
    const sql = this.stmt;
    this.stmt = "";
    try {
      await (await this.ready).query(sql);
    } catch (err) {
      throw failed("LoadFailed", `part ${this.part.id} of ${this.part.db}: ${sqlMessage(err)} (in: ${sql.slice(0, 120)})`, { cause: err });
    }
  }

  /** A LOAD DATA for `t`, unless the one open is already `t`'s (its next INSERT continues it). */
  private async startRows(t: LoadableTable): Promise<void> {
    const key = `${t.db}.${t.table}`;
    if (this.open?.key === key) return;
    await this.endRows();
    const infile = new PassThrough({ highWaterMark: PIECE });
    const conn = await this.ready;
    const what = `loading the rows of ${qualified(t)} (part ${this.part.id}) by LOAD DATA failed`;
    const query = conn.query({ sql: loadDataSql(t), infileStreamFactory: () => infile }).then(
      async ([result]) => {
        // LOAD DATA LOCAL skips a row that duplicates a key (as IGNORE) where the INSERT fails: fail as it would.
        const skipped = skippedRows((result as { info?: string }).info ?? "");
        if (skipped === 0) return;
        const [w] = await queryRows<{ Message: string }>(conn, "SHOW WARNINGS LIMIT 1").catch(() => []);
        throw failed("LoadFailed", `${what}: ${w?.Message ?? "a row duplicates a key"} (${skipped} row${skipped === 1 ? "" : "s"} refused)`);
      },
      (err: unknown) => {
        throw failed("LoadFailed", `${what}: ${sqlMessage(err)}`, { cause: err });
      },
    );
    this.failure = query.then(() => new Promise<never>(() => undefined));
    this.failure.catch(() => undefined);
    this.open = { key, infile, query };
  }

  private async rows(b: Buffer): Promise<void> {
    const open = this.open;
    if (!open || b.length === 0) return;
    const socket = ((await this.ready) as unknown as { connection: { stream: Socket } }).connection.stream;
    for (let at = 0; at < b.length; at += PIECE) {
      const piece = b.subarray(at, Math.min(b.length, at + PIECE));
      // The connection copies the piece into a packet and writes it at once, without waiting for the socket: wait here.
      if (!open.infile.write(piece)) await Promise.race([once(open.infile, "drain"), this.failure]);
      if (socket.writableLength > SOCKET_HIGH) await Promise.race([once(socket, "drain"), this.failure]);
    }
  }

  private async endRows(): Promise<void> {
    const open = this.open;
    if (!open) return;
    this.open = undefined;
    this.failure = undefined;
    open.infile.end();
    await open.query;
  }

  private async finish(): Promise<void> {
    if (this.inRows || this.semi || this.stmt !== "" || this.partial.some((b) => b.toString("utf8").trim() !== "")) {
      throw failed("CorruptBackup", `part ${this.part.id} of ${this.part.db} ends inside a statement`);
    }
    await this.endRows();
  }
}
