// Can a master/primary still serve a replica starting at a backup's
// position? Asked before anything is restored, per engine.
import type { ReplicationPosition } from "../storage/catalog.js";
import { withConn } from "./connection.js";
import { describeEndpoint, type Endpoint } from "./endpoint.js";
import { checkMasterCanServe, type ServeCheck } from "./replication.js";

export async function checkCanServe(master: Endpoint, pos: ReplicationPosition): Promise<ServeCheck> {
  switch (master.engine) {
    case "mysql":
      return withConn(master, "check the master's binlogs", (c) => checkMasterCanServe(c, pos, describeEndpoint(master)));
    case "postgresql": {
      const { checkPrimaryCanServe } = await import("./postgres/replication.js");
      return checkPrimaryCanServe(master, pos);
    }
  }
}

/** A position a replica can start from: a GTID, binlog coordinates, or a WAL location. */
export function hasPosition(pos: ReplicationPosition | undefined): pos is ReplicationPosition {
  return !!pos && (!!pos.gtid || !!pos.file || !!pos.lsn);
}
