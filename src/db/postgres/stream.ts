// What the PostgreSQL methods add to lib/child-streams: a loader's failure
// named by the line of psql's stderr that says what went wrong.
import { failed, isReplicatorError } from "../../lib/errors.js";
import { errorLine } from "./client.js";

/** A loader's CommandFailed names the line that says what went wrong (psql prints context lines after it). */
export function betterLoaderError(err: unknown): unknown {
  if (!isReplicatorError(err) || err.reason !== "CommandFailed" || !err.detail) return err;
  const line = errorLine(err.detail).replace(/^psql:<stdin>:\d+:\s*/, "");
  const head = err.message.replace(/\)(: .*)?$/, ")");
  return failed("CommandFailed", line ? `${head}: ${line}` : err.message, { detail: err.detail, cause: err });
}

/** Pure: the summary line of a failed pg tool (pg_basebackup, pg_dump): its error line without the "pg_xxx: error: " prefix. */
export function pgToolErrorLine(stderr: string): string {
  return errorLine(stderr).replace(/^[\w-]+: error: /, "");
}

/** What a CommandNotFound of a PostgreSQL tool tells the user to do. */
export const PG_TOOLS_HINT = "install the PostgreSQL client tools or put them on PATH";
