/**
 * The sentinel of an unfinished restore (the Vitess pattern): a database
 * created, outside the binlog, before anything is loaded and dropped only
 * once the restore (and replication, when asked) is done. A target that has
 * it holds a half-finished restore, not data: the next restore redoes it.
 */
export const RESTORE_SENTINEL = "_replicator_restore_in_progress";

/** Schemas that are never dumped, and never make a target count as non-empty. */
export const SYSTEM_SCHEMAS = ["mysql", "sys", "information_schema", "performance_schema", RESTORE_SENTINEL];
