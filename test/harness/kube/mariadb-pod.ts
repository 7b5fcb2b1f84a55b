// The "mariadb" runner of the test kubelet: a real mariadbd per pod, on the
// pod's own loopback IP, with its datadir on the pod's PVC directory.
// A template datadir (mariadb-install-db, plus root@'%' with no password) is
// copied into empty volumes. It is built once per mariadbd version and kept in
// the temp dir (<tmp>/replicator-kubelet-mariadb-template-<hash>), so test
// runs neither leak nor rebuild it.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rename, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import mysql from "mysql2/promise";

/** Bump when the template's recipe (flags, set-up SQL) changes. */
const TEMPLATE_RECIPE = "v1";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let template: Promise<string> | undefined;

/** The initialised template datadir (built on first use if no earlier run left one). */
export function mariadbTemplate(): Promise<string> {
  template ??= makeTemplate().catch((err: unknown) => {
    template = undefined;
    throw err;
  });
  return template;
}

async function makeTemplate(): Promise<string> {
  const { stdout: version } = await execa("mariadbd", ["--version"]);
  const key = createHash("sha256").update(`${version}\n${TEMPLATE_RECIPE}`).digest("hex").slice(0, 12);
  const final = path.join(tmpdir(), `replicator-kubelet-mariadb-template-${key}`);
  const done = (): boolean => existsSync(path.join(final, "data", "mysql"));
  if (done()) return path.join(final, "data");
  // Built aside and renamed into place, so a concurrent run sees all or nothing.
  const base = await mkdtemp(path.join(tmpdir(), "replicator-kubelet-mariadb-build-"));
  try {
    await initTemplate(base);
    await rename(base, final);
  } catch (err) {
    await rm(base, { recursive: true, force: true });
    if (!done()) throw err; // else another run won the rename
  }
  return path.join(final, "data");
}

async function initTemplate(base: string): Promise<void> {
  const datadir = path.join(base, "data");
  await execa("mariadb-install-db", [
    "--no-defaults",
    `--datadir=${datadir}`,
    "--user=root",
    "--auth-root-authentication-method=normal",
    "--skip-test-db",
    "--skip-name-resolve",
  ]);
  // Start it once without networking to add root@'%' (pods are reached over
  // TCP from other addresses), keeping the set-up out of the binlog.
  const socket = path.join(base, "s.sock");
  const child = spawn(
    "mariadbd",
    ["--no-defaults", `--datadir=${datadir}`, `--socket=${socket}`, "--skip-networking", "--user=root", `--pid-file=${path.join(base, "t.pid")}`,
      "--innodb-buffer-pool-size=32M", "--performance-schema=OFF"],
    { stdio: "ignore" },
  );
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`template mariadbd exited with ${child.exitCode}`);
      try {
        const c = await mysql.createConnection({ socketPath: socket, user: "root", password: "", multipleStatements: true });
        try {
          await c.query(
            // Anonymous users would shadow root@'%' for some client hosts.
            "SET SESSION sql_log_bin=0; DELETE FROM mysql.global_priv WHERE User=''; " +
              "CREATE USER IF NOT EXISTS root@'%'; GRANT ALL ON *.* TO root@'%' WITH GRANT OPTION; FLUSH PRIVILEGES",
          );
          await c.query("SHUTDOWN");
        } finally {
          c.destroy();
        }
        break;
      } catch (err) {
        if (Date.now() > deadline) throw new Error("template mariadbd did not come up", { cause: err });
        await sleep(100);
      }
    }
    await exited;
  } finally {
    if (child.exitCode === null) child.kill("SIGKILL");
  }
  await rm(socket, { force: true });
  await rm(path.join(base, "t.pid"), { force: true });
}

/** Fill an empty (no `mysql` subdirectory) datadir from the template. */
export async function ensureDatadir(datadir: string): Promise<void> {
  await mkdir(datadir, { recursive: true });
  const entries = await readdir(datadir);
  if (entries.includes("mysql")) return;
  await cp(await mariadbTemplate(), datadir, { recursive: true });
}

export interface MariadbdFlags {
  datadir: string;
  ip: string;
  port: number;
  socket: string;
  pidFile: string;
  serverId: number;
  /** Extra `--flags` from the container's command/args, appended last so they win. */
  extra: string[];
}

/** mariadbd's command line: like test/harness/mariadb.ts, with the binlog on. Errors go to stderr (the container log). */
export function mariadbdArgs(f: MariadbdFlags): string[] {
  return [
    "--no-defaults",
    `--datadir=${f.datadir}`,
    `--socket=${f.socket}`,
    `--port=${f.port}`,
    `--bind-address=${f.ip}`,
    "--user=root",
    `--server-id=${f.serverId}`,
    `--pid-file=${f.pidFile}`,
    `--report-host=${f.ip}`,
    `--report-port=${f.port}`,
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
    `--log-bin=${path.join(f.datadir, "mysql-bin")}`,
    `--relay-log=${path.join(f.datadir, "relay-bin")}`,
    "--binlog-format=ROW",
    "--log-slave-updates",
    ...f.extra,
  ];
}

/** True when root can log in over TCP at ip:port. */
export async function canLogin(ip: string, port: number): Promise<boolean> {
  try {
    const c = await mysql.createConnection({ host: ip, port, user: "root", password: "", connectTimeout: 2_000 });
    await c.end();
    return true;
  } catch {
    return false;
  }
}

/** True when nothing listens on ip:port and the address is usable. */
export function canBind(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once("error", () => { resolve(false); });
    srv.listen(port, ip, () => {
      srv.close(() => { resolve(true); });
    });
  });
}
