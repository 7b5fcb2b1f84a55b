// A missing privilege ends in one line that names it and the GRANT that
// fixes it, whether the server refused one of our own statements (mysql2's
// error) or one of mariadb-dump's (its stderr).
import { badInput, isReplicatorError, type ReplicatorError } from "../lib/errors.js";

/** Pure: 'user'@'host' from CURRENT_USER() ("user@host"). */
export function quoteAccount(currentUser: string): string {
  const at = currentUser.lastIndexOf("@");
  const user = at >= 0 ? currentUser.slice(0, at) : currentUser;
  const host = at >= 0 ? currentUser.slice(at + 1) : "%";
  return `'${user}'@'${host}'`;
}

/**
 * Pure: the privilege to grant for a server's "you need (at least one of)
 * the SUPER, BINLOG MONITOR privilege(s)": the narrowest one named (SUPER
 * only when it is the only choice).
 */
export function privilegeToGrant(needed: string[]): string {
  const narrow = needed.filter((p) => p !== "SUPER");
  return narrow[narrow.length - 1] ?? needed[0] ?? "SUPER";
}

export interface PrivilegeProblem {
  /** What to grant, e.g. "RELOAD" or "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES". */
  grant: string;
  /** Where, e.g. "*.*" or "`shop`.*". */
  on: string;
  /** The server's own words. */
  serverMessage: string;
}

/** The privileges a dump needs on each database it reads. */
export const DUMP_DB_PRIVILEGES = "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES";

function quoteDb(db: string): string {
  return `\`${db.replace(/`/g, "``")}\``;
}

/**
 * Pure: recognise a missing privilege in a server error message (as mysql2
 * or mariadb-dump reports it), or undefined.
 * - 1227 "Access denied; you need (at least one of) the RELOAD privilege(s) for this operation"
 * - 1044 "Access denied for user 'u'@'h' to database 'shop'"
 * - 1142 "SHOW VIEW command denied to user 'u'@'h' for table `shop`.`v`"
 */
export function findPrivilegeProblem(text: string): PrivilegeProblem | undefined {
  const need = /Access denied; you need \(at least one of\) the (.+?) privilege\(s\)[^\n]*/.exec(text);
  if (need?.[1]) {
    return { grant: privilegeToGrant(need[1].split(",").map((p) => p.trim())), on: "*.*", serverMessage: need[0].replace(/\s*\(\d+\)\s*$/, "").trim() };
  }
  const cmd = /\b([A-Z][A-Z ]*?) command denied to user '[^']*'@'[^']*' for (?:table|routine) [`']([^`']+)[`']\.[`']?[^\s`']*[`']?[^\n]*/.exec(text);
  if (cmd?.[1] && cmd[2]) {
    return { grant: cmd[1].trim(), on: `${quoteDb(cmd[2])}.*`, serverMessage: cmd[0].replace(/\s*\(\d+\)\s*$/, "").replace(/["']\s*when .*$/, "").trim() };
  }
  const db = /Access denied for user '[^']*'@'[^']*' to database '([^']+)'[^\n]*/.exec(text);
  if (db?.[1]) {
    return { grant: DUMP_DB_PRIVILEGES, on: `${quoteDb(db[1])}.*`, serverMessage: db[0].replace(/\s*\(\d+\)\s*$/, "").replace(/["']\s*when .*$/, "").trim() };
  }
  return undefined;
}

/** Pure: the one-line error for a backup user missing a privilege. */
export function backupPrivilegeError(account: string, at: string, what: string, p: PrivilegeProblem, cause?: unknown): ReplicatorError {
  return badInput(
    "MissingPrivilege",
    `backup user ${account} lacks the ${p.grant} privilege on ${at}, needed to ${what} (${p.serverMessage}): GRANT ${p.grant} ON ${p.on} TO ${account}`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Turn an error met while backing up into the one-line MissingPrivilege
 * error when a privilege is what was missing; any other error is returned as
 * it was. Looks at a mysql2 error's sqlMessage and a CommandFailed's stderr tail.
 */
export function asBackupPrivilegeError(err: unknown, account: string, at: string, what: string): unknown {
  if (isReplicatorError(err) && err.reason === "MissingPrivilege") return err;
  const x = err as { sqlMessage?: string; message?: string; detail?: string } | undefined;
  const text = [x?.sqlMessage, x?.detail, x?.message].filter((s): s is string => typeof s === "string").join("\n");
  const p = findPrivilegeProblem(text);
  return p ? backupPrivilegeError(account, at, what, p, err) : err;
}
