// Throw-away PostgreSQL servers for the conformance kit (and the PostgreSQL
// tests): `postgres` on a free 127.0.0.1 port, in a temp directory. A
// template cluster is made once per process with initdb and copied for each
// server.
//
// PostgreSQL refuses to run as root: when the kit runs as root, initdb and
// the server run as the `postgres` OS user (REPLICATOR_KIT_PG_USER), and
// every directory is given to that user. The binaries are found on PATH, in
// REPLICATOR_KIT_PG_BINDIR, or in the newest /usr/lib/postgresql/*/bin.
//
// Every server: wal_level=replica with WAL senders and wal_keep_size for
// standbys, password (SCRAM) authentication over TCP for everything
// including replication connections, trust on its private Unix socket for
// the set-up. The superuser is `postgres`; its password is `opts.password`
// or one random password per process, so that the roles inside a physically
// restored data directory (copied from the source) still match `endpoint`.
// Port and socket directory are given on the command line, never in the
// configuration files, which a base backup copies to its restores.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, readdirSync, realpathSync } from "node:fs";
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import type { Endpoint } from "../db/endpoint.js";
import { pgQuery, quoteIdent, quoteLiteral } from "../db/postgres/client.js";
import type { SandboxOptions, SandboxServer, StartSandbox } from "./types.js";
import { cachedTemplate, freePort, tailOf } from "./local.js";

const PROCESS_PASSWORD = randomBytes(12).toString("hex");

/** Settings of every sandbox server (appended to the template's postgresql.conf). */
const SETTINGS = [
  "wal_level = replica",
  "max_wal_senders = 10",
  "max_replication_slots = 10",
  // Tests take a backup and start its standby seconds later: 256 MB of WAL is plenty.
  "wal_keep_size = '256MB'",
  "hot_standby = on",
  "fsync = off",
  "shared_buffers = '32MB'",
  "max_connections = 40",
  "password_encryption = 'scram-sha-256'",
  "log_line_prefix = '%m [%p] '",
];

const HBA = ["local all all trust", "host all all 127.0.0.1/32 scram-sha-256", "host replication all 127.0.0.1/32 scram-sha-256", ""].join("\n");

/** Where initdb and postgres are. */
export function pgBinDir(): string {
  const fromEnv = process.env.REPLICATOR_KIT_PG_BINDIR;
  if (fromEnv) return fromEnv;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    // A PATH entry may hold links to a few of the tools (initdb, postgres, but no
    // pg_isready): the directory they point into has all of them.
    if (dir && existsSync(path.join(dir, "initdb")) && existsSync(path.join(dir, "postgres"))) return path.dirname(realpathSync(path.join(dir, "initdb")));
  }
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const dir = path.join(root, v, "bin");
    if (existsSync(path.join(dir, "initdb"))) return dir;
  }
  throw new Error("initdb/postgres not found; the conformance kit starts its own PostgreSQL servers (Debian: apt-get install postgresql), or set REPLICATOR_KIT_PG_BINDIR");
}

/** The OS user the servers run as: ourselves, or `postgres` when we are root. */
export function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const name = process.env.REPLICATOR_KIT_PG_USER ?? "postgres";
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.split(":")[0] === name);
  const [, , uid, gid] = line?.split(":") ?? [];
  if (uid === undefined || gid === undefined) throw new Error(`running as root, and there is no OS user "${name}" to run PostgreSQL as (PostgreSQL refuses root); create it or set REPLICATOR_KIT_PG_USER`);
  return { uid: Number(uid), gid: Number(gid) };
}

/** Give a path to the server's OS user (when we are root). */
async function own(p: string): Promise<void> {
  const u = serverUser();
  if (u) await chown(p, u.uid, u.gid);
}

const template = cachedTemplate("replicator-kit-pg-template-", async (base) => {
  await own(base);
  const dir = path.join(base, "data");
  const pwfile = path.join(base, "pw");
  await writeFile(pwfile, `${PROCESS_PASSWORD}\n`, { mode: 0o600 });
  await own(pwfile);
  const u = serverUser();
  try {
    await execa(
      path.join(pgBinDir(), "initdb"),
      ["-D", dir, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", `--pwfile=${pwfile}`, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
      { ...(u ? { uid: u.uid, gid: u.gid } : {}), cwd: base },
    );
  } catch (err) {
    const e = err as { stderr?: string; shortMessage?: string };
    throw new Error(`initdb failed: ${(e.stderr ?? e.shortMessage ?? String(err)).trim().split("\n").pop() ?? ""}`, { cause: err });
  } finally {
    await rm(pwfile, { force: true });
  }
  const conf = path.join(dir, "postgresql.conf");
  await writeFile(conf, `${await readFile(conf, "utf8")}\n# replicator conformance sandbox\n${SETTINGS.join("\n")}\n`);
  await writeFile(path.join(dir, "pg_hba.conf"), HBA);
  return dir;
});

/**
 * Remove this process's template cluster. It is removed at exit anyway;
 * test runners that end their workers with a signal (no exit event) call
 * this when they are done.
 */
export const removePostgresSandboxTemplate = template.remove;


/** Start a throw-away PostgreSQL server. */
export const startPostgresSandbox: StartSandbox = async (opts: SandboxOptions): Promise<SandboxServer> => {
  const password = opts.password ?? PROCESS_PASSWORD;
  const base = await mkdtemp(path.join(tmpdir(), "replicator-kit-pg-"));
  await own(base);
  const datadir = path.join(base, "data");
  if (opts.empty) {
    await mkdir(datadir, { mode: 0o700 });
    await own(datadir);
  } else {
    // cp -a keeps the owner and the 0700/0600 modes PostgreSQL insists on.
    await execa("cp", ["-a", await template.get(), datadir]);
  }
  const logFile = path.join(base, "server.log");
  const port = await freePort();
  const endpoint: Endpoint = { engine: "postgresql", host: "127.0.0.1", port, user: "postgres", password, database: "postgres" };
  const local: Endpoint = { ...endpoint, host: base, socket: base, password: undefined };
  const bin = pgBinDir();
  const u = serverUser();
  const args = ["-D", datadir, "-p", String(port), "-k", base, "-c", "listen_addresses=127.0.0.1", "-c", "logging_collector=off"];

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const ready = async (): Promise<boolean> => {
    const r = await execa(path.join(bin, "pg_isready"), ["-q", "-h", base, "-p", String(port), "-t", "2"], { reject: false });
    return r.exitCode === 0;
  };

  const start = async (): Promise<void> => {
    if (child && child.exitCode === null && child.signalCode === null) return;
    const fd = openSync(logFile, "a");
    let c: ChildProcess;
    try {
      c = spawn(path.join(bin, "postgres"), args, { stdio: ["ignore", fd, fd], ...(u ? { uid: u.uid, gid: u.gid } : {}) });
    } finally {
      closeSync(fd);
    }
    child = c;
    exited = new Promise<void>((resolve) => {
      c.once("exit", () => { resolve(); });
      c.once("error", () => { resolve(); });
    });
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`postgres exited with code ${String(c.exitCode ?? c.signalCode)} on ${datadir}: ${(await tailOf(logFile, "(no server log)", 4)).replace(/\n/g, " | ")}`);
      }
      if (await ready()) return;
      if (Date.now() > deadline) throw new Error(`postgres on port ${port} did not accept connections within 90 s: ${(await tailOf(logFile, "(no server log)", 4)).replace(/\n/g, " | ")}`);
      await new Promise((r) => setTimeout(r, 150));
    }
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    // SIGINT: a fast shutdown (clients disconnected, a clean checkpoint).
    c.kill("SIGINT");
    const timer = setTimeout(() => c.kill("SIGQUIT"), 60_000);
    await exited;
    clearTimeout(timer);
  };

  if (!opts.empty) {
    try {
      await start();
      const setup = [`ALTER ROLE postgres PASSWORD ${quoteLiteral(password)};`];
      if (opts.replicationUser) {
        const { user, password: rp } = opts.replicationUser;
        // pg_monitor lets the restore's check list the primary's WAL (pg_ls_waldir).
        setup.push(`CREATE ROLE ${quoteIdent(user)} LOGIN REPLICATION PASSWORD ${quoteLiteral(rp)};`, `GRANT pg_monitor TO ${quoteIdent(user)};`);
      }
      await pgQuery(local, setup.join("\n"), { what: "set up the sandbox" });
    } catch (err) {
      // Nobody gets a handle to destroy: clean up here.
      await stop();
      await rm(base, { recursive: true, force: true });
      throw err;
    }
  }

  return {
    engine: "postgresql",
    endpoint,
    datadir,
    start,
    stop,
    destroy: async () => {
      await stop();
      await rm(base, { recursive: true, force: true });
    },
    query: (sql) => pgQuery(endpoint, sql, { what: "run a sandbox query", nullAs: "NULL" }),
    logTail: () => tailOf(logFile, "(no server log)"),
  };
};
