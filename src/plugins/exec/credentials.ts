// Credentials for a plugin: a 0600 file in the run's private directory, and
// the connection variables that point at it. The password itself is never an
// argument or an environment value.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import type { Endpoint } from "../../db/endpoint.js";
import type { ConnectionPrefix } from "./protocol.js";

function optionValue(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** A MySQL option file: `[client]` user, password, and host/port (or socket), so `--defaults-file=F` is all a tool needs. */
export function mysqlOptionFile(e: Endpoint): string {
  const lines = ["[client]", `user=${optionValue(e.user)}`];
  if (e.password !== undefined && e.password !== "") lines.push(`password=${optionValue(e.password)}`);
  if (e.socket) lines.push(`socket=${optionValue(e.socket)}`);
  else lines.push(`host=${optionValue(e.host)}`, `port=${e.port}`, "protocol=TCP");
  return `${lines.join("\n")}\n`;
}

function pgpassField(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/:/g, "\\:");
}

/**
 * A libpq password file: one line `*:*:*:user:password`. Host, port and
 * database are wildcards: the file serves one connection, and a wildcard
 * avoids libpq's host matching rules (sockets, IPv6 literals).
 */
export function pgpassFile(e: Endpoint): string {
  return `${["*", "*", "*", pgpassField(e.user), pgpassField(e.password ?? "")].join(":")}\n`;
}

/**
 * Write the credentials file for `e` into `dir` (the run's 0700 directory)
 * and return the connection variables that describe it.
 */
export async function connectionEnv(prefix: ConnectionPrefix, e: Endpoint, dir: string): Promise<Record<string, string>> {
  const tag = prefix === "REPLICATOR_DB" ? "db" : "master";
  const env: Record<string, string> = {
    [`${prefix}_ENGINE`]: e.engine,
    [`${prefix}_HOST`]: e.host,
    [`${prefix}_PORT`]: String(e.port),
    [`${prefix}_USER`]: e.user,
  };
  if (e.socket) env[`${prefix}_SOCKET`] = e.socket;
  if (e.engine === "postgresql") {
    env[`${prefix}_DATABASE`] = e.database ?? "postgres";
    const file = path.join(dir, `${tag}.pgpass`);
    await writeFile(file, pgpassFile(e), { mode: 0o600 });
    env[`${prefix}_PASSFILE`] = file;
  } else {
    const file = path.join(dir, `${tag}.cnf`);
    await writeFile(file, mysqlOptionFile(e), { mode: 0o600 });
    env[`${prefix}_DEFAULTS_FILE`] = file;
  }
  return env;
}
