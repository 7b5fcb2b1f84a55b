// Database endpoints: `mysql://USER@HOST:PORT` (also mariadb://) and
// `postgresql://USER@HOST:PORT/DATABASE` (also postgres://). A password never travels in
// the URL (it would end up on a command line and in shell history); it comes
// from the environment, a file, or the config file.
import { readFileSync } from "node:fs";
import { badInput } from "../lib/errors.js";

export type Engine = "mysql" | "postgresql";

export interface Endpoint {
  /** mysql (MySQL/MariaDB) or postgresql. */
  engine: Engine;
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  /** Unix socket, when the URL is mysql://user@localhost?socket=/path. */
  socket?: string | undefined;
  /** PostgreSQL: the database to connect to (the URL's path; default "postgres"). */
  database?: string | undefined;
}

export function parseEndpoint(url: string, what: string): Omit<Endpoint, "password"> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badInput("InvalidEndpoint", `invalid ${what} URL "${url}"; use mysql://USER@HOST:PORT or postgresql://USER@HOST:PORT/DB`);
  }
  const engine: Engine | undefined =
    u.protocol === "mysql:" || u.protocol === "mariadb:" ? "mysql" : u.protocol === "postgresql:" || u.protocol === "postgres:" ? "postgresql" : undefined;
  if (!engine) {
    throw badInput("InvalidEndpoint", `${what} URL must start with mysql:// or postgresql:// (got ${u.protocol}//)`);
  }
  if (u.password) {
    throw badInput(
      "SecretInUrl",
      `${what} URL contains a password; remove it and set REPLICATOR_DB_PASSWORD (or passwordFile in replicator.yaml) instead`,
    );
  }
  if (!u.hostname) throw badInput("InvalidEndpoint", `${what} URL has no host: ${url}`);
  const pg = engine === "postgresql";
  const port = u.port ? Number(u.port) : pg ? 5432 : 3306;
  const database = decodeURIComponent(u.pathname.replace(/^\//, ""));
  return {
    engine,
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port,
    user: decodeURIComponent(u.username) || (pg ? "postgres" : "root"),
    socket: u.searchParams.get("socket") ?? undefined,
    ...(pg ? { database: database || "postgres" } : {}),
  };
}

/** The URL form of an endpoint, without a password. */
export function endpointUrl(e: Pick<Endpoint, "engine" | "user" | "host" | "port" | "database">): string {
  const host = e.host.includes(":") ? `[${e.host}]` : e.host;
  const base = `${e.engine === "postgresql" ? "postgresql" : "mysql"}://${encodeURIComponent(e.user)}@${host}:${e.port}`;
  return e.engine === "postgresql" ? `${base}/${encodeURIComponent(e.database ?? "postgres")}` : base;
}

/** Read a secret from a file, trimming one trailing newline. */
export function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, "utf8").replace(/\r?\n$/, "");
  } catch (err) {
    throw badInput("SecretFileUnreadable", `cannot read ${what} file ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

export function describeEndpoint(e: Pick<Endpoint, "user" | "host" | "port">): string {
  return `${e.user}@${e.host}:${e.port}`;
}
