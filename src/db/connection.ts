// mysql2 connections for small control statements, with errors mapped to
// one-line messages (wrong password, unreachable server, missing privilege).
//
// Every connection checks the server's flavour once, first: this release
// supports MariaDB only (dumps pass MariaDB-only flags, replication uses
// gtid_slave_pos and MASTER_USE_GTID), and no MySQL server runs in our CI, so
// a MySQL (or Percona Server) server is refused with one clear line.
import mysql from "mysql2/promise";
import { badInput, failed, ReplicatorError } from "../lib/errors.js";
import { describeEndpoint, type Endpoint } from "./endpoint.js";
import { findPrivilegeProblem } from "./privileges.js";

export type Conn = mysql.Connection;

export type Flavour = "mariadb" | "mysql";

/**
 * Pure: the flavour of a server from `@@version` and `@@version_comment`.
 * MariaDB says so in its version ("10.11.19-MariaDB-0+deb12u1"), or in the
 * comment ("mariadb.org binary distribution"); "5.5.5-10.11..." is the
 * prefix MariaDB gives itself in the MySQL handshake. Anything else
 * (MySQL "8.0.40", Percona Server "8.0.36-28") is MySQL.
 */
export function detectFlavour(version: string, versionComment = ""): Flavour {
  if (/mariadb/i.test(version) || /mariadb/i.test(versionComment)) return "mariadb";
  if (/^5\.5\.5-1\d\./.test(version)) return "mariadb";
  return "mysql";
}

/** The error for a MySQL server: one line, the fix included. */
export function mysqlUnsupported(e: Endpoint, version: string, versionComment = ""): ReplicatorError {
  const what = /percona/i.test(versionComment) ? `Percona Server ${version}` : `MySQL ${version}`;
  return badInput(
    "MySqlUnsupported",
    `${e.socket ?? `${e.host}:${e.port}`} runs ${what}; this release supports MariaDB only (MySQL is not tested: no MySQL server in our CI); use MariaDB, or back up with a plugin (docs/plugins.md)`,
  );
}

/** Refuse a server that is not MariaDB. */
export async function checkFlavour(c: Conn, e: Endpoint): Promise<void> {
  const [rows] = await c.query("SELECT @@version AS v, @@version_comment AS vc");
  const r = (rows as { v?: unknown; vc?: unknown }[])[0];
  const version = typeof r?.v === "string" ? r.v : "";
  const comment = typeof r?.vc === "string" ? r.vc : "";
  if (detectFlavour(version, comment) === "mysql") throw mysqlUnsupported(e, version, comment);
}

export async function connect(e: Endpoint, what = "server"): Promise<Conn> {
  let c: Conn;
  try {
    c = await mysql.createConnection({
      host: e.socket ? undefined : e.host,
      port: e.port,
      socketPath: e.socket,
      user: e.user,
      password: e.password ?? "",
      connectTimeout: 10_000,
      multipleStatements: false,
      dateStrings: true,
      supportBigNumbers: true,
      bigNumberStrings: true,
    });
  } catch (err) {
    throw mapDbError(err, e, `connect to ${what}`);
  }
  try {
    await checkFlavour(c, e);
  } catch (err) {
    await c.end().catch(() => undefined);
    throw mapDbError(err, e, `connect to ${what}`);
  }
  return c;
}

export async function withConn<T>(e: Endpoint, what: string, fn: (c: Conn) => Promise<T>): Promise<T> {
  const c = await connect(e, what);
  try {
    return await fn(c);
  } catch (err) {
    throw mapDbError(err, e, what);
  } finally {
    await c.end().catch(() => undefined);
  }
}

export async function queryRows<T>(c: Conn, sql: string, params?: unknown[]): Promise<T[]> {
  const [rows] = await c.query(sql, params);
  return rows as T[];
}

export function mapDbError(err: unknown, e: Endpoint, what: string): ReplicatorError {
  if (err instanceof ReplicatorError) return err;
  const x = err as { code?: string; errno?: number; sqlMessage?: string; message?: string };
  const at = describeEndpoint(e);
  switch (x.code ?? "") {
    case "ER_ACCESS_DENIED_ERROR":
    case "ER_ACCESS_DENIED_NO_PASSWORD_ERROR":
      return badInput(
        "AccessDenied",
        `access denied for ${at} (${what}): wrong user or password; check ${
          /master|replicat/i.test(what) ? "REPLICATOR_REPLICATION_PASSWORD or replicationPasswordFile" : "REPLICATOR_DB_PASSWORD or passwordFile"
        }`,
        { cause: err },
      );
    case "ER_HOST_NOT_PRIVILEGED":
      return badInput("AccessDenied", `${at} does not accept connections from this host (${what}); grant the user from this host`, { cause: err });
    case "ER_SPECIFIC_ACCESS_DENIED_ERROR":
    case "ER_DBACCESS_DENIED_ERROR":
    case "ER_TABLEACCESS_DENIED_ERROR": {
      const msg = x.sqlMessage ?? x.message ?? "";
      // A database-level refusal names no privilege: only its message is said.
      const p = x.code === "ER_DBACCESS_DENIED_ERROR" ? undefined : findPrivilegeProblem(msg);
      if (!p) return badInput("MissingPrivilege", `${at} lacks a privilege for ${what}: ${msg}`, { cause: err });
      // The server names the account in most refusals; otherwise the user, from any host.
      const account = /'([^']*)'@'([^']*)'/.exec(msg)?.[0] ?? `'${e.user}'@'%'`;
      return badInput(
        "MissingPrivilege",
        `user ${account} lacks the ${p.grant} privilege on ${e.socket ?? `${e.host}:${e.port}`}, needed to ${what} (${p.serverMessage}): GRANT ${p.grant} ON ${p.on} TO ${account}`,
        { cause: err },
      );
    }
    case "ECONNREFUSED":
    case "ENOTFOUND":
    case "EHOSTUNREACH":
    case "ETIMEDOUT":
    case "EAI_AGAIN":
      return failed("DatabaseUnreachable", `cannot reach the database at ${e.host}:${e.port} (${x.code}) to ${what}`, { cause: err });
    default:
      return failed("DatabaseError", `${what} on ${at} failed: ${x.sqlMessage ?? x.message ?? String(err)}`, { cause: err });
  }
}
