// What a "server" restore needs to know about and do to its target, per
// engine: is it empty, does it hold an unfinished restore (the sentinel), is
// it a replica; mark the restore as started and finished.
import { randomBytes } from "node:crypto";
import { badInput, failed } from "../lib/errors.js";
import type { Endpoint } from "./endpoint.js";
import { connect, mapDbError, queryRows, withConn, type Conn } from "./connection.js";
import { quoteAccount } from "./privileges.js";
import { getSlaveStatus } from "./replication.js";
import { RESTORE_SENTINEL, SYSTEM_SCHEMAS } from "./schemas.js";

export interface TargetState {
  /** The target holds the sentinel of an unfinished restore: it is redone. */
  redo: boolean;
  /** Tables per database/schema outside the system ones. */
  tables: { s: string; n: number }[];
  /** The target is a replica (replication configured). */
  isReplica: boolean;
}

export interface RestoreTarget {
  inspect(): Promise<TargetState>;
  /**
   * Prove, before anything is stopped or dropped, that the target user can
   * do what the load does (drop and create a database, create a table,
   * insert, lock it, and keep the load out of the binlog). Throws BadInput
   * MissingPrivilege naming what is missing and the GRANT that fixes it.
   * Leaves nothing behind, whether it passes or fails.
   */
  checkCanRestore(): Promise<void>;
  stopReplication(): Promise<void>;
  /** Create the sentinel that marks a restore as unfinished. */
  markStarted(backup: string): Promise<void>;
  /** Drop the sentinel: the restore is complete. */
  markFinished(): Promise<void>;
}

/** One step of the restore preflight: what it proves, the statement, and the grant that fixes it. */
interface ProbeStep {
  what: string;
  sql: string;
  grant: string;
  /** Server error codes that mean the step itself passed (e.g. "database doesn't exist" after the privilege check). */
  passOn?: string[];
}

/** Pure: the preflight's steps against a throw-away database `probe`. */
export function buildRestoreProbe(probe: string): { steps: ProbeStep[]; dropProbe: string } {
  const db = `\`${probe}\``;
  return {
    steps: [
      {
        what: "set sql_log_bin (the load runs SET SESSION sql_log_bin=0 so that it stays out of the target's binlog)",
        sql: "SET SESSION sql_log_bin = 0",
        grant: "BINLOG ADMIN",
      },
      // Asked of a database that does not exist: the server checks the
      // privilege first, so nothing is created that this user could not drop.
      { what: "drop a database", sql: `DROP DATABASE ${db}`, grant: "DROP", passOn: ["ER_DB_DROP_EXISTS"] },
      { what: "create a database", sql: `CREATE DATABASE ${db}`, grant: "CREATE" },
      { what: "create a table", sql: `CREATE TABLE ${db}.t (id INT PRIMARY KEY) ENGINE=InnoDB`, grant: "CREATE" },
      { what: "insert rows", sql: `INSERT INTO ${db}.t VALUES (1)`, grant: "INSERT" },
      { what: "lock tables (the dump's LOCK TABLES ... WRITE)", sql: `LOCK TABLES ${db}.t WRITE`, grant: "LOCK TABLES" },
      { what: "unlock tables", sql: "UNLOCK TABLES", grant: "LOCK TABLES" },
      { what: "drop a database", sql: `DROP DATABASE ${db}`, grant: "DROP" },
    ],
    dropProbe: `DROP DATABASE IF EXISTS ${db}`,
  };
}

/** Pure: the one-line error of a failed preflight step. */
export function missingPrivilege(account: string, at: string, step: { what: string; grant: string }, code: string, serverMessage: string): Error {
  if (code === "ER_OPTION_PREVENTS_STATEMENT") {
    return badInput(
      "TargetReadOnly",
      `target user ${account} cannot ${step.what} on ${at} (${serverMessage}); the restore would drop databases it cannot recreate: SET GLOBAL read_only=OFF on the target, or GRANT READ_ONLY ADMIN ON *.* TO ${account}`,
    );
  }
  return badInput(
    "MissingPrivilege",
    `target user ${account} cannot ${step.what} on ${at} (${serverMessage}); the restore would drop databases it cannot recreate: GRANT ${step.grant} ON *.* TO ${account}, or restore as a user that has it`,
  );
}

const DENIED = new Set([
  "ER_SPECIFIC_ACCESS_DENIED_ERROR",
  "ER_DBACCESS_DENIED_ERROR",
  "ER_TABLEACCESS_DENIED_ERROR",
  "ER_ACCESS_DENIED_ERROR",
  "ER_OPTION_PREVENTS_STATEMENT",
]);

async function checkCanRestoreMysql(e: Endpoint): Promise<void> {
  const at = e.socket ?? `${e.host}:${e.port}`;
  const c: Conn = await connect(e, "check the target user's privileges");
  const probe = `__replicator_probe_${randomBytes(6).toString("hex")}`;
  const { steps, dropProbe } = buildRestoreProbe(probe);
  let mayExist = false;
  try {
    const [u] = await queryRows<{ u: string }>(c, "SELECT CURRENT_USER() AS u");
    const account = quoteAccount(u?.u ?? e.user);
    for (const step of steps) {
      if (step.sql.startsWith("CREATE DATABASE")) mayExist = true;
      try {
        await c.query(step.sql);
      } catch (err) {
        const x = err as { code?: string; sqlMessage?: string; message?: string };
        const code = x.code ?? "";
        if (step.passOn?.includes(code)) continue;
        if (DENIED.has(code)) throw missingPrivilege(account, at, step, code, x.sqlMessage ?? x.message ?? code);
        throw failed("DatabaseError", `checking that target user ${account} can ${step.what} on ${at} failed: ${x.sqlMessage ?? x.message ?? String(err)}`, { cause: err });
      }
      if (step.sql.startsWith("DROP DATABASE") && mayExist) mayExist = false;
    }
  } catch (err) {
    throw mapDbError(err, e, "check the target user's privileges");
  } finally {
    if (mayExist) {
      // A step after CREATE DATABASE failed: drop the probe (the DROP check
      // passed, so this user can), out of the binlog if the session allows.
      await c.query("UNLOCK TABLES").catch(() => undefined);
      await c.query(dropProbe).catch(() => undefined);
    }
    await c.end().catch(() => undefined);
  }
}

export function mysqlTarget(e: Endpoint): RestoreTarget {
  return {
    checkCanRestore: () => checkCanRestoreMysql(e),
    inspect: () =>
      withConn(e, "inspect the target", async (c) => {
        const [sentinel] = await queryRows<{ n: number | string }>(c, "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = ?", [RESTORE_SENTINEL]);
        const rows = await queryRows<{ s: string; n: number | string }>(
          c,
          `SELECT table_schema AS s, COUNT(*) AS n FROM information_schema.tables
           WHERE table_schema NOT IN (?) GROUP BY table_schema ORDER BY table_schema`,
          [SYSTEM_SCHEMAS],
        );
        return {
          redo: Number(sentinel?.n ?? 0) > 0,
          tables: rows.map((r) => ({ s: r.s, n: Number(r.n) })),
          isReplica: (await getSlaveStatus(c)) !== undefined,
        };
      }),
    stopReplication: () => withConn(e, "stop replication on the target", async (c) => { await c.query("STOP SLAVE"); }),
    markStarted: (backup) =>
      withConn(e, "mark the restore as in progress", async (c) => {
        await c.query("SET SESSION sql_log_bin = 0");
        await c.query(`CREATE DATABASE IF NOT EXISTS \`${RESTORE_SENTINEL}\` COMMENT ?`, [`restoring ${backup}`]);
      }),
    markFinished: () =>
      withConn(e, "mark the restore as finished", async (c) => {
        await c.query("SET SESSION sql_log_bin = 0");
        await c.query(`DROP DATABASE IF EXISTS \`${RESTORE_SENTINEL}\``);
      }),
  };
}

export async function restoreTargetFor(e: Endpoint): Promise<RestoreTarget> {
  switch (e.engine) {
    case "mysql":
      return mysqlTarget(e);
    case "postgresql": {
      const { postgresTarget } = await import("./postgres/target.js");
      return postgresTarget(e);
    }
  }
}
