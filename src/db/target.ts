// What a "server" restore needs to know about and do to its target, per
// engine: is it empty, does it hold an unfinished restore (the sentinel), is
// it a replica; mark the restore as started and finished.
import type { Endpoint } from "./endpoint.js";
import { queryRows, withConn } from "./connection.js";
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
  stopReplication(): Promise<void>;
  /** Create the sentinel that marks a restore as unfinished. */
  markStarted(backup: string): Promise<void>;
  /** Drop the sentinel: the restore is complete. */
  markFinished(): Promise<void>;
}

export function mysqlTarget(e: Endpoint): RestoreTarget {
  return {
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
