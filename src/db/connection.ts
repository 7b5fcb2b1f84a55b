// mysql2 connections for small control statements, with errors mapped to
// one-line messages (wrong password, unreachable server, missing privilege).
import mysql from "mysql2/promise";
import { badInput, failed, ReplicatorError } from "../lib/errors.js";
import { describeEndpoint, type Endpoint } from "./endpoint.js";

export type Conn = mysql.Connection;

export async function connect(e: Endpoint, what = "server"): Promise<Conn> {
  try {
    return await mysql.createConnection({
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
    case "ER_TABLEACCESS_DENIED_ERROR":
      return badInput("MissingPrivilege", `${at} lacks a privilege for ${what}: ${x.sqlMessage ?? x.message ?? ""}`, { cause: err });
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
