// The replica configuration of a restored, stopped data directory (the
// recovery.conf step of MariaDB): a temporary mariadbd on the data directory
// runs SET GLOBAL gtid_slave_pos and CHANGE MASTER TO, and shuts down
// cleanly. MariaDB keeps both in the data directory (master.info and the
// mysql.gtid_slave_pos table), so the real server replicates as soon as it
// starts.
//
// The temporary server (temp-server.ts) has no networking, skips the grant
// tables, never starts the slave threads, and keeps its relay log outside
// the data directory: the real server starts its own, named after its own
// host and configuration, from the position in master.info /
// mysql.gtid_slave_pos. The replication password travels only inside
// CHANGE MASTER over the socket.
import { badInput, failed } from "../../lib/errors.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import { describeEndpoint, type Endpoint } from "../../db/endpoint.js";
import type { SeedContext } from "../contract.js";
import type { MariabackupOptions } from "./parse.js";
import { withTemporaryServer } from "./temp-server.js";

/** Pure: the statements that point a stopped server at `master` from `pos` (values escaped with `esc`). */
export function replicaStatements(master: Endpoint, pos: ReplicationPosition, esc: (v: string) => string): string[] {
  const common = [
    `MASTER_HOST=${esc(master.host)}`,
    `MASTER_PORT=${master.port}`,
    `MASTER_USER=${esc(master.user)}`,
    `MASTER_PASSWORD=${esc(master.password ?? "")}`,
    "MASTER_CONNECT_RETRY=5",
  ];
  if (pos.gtid) {
    return [
      "RESET SLAVE ALL",
      `SET GLOBAL gtid_slave_pos = ${esc(pos.gtid)}`,
      `CHANGE MASTER TO ${[...common, "MASTER_USE_GTID=slave_pos"].join(", ")}`,
    ];
  }
  if (pos.file && pos.position !== undefined) {
    return [
      "RESET SLAVE ALL",
      `CHANGE MASTER TO ${[...common, `MASTER_LOG_FILE=${esc(pos.file)}`, `MASTER_LOG_POS=${pos.position}`, "MASTER_USE_GTID=no"].join(", ")}`,
    ];
  }
  throw badInput("NoPosition", "the backup has no replication position (no GTID, no binlog file/position); it cannot seed a replica");
}

export async function configureRestoredReplica(ctx: SeedContext, opts: MariabackupOptions): Promise<void> {
  await withTemporaryServer({ datadir: ctx.datadir, opts, purpose: "to write the replica configuration", log: ctx.log, signal: ctx.signal }, async (server) => {
    try {
      for (const sql of replicaStatements(ctx.replicateFrom, ctx.position, (v) => server.escape(v))) await server.query(sql);
    } catch (err) {
      // No `cause`: the driver's error carries the statement, password included.
      const x = err as { sqlMessage?: string; message?: string; code?: string };
      throw failed("SeedFailed", `configuring replication from ${describeEndpoint(ctx.replicateFrom)} failed: ${x.sqlMessage ?? x.message ?? "unknown error"}`, {
        detail: x.code,
      });
    }
  });
  ctx.log.info({ master: describeEndpoint(ctx.replicateFrom), gtid: ctx.position.gtid, file: ctx.position.file, position: ctx.position.position }, "replica configuration written");
}
