// The target of a logical (pg_dump) restore: one database of a running
// PostgreSQL primary, the one named in the target's URL.
//
// The sentinel of an unfinished restore is a schema,
// `_replicator_restore_in_progress`, created before anything is loaded and
// dropped once the load has committed. A database that has it holds a
// half-finished restore, not data: the next restore redoes it.
import { badInput } from "../../lib/errors.js";
import type { Endpoint } from "../endpoint.js";
import { RESTORE_SENTINEL } from "../schemas.js";
import type { RestoreTarget, TargetState } from "../target.js";
import { describeEndpoint } from "../endpoint.js";
import { pgQuery, quoteIdent, quoteLiteral } from "./client.js";

/** Schemas that never make a target count as non-empty. */
export const PG_SYSTEM_SCHEMAS = ["pg_catalog", "information_schema", RESTORE_SENTINEL];

/**
 * Relations per schema outside the system ones: tables (plain, partitioned,
 * foreign), views and materialized views: what a dump would collide with.
 */
const TABLES_SQL = `
SELECT n.nspname, count(*)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm')
   AND n.nspname NOT IN (${PG_SYSTEM_SCHEMAS.map(quoteLiteral).join(", ")})
   AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
 GROUP BY n.nspname ORDER BY n.nspname`;

export function postgresTarget(e: Endpoint): RestoreTarget {
  const db = e.database ?? "postgres";
  return {
    async inspect(): Promise<TargetState> {
      const [flags] = await pgQuery(
        e,
        `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = ${quoteLiteral(RESTORE_SENTINEL)}), pg_is_in_recovery()`,
        { what: "inspect the target" },
      );
      const rows = await pgQuery(e, TABLES_SQL, { what: "inspect the target" });
      return {
        redo: flags?.[0] === "t",
        tables: rows.map(([s, n]) => ({ s: s ?? "", n: Number(n ?? 0) })),
        isReplica: flags?.[1] === "t",
      };
    },
    async checkCanRestore(): Promise<void> {
      // The load runs in one transaction (a failure rolls it back), so what
      // must hold before it starts is that the sentinel schema can be made.
      const [row] = await pgQuery(
        e,
        "SELECT current_user, has_database_privilege(current_user, current_database(), 'CREATE'), pg_is_in_recovery()",
        { what: "check the target user's privileges" },
      );
      if (row?.[2] === "t") return; // a standby: stopReplication says why it cannot be loaded into
      if (row?.[1] !== "t") {
        const user = row?.[0] ?? e.user;
        throw badInput(
          "MissingPrivilege",
          `target user "${user}" cannot create a schema in database ${db} on ${describeEndpoint(e)}; the restore needs it: GRANT CREATE ON DATABASE ${quoteIdent(db)} TO ${quoteIdent(user)}, or restore as the database's owner`,
        );
      }
    },
    stopReplication(): Promise<void> {
      // A standby is read-only, and replication cannot be paused to let a
      // load in: a logical restore needs a primary.
      return Promise.reject(
        badInput(
          "TargetIsStandby",
          `target ${describeEndpoint(e)} is a PostgreSQL standby (in recovery) and cannot be loaded into; restore into a primary (promote it, or use a fresh server), or restore a pg_basebackup backup into the standby's data directory with --datadir`,
        ),
      );
    },
    async markStarted(backup: string): Promise<void> {
      await pgQuery(
        e,
        `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(RESTORE_SENTINEL)};
         COMMENT ON SCHEMA ${quoteIdent(RESTORE_SENTINEL)} IS ${quoteLiteral(`restoring ${backup} into database ${db} since ${new Date().toISOString()}`)};`,
        { what: "mark the restore as in progress" },
      );
    },
    async markFinished(): Promise<void> {
      await pgQuery(e, `DROP SCHEMA IF EXISTS ${quoteIdent(RESTORE_SENTINEL)} CASCADE`, { what: "mark the restore as finished" });
    },
  };
}
