// Can a PostgreSQL primary still serve a standby seeded from a backup?
// Asked before a pg_basebackup backup is restored with --replicate-from, so
// that a restore that cannot end in a streaming standby fails before it
// writes anything, with a reason that names the fix.
import { badInput, isReplicatorError } from "../../lib/errors.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import { describeEndpoint, type Endpoint } from "../endpoint.js";
import type { ServeCheck } from "../replication.js";
import { pgQuery, quoteLiteral, REPLICATION_PASSWORD_HINT } from "./client.js";
import { isLsn, parseLsn, timelineOfWalFile, walFileName } from "./wal.js";

/**
 * Checks, in order:
 * 1. the replication user can open a replication connection (pg_hba.conf
 *    `host replication` line, REPLICATION attribute, a free WAL sender),
 *    exactly as the standby will;
 * 2. the server is a primary (not in recovery) with wal_level >= replica;
 * 3. it is on the backup's timeline, and the backup's position is not ahead
 *    of it (it is this primary's WAL);
 * 4. the WAL segment holding the backup's end position is still in pg_wal,
 *    so the standby can stream from there. Listing pg_wal needs superuser or
 *    pg_monitor; without it the check says so and names the way out.
 */
export async function checkPrimaryCanServe(primary: Endpoint, pos: ReplicationPosition): Promise<ServeCheck> {
  const desc = describeEndpoint(primary);
  if (!pos.lsn || !isLsn(pos.lsn)) {
    return { ok: false, reason: "the backup recorded no WAL location; it cannot seed a standby (take a pg_basebackup backup)" };
  }
  const opts = { passwordHint: REPLICATION_PASSWORD_HINT };
  // 1. What the standby's WAL receiver will do.
  await pgQuery(primary, "IDENTIFY_SYSTEM", { ...opts, conninfo: "replication=true", what: "open a replication connection to the primary" });

  // 2-3. A primary with enough WAL level, on the backup's timeline.
  const [row] = await pgQuery(
    primary,
    `SELECT pg_is_in_recovery(), current_setting('wal_level'),
            (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'),
            CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_walfile_name(pg_current_wal_lsn()) END,
            CASE WHEN pg_is_in_recovery() THEN '' ELSE pg_current_wal_lsn()::text END`,
    { ...opts, what: "check the primary's WAL" },
  );
  const [inRecovery, walLevel, segSize, currentFile, currentLsn] = row ?? [];
  if (inRecovery === "t") {
    return {
      ok: false,
      reason: `${desc} is a standby (in recovery), not a primary; pass the primary as --replicate-from (replicating from a standby is possible but not checked: --skip-binlog-check)`,
    };
  }
  if (walLevel !== "replica" && walLevel !== "logical") {
    return { ok: false, reason: `${desc} has wal_level=${walLevel ?? "?"}; set wal_level = replica and restart it` };
  }
  if (!currentFile || !currentLsn) return { ok: false, reason: `${desc} did not report its WAL position` };
  const timeline = timelineOfWalFile(currentFile);
  if (pos.timeline !== undefined && pos.timeline !== timeline) {
    return {
      ok: false,
      reason: `the backup is on timeline ${pos.timeline} but ${desc} is on timeline ${timeline} (it was promoted or restored since); take a new backup of ${desc}`,
    };
  }
  if (parseLsn(pos.lsn) > parseLsn(currentLsn)) {
    return {
      ok: false,
      reason: `the backup's position ${pos.lsn} is ahead of ${desc}'s WAL (${currentLsn}): the backup is not of this server; take a backup of ${desc}`,
    };
  }

  // 4. The segment the standby starts streaming from.
  const segment = walFileName(timeline, pos.lsn, Number(segSize));
  let present: string;
  try {
    const [r] = await pgQuery(primary, `SELECT count(*) FROM pg_ls_waldir() WHERE name = ${quoteLiteral(segment)}`, { ...opts, what: "list the primary's WAL" });
    present = r?.[0] ?? "0";
  } catch (err) {
    if (isReplicatorError(err) && /permission denied/i.test(err.message)) {
      throw badInput(
        "NotPermitted",
        `user "${primary.user}" may not list ${desc}'s WAL (pg_ls_waldir) to check it still has the backup's position; GRANT pg_monitor TO ${primary.user}, or pass --skip-binlog-check`,
        { cause: err },
      );
    }
    throw err;
  }
  if (present === "0") {
    return {
      ok: false,
      reason: `${desc} no longer has WAL segment ${segment} (the backup's position ${pos.lsn}): it was recycled; take a new backup, and keep WAL longer (raise wal_keep_size, or use a replication slot or a WAL archive)`,
    };
  }
  return { ok: true };
}
