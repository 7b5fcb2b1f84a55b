// PostgreSQL through its own client tools (psql, pg_dump, pg_basebackup):
// no driver dependency. Every child gets where to connect from libpq's
// environment (PGHOST, PGPORT, PGUSER, PGDATABASE) and the password from a
// 0600 password file (PGPASSFILE) in a private temp directory that is
// removed afterwards: never from argv, never from PGPASSWORD.
//
// Failures become one-line errors a person can act on: a rejected password
// (BadCredentials), a server that cannot be reached (Unreachable), a missing
// database (NoSuchDatabase), a user without the REPLICATION attribute or a
// pg_hba.conf without a line for it.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { badInput, failed, isReplicatorError, ReplicatorError, tail } from "../../lib/errors.js";
import { captureTool } from "../../lib/exec.js";
import { makePrivateDir } from "../defaults-file.js";
import { describeEndpoint, type Endpoint } from "../endpoint.js";

/** Where the password of an endpoint comes from, for the "how to fix" part of BadCredentials. */
export const DB_PASSWORD_HINT = "REPLICATOR_DB_PASSWORD or --password-file";
export const REPLICATION_PASSWORD_HINT = "REPLICATOR_REPLICATION_PASSWORD or --replication-password-file";

export interface PgEnv {
  /** Environment for a libpq child (merged over the parent's). */
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** Pure: escape a field of a libpq password file (`:` and `\` take a backslash). */
export function escapePassfileField(v: string): string {
  return v.replace(/[\\:]/g, (c) => `\\${c}`);
}

/**
 * Pure: the one line of the password file. Host, port and database are
 * wildcards: the file is private to one connection, and a wildcard avoids
 * libpq's host matching rules (sockets, IPv6 literals).
 */
export function passfileLine(user: string, password: string): string {
  if (/[\r\n]/.test(password)) {
    throw badInput("InvalidPassword", `the password of PostgreSQL user "${user}" contains a line break, which libpq's password file cannot hold`);
  }
  return `*:*:*:${escapePassfileField(user)}:${escapePassfileField(password)}\n`;
}

/** Write the password file (when there is a password) and build a libpq environment for `e`. */
export async function pgEnv(e: Endpoint, opts: { database?: string } = {}): Promise<PgEnv> {
  const env: Record<string, string> = {
    PGHOST: e.socket ?? e.host,
    PGPORT: String(e.port),
    PGUSER: e.user,
    PGDATABASE: opts.database ?? e.database ?? "postgres",
    PGAPPNAME: "replicator",
    PGCONNECT_TIMEOUT: process.env.PGCONNECT_TIMEOUT ?? "10",
  };
  if (e.password === undefined || e.password === "") return { env, cleanup: () => Promise.resolve() };
  const line = passfileLine(e.user, e.password);
  const dir = await makePrivateDir("replicator-cred");
  const file = path.join(dir.path, "pgpass");
  try {
    await writeFile(file, line, { mode: 0o600, flag: "wx" });
  } catch (err) {
    await dir.remove();
    throw err;
  }
  env.PGPASSFILE = file;
  // libpq prefers PGPASSWORD over the password file; an empty one counts as
  // unset, so a stray PGPASSWORD in the parent's environment cannot win.
  env.PGPASSWORD = "";
  return { env, cleanup: () => dir.remove() };
}

/** Run `fn` with a libpq environment for `e`; the password file is removed afterwards. */
export async function withPgEnv<T>(e: Endpoint, fn: (env: Record<string, string>) => Promise<T>, opts: { database?: string } = {}): Promise<T> {
  const p = await pgEnv(e, opts);
  try {
    return await fn(p.env);
  } finally {
    await p.cleanup();
  }
}

/**
 * Pure: recognise a connection or permission failure in a libpq tool's
 * stderr and turn it into a one-line error that names the fix (with no
 * detail: the message says it all, and the CLI prints a detail as an extra
 * log line). Undefined for anything else (a SQL error, a tool's own failure).
 */
export function classifyPgError(stderr: string, e: Pick<Endpoint, "user" | "host" | "port" | "database">, what: string, passwordHint = DB_PASSWORD_HINT): ReplicatorError | undefined {
  const server = `PostgreSQL at ${e.host}:${e.port}`;
  const m = (re: RegExp): RegExpExecArray | null => re.exec(stderr);
  let r: RegExpExecArray | null;
  if ((r = m(/password authentication failed for user "([^"]*)"/))) {
    return badInput("BadCredentials", `${server} rejected the password of user "${r[1] ?? e.user}" (${what}); check ${passwordHint}`);
  }
  if (m(/fe_sendauth: no password supplied/)) {
    return badInput("BadCredentials", `${server} wants a password for user "${e.user}" (${what}) and none was given; set ${passwordHint}`);
  }
  if ((r = m(/FATAL:\s+role "([^"]*)" does not exist/))) {
    return badInput("BadCredentials", `${server} has no user "${r[1] ?? e.user}" (${what}); create it or fix the user in the URL`);
  }
  if ((r = m(/FATAL:\s+database "([^"]*)" does not exist/))) {
    return badInput("NoSuchDatabase", `${server} has no database "${r[1] ?? e.database ?? ""}" (${what}); create it or fix the database in the URL (postgresql://USER@HOST:PORT/DB)`);
  }
  if (m(/must be superuser or replication role to start walsender|permission denied to start WAL sender/)) {
    return badInput("NoReplicationPrivilege", `user "${e.user}" on ${e.host}:${e.port} may not open a replication connection (${what}); ALTER ROLE ${quoteIdent(e.user)} REPLICATION, or use a superuser`);
  }
  if (m(/no pg_hba\.conf entry for replication connection/)) {
    return badInput("ReplicationNotAllowed", `${server}'s pg_hba.conf has no "host replication" line for user "${e.user}" from this host (${what}); add one and reload the server`);
  }
  if (m(/no pg_hba\.conf entry for host/)) {
    return badInput("AccessDenied", `${server}'s pg_hba.conf does not let user "${e.user}" connect from this host to database "${e.database ?? "postgres"}" (${what}); add a line for it and reload the server`);
  }
  if (m(/number of requested standby connections exceeds max_wal_senders|all replication slots are in use/)) {
    return failed("NoWalSender", `${server} has no free WAL sender (${what}); raise max_wal_senders (wal_level must be replica or logical) and restart it`);
  }
  if (m(/Connection refused|could not translate host name|timeout expired|Network is unreachable|No route to host|could not connect to server|No such file or directory\s+Is the server running/)) {
    const why = /could not translate host name/.test(stderr) ? "unknown host" : /timeout expired/.test(stderr) ? "timed out" : "connection refused";
    return failed("Unreachable", `cannot reach PostgreSQL at ${e.host}:${e.port} (${why}) to ${what}; is the server running and listening on that address?`);
  }
  if (m(/the database system is (starting up|shutting down|in recovery mode)/)) {
    return failed("Unreachable", `${server} is not accepting connections yet (${what}): the database system is starting up or shutting down`);
  }
  return undefined;
}

/** Pure: the line of a psql/pg_dump stderr that says what went wrong. */
export function errorLine(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter(Boolean);
  return lines.find((l) => /\b(ERROR|FATAL|PANIC):/.test(l)) ?? lines.find((l) => /error:/.test(l)) ?? lines[lines.length - 1] ?? "";
}

/** Map a CommandFailed from spawnTool (its detail is the stderr tail) to a connection error when it is one. */
export function mapChildError(err: unknown, e: Endpoint, what: string, passwordHint = DB_PASSWORD_HINT): unknown {
  if (!isReplicatorError(err) || err.reason !== "CommandFailed" || !err.detail) return err;
  return classifyPgError(err.detail, e, what, passwordHint) ?? err;
}

/** Pure: a double-quoted SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** Pure: a single-quoted SQL literal (standard_conforming_strings is on since 9.1). */
export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Pure: parse psql's --csv output (RFC 4180; NULL and '' both read as ""). */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  let started = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charAt(i);
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          quoted = false;
        }
      } else {
        field += c;
      }
      continue;
    }
    if (c === '"') {
      quoted = true;
      started = true;
    } else if (c === ",") {
      row.push(field);
      field = "";
      started = true;
    } else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
      started = false;
    } else {
      field += c;
      started = true;
    }
  }
  if (started || field !== "" || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

export interface QueryOptions {
  /** What the query is for, in the error message ("inspect the target"). */
  what: string;
  /** Connection parameters added to the environment's, e.g. "replication=true". */
  conninfo?: string;
  passwordHint?: string;
  /** How NULL is shown (default "", the same as an empty string). */
  nullAs?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * Run SQL (one or more statements, sent on stdin so that nothing of it is on
 * a command line) with psql, and return the rows of every result as text.
 */
export async function pgQuery(e: Endpoint, sql: string, opts: QueryOptions): Promise<string[][]> {
  return withPgEnv(e, async (env) => {
    const args = ["-X", "-w", "--csv", "-t", "-q", "-v", "ON_ERROR_STOP=1", ...(opts.nullAs !== undefined ? ["-P", `null=${opts.nullAs}`] : []), ...(opts.conninfo ? ["-d", opts.conninfo] : []), "-f", "-"];
    const r = await captureTool("psql", args, {
      input: sql,
      env,
      what: opts.what,
      // psql's complaint is near the end; NOTICE lines before it can be many.
      tailBytes: 64 * 1024,
      timeoutMs: opts.timeoutMs ?? 60_000,
      signal: opts.signal,
    });
    if (r.notFound) {
      throw failed("CommandNotFound", `psql is not installed (needed to ${opts.what}); install the PostgreSQL client (Debian: postgresql-client) or put it on PATH`);
    }
    if (r.spawnError) throw failed("CommandFailed", `cannot start psql: ${r.spawnError.message}`, { cause: r.spawnError });
    if (r.exitCode !== 0) {
      const stderr = r.stderr;
      const known = classifyPgError(stderr, e, opts.what, opts.passwordHint);
      if (known) throw known;
      if (r.timedOut) throw failed("Unreachable", `PostgreSQL at ${e.host}:${e.port} did not answer in time (${opts.what})`, { detail: tail(stderr) });
      throw failed("QueryFailed", `${opts.what} on ${describeEndpoint(e)} failed: ${errorLine(stderr).replace(/^psql:<stdin>:\d+:\s*/, "") || `psql exit code ${String(r.exitCode)}`}`, {
        detail: tail(stderr),
      });
    }
    return parseCsv(r.stdout);
  });
}

/** The first column of the first row, or "". */
export async function pgValue(e: Endpoint, sql: string, opts: QueryOptions): Promise<string> {
  const rows = await pgQuery(e, sql, opts);
  return rows[0]?.[0] ?? "";
}

/** Facts about a server every method records: its version and whether it is a standby. */
export async function serverFacts(e: Endpoint, what: string): Promise<{ version: string; inRecovery: boolean; versionNum: number }> {
  const [row] = await pgQuery(e, "SELECT current_setting('server_version'), current_setting('server_version_num'), pg_is_in_recovery()", { what });
  return { version: row?.[0] ?? "", versionNum: Number(row?.[1] ?? 0), inRecovery: row?.[2] === "t" };
}
