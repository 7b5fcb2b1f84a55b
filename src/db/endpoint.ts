// Database endpoints: `mysql://USER@HOST:PORT`. A password never travels in
// the URL (it would end up on a command line and in shell history); it comes
// from the environment, a file, or the config file.
import { readFileSync } from "node:fs";
import { badInput } from "../lib/errors.js";

export interface Endpoint {
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  /** Unix socket, when the URL is mysql://user@localhost?socket=/path. */
  socket?: string | undefined;
}

export function parseEndpoint(url: string, what: string): Omit<Endpoint, "password"> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badInput("InvalidEndpoint", `invalid ${what} URL "${url}"; use mysql://USER@HOST:PORT`);
  }
  if (u.protocol !== "mysql:" && u.protocol !== "mariadb:") {
    throw badInput("InvalidEndpoint", `${what} URL must start with mysql:// (got ${u.protocol}//)`);
  }
  if (u.password) {
    throw badInput(
      "SecretInUrl",
      `${what} URL contains a password; remove it and set REPLICATOR_DB_PASSWORD (or passwordFile in replicator.yaml) instead`,
    );
  }
  if (!u.hostname) throw badInput("InvalidEndpoint", `${what} URL has no host: ${url}`);
  const port = u.port ? Number(u.port) : 3306;
  return {
    host: u.hostname.replace(/^\[|\]$/g, ""),
    port,
    user: decodeURIComponent(u.username) || "root",
    socket: u.searchParams.get("socket") ?? undefined,
  };
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
