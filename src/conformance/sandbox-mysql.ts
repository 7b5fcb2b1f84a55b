// Throw-away MariaDB servers for the conformance kit: mariadbd on a free
// 127.0.0.1 port, in a temp directory. A template data directory is made
// once per process with mariadb-install-db and copied for each server.
// Primaries get a binary log and a replication user; `empty` servers get an
// empty data directory that a physical restore fills before `start()`.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cp, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import mysql from "mysql2/promise";
import type { Endpoint } from "../db/endpoint.js";
import type { SandboxOptions, SandboxServer, StartSandbox } from "./types.js";
import { cachedTemplate, freePort, tailOf } from "./local.js";

const SERVER = process.env.REPLICATOR_KIT_MARIADBD ?? "mariadbd";
const INSTALL_DB = process.env.REPLICATOR_KIT_MARIADB_INSTALL_DB ?? "mariadb-install-db";

const template = cachedTemplate("replicator-kit-template-", async (dir) => {
  try {
    await execa(INSTALL_DB, [
      "--no-defaults",
      `--datadir=${dir}`,
      ...(process.getuid?.() === 0 ? ["--user=root"] : []),
      "--auth-root-authentication-method=normal",
      "--skip-test-db",
      "--skip-name-resolve",
    ]);
  } catch (err) {
    const e = err as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === "ENOENT") throw new Error(`${INSTALL_DB} is not installed; the conformance kit starts its own MariaDB servers (Debian: apt-get install mariadb-server)`, { cause: err });
    throw new Error(`${INSTALL_DB} failed: ${(e.stderr ?? e.shortMessage ?? String(err)).trim().split("\n").pop() ?? ""}`, { cause: err });
  }
  return dir;
});

/**
 * Remove this process's template data directory. It is removed at exit
 * anyway; test runners that end their workers with a signal (no exit event)
 * call this when they are done.
 */
export const removeMysqlSandboxTemplate = template.remove;


async function connectAs(port: number, user: string, password: string | undefined, socket?: string): Promise<mysql.Connection> {
  return mysql.createConnection({
    ...(socket ? { socketPath: socket } : { host: "127.0.0.1", port }),
    user,
    password: password ?? "",
    connectTimeout: 5000,
    multipleStatements: true,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
  });
}

let nextServerId = 1000;

/** Start a throw-away MariaDB server. */
export const startMysqlSandbox: StartSandbox = async (opts: SandboxOptions): Promise<SandboxServer> => {
  const serverId = opts.serverId ?? nextServerId++;
  const password = opts.password ?? randomBytes(12).toString("hex");
  const base = await mkdtemp(path.join(tmpdir(), `replicator-kit-mariadb-${serverId}-`));
  const datadir = path.join(base, "data");
  if (opts.empty) await mkdir(datadir, { mode: 0o750 });
  else await cp(await template.get(), datadir, { recursive: true });
  const socket = path.join(base, "mysqld.sock");
  const errorLog = path.join(base, "error.log");
  const port = await freePort();
  const endpoint: Endpoint = { engine: "mysql", host: "127.0.0.1", port, user: "root", password };

  const args = [
    "--no-defaults",
    `--datadir=${datadir}`,
    `--socket=${socket}`,
    `--port=${port}`,
    "--bind-address=127.0.0.1",
    ...(process.getuid?.() === 0 ? ["--user=root"] : []),
    `--server-id=${serverId}`,
    `--pid-file=${path.join(base, "mysqld.pid")}`,
    `--log-error=${errorLog}`,
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=48M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--max-connections=60",
    "--performance-schema=OFF",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    "--log-bin-trust-function-creators=1",
    ...(opts.primary ? [`--log-bin=${path.join(datadir, "mysql-bin")}`, "--binlog-format=ROW"] : []),
  ];

  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const waitUp = async (): Promise<void> => {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child?.exitCode !== null && child?.exitCode !== undefined) {
        throw new Error(`mariadbd exited with code ${child.exitCode} on ${datadir}: ${(await tailOf(errorLog, "(no error log)", 3)).replace(/\n/g, " | ")}`);
      }
      try {
        const c = await connectAs(port, "root", password);
        await c.end();
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        // Up, but the accounts are not ours yet (a fresh template: root has no password).
        if (code === "ER_ACCESS_DENIED_ERROR" || code === "ER_HOST_NOT_PRIVILEGED") return;
        if (Date.now() > deadline) throw new Error(`mariadbd on port ${port} did not accept connections within 60 s: ${(await tailOf(errorLog, "(no error log)", 3)).replace(/\n/g, " | ")}`, { cause: err });
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  const start = async (): Promise<void> => {
    if (child && child.exitCode === null) return;
    const c = spawn(SERVER, args, { stdio: "ignore" });
    child = c;
    exited = new Promise<void>((resolve) => {
      c.once("exit", () => { resolve(); });
      c.once("error", () => { resolve(); });
    });
    const spawnFailed = new Promise<never>((_, reject) => {
      c.once("error", (err: NodeJS.ErrnoException) => {
        reject(new Error(err.code === "ENOENT" ? `${SERVER} is not installed; the conformance kit starts its own MariaDB servers (Debian: apt-get install mariadb-server)` : err.message, { cause: err }));
      });
    });
    spawnFailed.catch(() => undefined);
    await Promise.race([waitUp(), spawnFailed]);
  };

  const stop = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGTERM");
    const timer = setTimeout(() => c.kill("SIGKILL"), 60_000);
    await exited;
    clearTimeout(timer);
  };

  // An empty server is started by the caller, after a physical restore filled its data directory.
  if (!opts.empty) {
    try {
      await start();
      // Set-up stays out of the binlog, so a fresh primary has no GTIDs of its own.
      const c = await connectAs(port, "root", undefined, socket);
      try {
        await c.query("SET SESSION sql_log_bin=0");
        await c.query("ALTER USER root@localhost IDENTIFIED BY ?", [password]);
        await c.query("CREATE USER IF NOT EXISTS root@'127.0.0.1'");
        await c.query("ALTER USER root@'127.0.0.1' IDENTIFIED BY ?", [password]);
        await c.query("GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION");
        if (opts.primary && opts.replicationUser) {
          const { user, password: rp } = opts.replicationUser;
          await c.query("CREATE USER IF NOT EXISTS ?@'127.0.0.1' IDENTIFIED BY ?", [user, rp]);
          await c.query("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO ?@'127.0.0.1'", [user]);
        }
      } finally {
        await c.end();
      }
    } catch (err) {
      // Nobody gets a handle to destroy: clean up here.
      await stop();
      await rm(base, { recursive: true, force: true });
      throw err;
    }
  }

  const server: SandboxServer = {
    engine: "mysql",
    endpoint,
    datadir,
    start,
    stop,
    destroy: async () => {
      await stop();
      await rm(base, { recursive: true, force: true });
    },
    query: async (sql) => {
      const c = await connectAs(port, "root", password);
      try {
        const [rows] = await c.query({ sql, rowsAsArray: true });
        if (!Array.isArray(rows)) return [];
        return (rows as unknown[][]).map((r) => r.map((v) => (v === null ? "NULL" : Buffer.isBuffer(v) ? v.toString("hex") : String(v as string | number))));
      } finally {
        await c.end();
      }
    },
    logTail: () => tailOf(errorLog, "(no error log)"),
  };
  return server;
};
