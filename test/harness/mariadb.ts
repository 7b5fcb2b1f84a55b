// Starts real MariaDB servers (mariadbd) on loopback ports in temp datadirs.
// A template datadir is initialised once per process with mariadb-install-db
// and copied for each server, which keeps a server start near one second.
import { spawn, type ChildProcess } from "node:child_process";
import { cp, mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import mysql from "mysql2/promise";
import { freePort } from "./ports.js";

export interface MariaDbOptions {
  serverId?: number;
  /** Enable the binary log (needed on a master, and on a slave that is backed up). */
  binlog?: boolean;
  /** Extra mariadbd flags, e.g. ["--log-slave-updates"]. */
  args?: string[];
  /** Give root a password (the default is none). */
  rootPassword?: string;
  /** Reuse this datadir instead of a fresh copy of the template. */
  datadir?: string;
  /** Listen on this port (e.g. a server restarted on its datadir keeps its address); default: a free one. */
  port?: number;
}

export interface MariaDb {
  host: string;
  port: number;
  serverId: number;
  datadir: string;
  socket: string;
  /** mysql://root@127.0.0.1:PORT */
  url: string;
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  stop(): Promise<void>;
  /** Stop and remove the datadir. */
  destroy(): Promise<void>;
}

let templateDir: Promise<string> | undefined;

async function template(): Promise<string> {
  templateDir ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-mariadb-template-"));
    await execa("mariadb-install-db", [
      "--no-defaults",
      `--datadir=${dir}`,
      "--user=root",
      "--auth-root-authentication-method=normal",
      "--skip-test-db",
      "--skip-name-resolve",
    ]);
    return dir;
  })();
  return templateDir;
}

let nextServerId = 100;

export async function startMariaDb(opts: MariaDbOptions = {}): Promise<MariaDb> {
  const serverId = opts.serverId ?? nextServerId++;
  const base = await mkdtemp(path.join(tmpdir(), `replicator-mariadb-${serverId}-`));
  const datadir = opts.datadir ?? path.join(base, "data");
  if (!opts.datadir) await cp(await template(), datadir, { recursive: true });
  else await mkdir(datadir, { recursive: true });
  const socket = path.join(base, "mysqld.sock");
  const port = opts.port ?? (await freePort());
  const args = [
    "--no-defaults",
    `--datadir=${datadir}`,
    `--socket=${socket}`,
    `--port=${port}`,
    "--bind-address=127.0.0.1",
    "--user=root",
    `--server-id=${serverId}`,
    `--pid-file=${path.join(base, "mysqld.pid")}`,
    `--log-error=${path.join(base, "error.log")}`,
    "--skip-name-resolve",
    "--innodb-buffer-pool-size=64M",
    "--innodb-log-file-size=48M",
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
    "--skip-innodb-doublewrite",
    "--max-connections=100",
    "--performance-schema=OFF",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_general_ci",
    ...(opts.binlog ? [`--log-bin=${path.join(datadir, "mysql-bin")}`, "--binlog-format=ROW"] : []),
    ...(opts.args ?? []),
  ];
  const child = spawn("mariadbd", args, { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => { resolve(); }));
  await waitForServer(port, child, path.join(base, "error.log"));
  // The harness's own set-up is kept out of the binlog, so a fresh server has
  // no GTIDs of its own (as a freshly provisioned pod would not).
  await withConnection(port, undefined, async (c) => {
    await c.query("SET SESSION sql_log_bin=0");
    if (opts.rootPassword) {
      await c.query("ALTER USER root@localhost IDENTIFIED BY ?", [opts.rootPassword]);
      await c.query("CREATE USER IF NOT EXISTS root@'127.0.0.1' IDENTIFIED BY ?", [opts.rootPassword]);
    } else {
      await c.query("CREATE USER IF NOT EXISTS root@'127.0.0.1'");
    }
    await c.query("GRANT ALL ON *.* TO root@'127.0.0.1' WITH GRANT OPTION");
  });
  let stopped = false;
  const server: MariaDb = {
    host: "127.0.0.1",
    port,
    serverId,
    datadir,
    socket,
    url: `mysql://root@127.0.0.1:${port}`,
    query: async <T>(sql: string, params?: unknown[]) =>
      withConnection(port, opts.rootPassword, async (c) => {
        const [rows] = await c.query(sql, params);
        return rows as T[];
      }),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
    },
    destroy: async () => {
      await server.stop();
      await rm(base, { recursive: true, force: true });
      if (opts.datadir) await rm(opts.datadir, { recursive: true, force: true });
    },
  };
  return server;
}

async function withConnection<T>(
  port: number,
  password: string | undefined,
  fn: (c: mysql.Connection) => Promise<T>,
): Promise<T> {
  const c = await mysql.createConnection({
    host: "127.0.0.1",
    port,
    user: "root",
    password: password ?? "",
    multipleStatements: true,
  });
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function waitForServer(port: number, child: ChildProcess, errorLog: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`mariadbd exited with ${child.exitCode}; see ${errorLog}`);
    }
    try {
      // root@localhost over TCP matches root@localhost with skip-name-resolve off;
      // with skip-name-resolve the first connection is as root@localhost via socket rules.
      const c = await mysql.createConnection({ host: "127.0.0.1", port, user: "root", password: "" });
      await c.end();
      return;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === "ER_ACCESS_DENIED_ERROR" || code === "ER_HOST_NOT_PRIVILEGED") {
        // The server is up; root@127.0.0.1 does not exist yet in the template.
        return;
      }
      if (Date.now() > deadline) throw new Error(`mariadbd on port ${port} did not start; see ${errorLog}`, { cause: err });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Configure `slave` to replicate from `master` with GTID and wait until both threads run. */
export async function startReplication(master: MariaDb, slave: MariaDb, opts: { user?: string; password?: string } = {}): Promise<void> {
  const user = opts.user ?? "repl";
  const password = opts.password ?? "replpass";
  await master.query(`CREATE USER IF NOT EXISTS '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  await master.query(`GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '${user}'@'127.0.0.1'`);
  await slave.query(
    `CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=${master.port}, MASTER_USER='${user}', MASTER_PASSWORD='${password}', MASTER_USE_GTID=slave_pos`,
  );
  await slave.query("START SLAVE");
  await waitFor(async () => {
    const [s] = await slave.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
    return s?.Slave_IO_Running === "Yes" && s.Slave_SQL_Running === "Yes";
  }, "replication to start");
}

/** Wait until the slave has applied everything the master has logged. */
export async function waitCaughtUp(master: MariaDb, slave: MariaDb): Promise<void> {
  const [m] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
  await slave.query("SELECT MASTER_GTID_WAIT(?, 30)", [m?.pos ?? ""]);
}

export async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** CHECKSUM TABLE of every base table in the given schemas, keyed `db.table`. */
export async function checksums(server: MariaDb, schemas: string[]): Promise<Record<string, string>> {
  const tables = await server.query<{ s: string; t: string }>(
    `SELECT table_schema AS s, table_name AS t FROM information_schema.tables
     WHERE table_type='BASE TABLE' AND table_schema IN (?) ORDER BY 1, 2`,
    [schemas],
  );
  const out: Record<string, string> = {};
  for (const { s, t } of tables) {
    const [row] = await server.query<{ Checksum: string | number | null }>(`CHECKSUM TABLE \`${s}\`.\`${t}\``);
    out[`${s}.${t}`] = String(row?.Checksum);
  }
  return out;
}

export async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}
