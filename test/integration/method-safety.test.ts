// The database side of "never wrong on the data path", against real MariaDB:
// a restore proves the target user can recreate what it drops before it
// drops anything; a backup that lacks a privilege says which, and the GRANT;
// a slave backup restarts only the replication threads it stopped itself and
// says when it found replication already stopped.
import { execa } from "execa";
import { statSync } from "node:fs";
import { chmod, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Endpoint } from "../../src/db/endpoint.js";
import { restoreTargetFor } from "../../src/db/target.js";
import { silentLogger } from "../../src/lib/log.js";
import type { BackupMethod, BackupOutcome, ReplicationHooks } from "../../src/plugins/contract.js";
import { mariabackupMethod } from "../../src/plugins/mariabackup/index.js";
import { mysqldumpMethod } from "../../src/plugins/mysqldump/index.js";
import { privateDirsOf } from "../../src/db/defaults-file.js";
import { CLI, runCli } from "../harness/cli.js";
import { count, seedShop } from "../harness/fixtures.js";
import { startMariaDb, startReplication, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";

const servers: MariaDb[] = [];
let work: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "replicator-method-safety-"));
});

async function newServer(opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb(opts);
  servers.push(s);
  return s;
}

function endpoint(s: MariaDb, user: string, password: string): Endpoint {
  return { engine: "mysql", host: s.host, port: s.port, user, password };
}

async function createUser(s: MariaDb, user: string, password: string, grants: string[]): Promise<void> {
  await s.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  for (const g of grants) await s.query(`GRANT ${g} TO '${user}'@'127.0.0.1'`);
}

async function probes(s: MariaDb): Promise<string[]> {
  const rows = await s.query<{ s: string }>("SELECT schema_name AS s FROM information_schema.schemata WHERE schema_name LIKE '\\_\\_replicator\\_probe%'");
  return rows.map((r) => r.s);
}

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
  await rm(work, { recursive: true, force: true });
});

interface HookCall { hook: "stopped" | "restarted"; threads?: string[] }

/** Run a method's backup to the end, in process: its outcome or its error, the stream (read into memory), the hooks called. */
async function runBackup(
  method: BackupMethod,
  source: Endpoint,
  options: Record<string, unknown> = {},
): Promise<{ outcome?: BackupOutcome; error?: Error; dump: string; hooks: HookCall[] }> {
  const hooks: HookCall[] = [];
  const replication: ReplicationHooks = {
    stopped: (info) => { hooks.push({ hook: "stopped", threads: info.threads }); return Promise.resolve(); },
    restarted: () => { hooks.push({ hook: "restarted" }); return Promise.resolve(); },
  };
  const chunks: Buffer[] = [];
  try {
    const run = await method.backup({ source, options, log: silentLogger(), signal: new AbortController().signal, replication });
    const reading = (async () => { for await (const c of run.stream) chunks.push(c as Buffer); })().catch(() => undefined);
    const [outcome] = await Promise.all([run.outcome, reading]);
    return { outcome, dump: Buffer.concat(chunks).toString("utf8"), hooks };
  } catch (err) {
    return { error: err as Error, dump: Buffer.concat(chunks).toString("utf8"), hooks };
  }
}

/** Run a method's backup to the end, in process; the stream is read into memory. */
async function backup(method: BackupMethod, source: Endpoint, options: Record<string, unknown> = {}): Promise<{ outcome: BackupOutcome; dump: string; hooks: HookCall[] }> {
  const hooks: HookCall[] = [];
  const replication: ReplicationHooks = {
    stopped: (info) => { hooks.push({ hook: "stopped", threads: info.threads }); return Promise.resolve(); },
    restarted: () => { hooks.push({ hook: "restarted" }); return Promise.resolve(); },
  };
  const run = await method.backup({ source, options, log: silentLogger(), signal: new AbortController().signal, replication });
  const chunks: Buffer[] = [];
  const reading = (async () => { for await (const c of run.stream) chunks.push(c as Buffer); })();
  const [outcome] = await Promise.all([run.outcome, reading]);
  return { outcome, dump: Buffer.concat(chunks).toString("utf8"), hooks };
}

/** The error a backup ends with (the stream may end or fail first). */
async function backupError(method: BackupMethod, source: Endpoint, options: Record<string, unknown> = {}): Promise<Error> {
  const r = await runBackup(method, source, options);
  if (!r.error) throw new Error("the backup succeeded");
  return r.error;
}

interface Status { Slave_IO_Running: string; Slave_SQL_Running: string }
async function threads(s: MariaDb): Promise<string> {
  const [r] = await s.query<Status>("SHOW SLAVE STATUS");
  return `IO=${r?.Slave_IO_Running ?? "-"} SQL=${r?.Slave_SQL_Running ?? "-"}`;
}

describe("restore preflight (checkCanRestore)", () => {
  let target: MariaDb;
  beforeAll(async () => {
    target = await newServer({ binlog: true });
    await seedShop(target, { rows: 200 });
  });

  it("passes for a user that can do what the load does, and leaves nothing behind", async () => {
    await createUser(target, "full", "pw", ["ALL ON *.*"]);
    const [before] = await target.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    await (await restoreTargetFor(endpoint(target, "full", "pw"))).checkCanRestore();
    expect(await probes(target)).toEqual([]);
    // The probe ran with sql_log_bin=0: nothing of it reached the binlog.
    const [after] = await target.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(after?.pos).toBe(before?.pos);
  });

  it("refuses a user with SELECT and DROP but no CREATE, and the target's data is untouched", async () => {
    await createUser(target, "nocreate", "pw", ["SELECT, DROP, INSERT, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nocreate", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege", kind: "BadInput" });
    const msg = (err as Error).message;
    expect(msg).toMatch(/^target user 'nocreate'@'127\.0\.0\.1' cannot create a database on 127\.0\.0\.1:\d+ \(.*\); the restore would drop databases it cannot recreate: GRANT CREATE ON \*\.\* TO 'nocreate'@'127\.0\.0\.1', or restore as a user that has it$/);
    expect(await count(target, "shop.customers")).toBe(200);
    expect(await probes(target)).toEqual([]);
  });

  it("refuses a user with CREATE but no DROP before creating anything it could not drop", async () => {
    await createUser(target, "nodrop", "pw", ["SELECT, CREATE, INSERT, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nodrop", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot drop a database");
    expect((err as Error).message).toContain("GRANT DROP ON *.*");
    expect(await probes(target)).toEqual([]);
  });

  it("refuses a user that cannot set sql_log_bin, naming it", async () => {
    await createUser(target, "nobinlog", "pw", ["SELECT, CREATE, DROP, INSERT, LOCK TABLES ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nobinlog", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot set sql_log_bin");
    expect((err as Error).message).toContain("GRANT BINLOG ADMIN ON *.*");
    expect(await probes(target)).toEqual([]);
  });

  it("replicator restore --force as a user without CREATE: exit 2 naming it, and nothing was dropped", async () => {
    const repoDir = await mkdtemp(path.join(work, "restore-"));
    const repo = `file://${repoDir}`;
    const b = await runCli(["backup", "--source", target.url, "--repository", repo, "--cluster", "r", "--json"]);
    expect(b.exitCode).toBe(0);
    await createUser(target, "cli_nocreate", "pw", ["SELECT, DROP, INSERT, LOCK TABLES, BINLOG ADMIN, SLAVE MONITOR ON *.*"]);
    const r = await runCli(
      ["restore", "--target", `mysql://cli_nocreate@127.0.0.1:${target.port}`, "--repository", repo, "--cluster", "r", "--force"],
      { REPLICATOR_DB_PASSWORD: "pw" },
    );
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("target user 'cli_nocreate'@'127.0.0.1' cannot create a database");
    expect(r.stderr).toContain("GRANT CREATE ON *.* TO 'cli_nocreate'@'127.0.0.1'");
    expect(await count(target, "shop.customers")).toBe(200);
    expect(await count(target, "app.settings")).toBe(2);
    expect(await probes(target)).toEqual([]);
    const [sentinel] = await target.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name LIKE '%restore%'");
    expect(Number(sentinel?.n)).toBe(0);
  });

  it("removes the probe when a step after CREATE DATABASE fails", async () => {
    // CREATE and DROP, but no INSERT: the probe database exists when the
    // check fails, and must be gone afterwards.
    await createUser(target, "noinsert", "pw", ["SELECT, CREATE, DROP, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "noinsert", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot insert rows");
    expect((err as Error).message).toContain("GRANT INSERT ON *.*");
    expect(await probes(target)).toEqual([]);
  });
});

describe("backup privileges", () => {
  let source: MariaDb;
  beforeAll(async () => {
    source = await newServer({ binlog: true });
    await seedShop(source, { rows: 50 });
  });

  // MariaDB's --single-transaction takes the position from the snapshot
  // (Binlog_snapshot_file/position) and needs neither RELOAD nor BINLOG
  // MONITOR; FLUSH TABLES WITH READ LOCK (lock: ftwrl, or any MyISAM table) needs both.
  it("a user without RELOAD: the error names RELOAD and the GRANT", async () => {
    await createUser(source, "noreload", "pw", ["SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, BINLOG MONITOR, SLAVE MONITOR ON *.*"]);
    const err = await backupError(mysqldumpMethod, endpoint(source, "noreload", "pw"), { lock: "ftwrl" });
    expect(err).toMatchObject({ reason: "MissingPrivilege", kind: "BadInput" });
    expect(err.message).toMatch(/^backup user 'noreload'@'127\.0\.0\.1' lacks the RELOAD privilege on 127\.0\.0\.1:\d+, needed to dump the source \(.*RELOAD.*\): GRANT RELOAD ON \*\.\* TO 'noreload'@'127\.0\.0\.1'$/);
    expect(err.message).not.toContain("\n");
  });

  it("a user without BINLOG MONITOR on a master: the error names it", async () => {
    await createUser(source, "nomonitor", "pw", ["SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, SLAVE MONITOR ON *.*"]);
    const err = await backupError(mysqldumpMethod, endpoint(source, "nomonitor", "pw"), { lock: "ftwrl" });
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect(err.message).toContain("lacks the BINLOG MONITOR privilege");
    expect(err.message).toContain("GRANT BINLOG MONITOR ON *.* TO 'nomonitor'@'127.0.0.1'");
  });

  it("a user without SLAVE MONITOR: the error names it", async () => {
    await createUser(source, "noslavemon", "pw", ["SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR ON *.*"]);
    const err = await backupError(mysqldumpMethod, endpoint(source, "noslavemon", "pw"));
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect(err.message).toContain("GRANT SLAVE MONITOR ON *.* TO 'noslavemon'@'127.0.0.1'");
  });

  it("a user without SHOW VIEW on a database: the error names it and the database", async () => {
    await createUser(source, "noview", "pw", ["SELECT, TRIGGER, EVENT, LOCK TABLES, RELOAD, BINLOG MONITOR, SLAVE MONITOR ON *.*"]);
    const err = await backupError(mysqldumpMethod, endpoint(source, "noview", "pw"));
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect(err.message).toContain("GRANT SHOW VIEW ON `shop`.* TO 'noview'@'127.0.0.1'");
  });
});

describe("a slave's backup restarts only what it stopped", () => {
  let master: MariaDb;
  let slave: MariaDb;
  let src: Endpoint;
  beforeAll(async () => {
    [master, slave] = await Promise.all([
      newServer({ binlog: true, serverId: 11 }),
      newServer({ binlog: true, serverId: 12, args: ["--log-slave-updates"] }),
    ]);
    await seedShop(master, { rows: 100 });
    await startReplication(master, slave);
    await waitCaughtUp(master, slave);
    src = endpoint(slave, "root", "");
  });

  async function ensureRunning(): Promise<void> {
    await slave.query("START SLAVE");
    for (let i = 0; i < 100 && (await threads(slave)) !== "IO=Yes SQL=Yes"; i++) await new Promise((r) => setTimeout(r, 100));
    expect(await threads(slave)).toBe("IO=Yes SQL=Yes");
  }

  it("mysqldump: a running slave runs again afterwards, at a position consistent with the data", async () => {
    await ensureRunning();
    await master.query("INSERT INTO shop.customers (id, name) VALUES (5001, 'before backup')");
    await waitCaughtUp(master, slave);
    const [m] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    const { outcome, dump, hooks } = await backup(mysqldumpMethod, src);
    expect(outcome.role).toBe("slave");
    expect(outcome.replication?.gtid).toBe(m?.pos);
    expect(dump).toContain("before backup");
    expect(outcome.warnings.filter((w) => /stopped/.test(w))).toEqual([]);
    expect(hooks).toEqual([{ hook: "stopped", threads: ["sql"] }, { hook: "restarted" }]);
    expect(await threads(slave)).toBe("IO=Yes SQL=Yes");
    // And it still replicates.
    await master.query("INSERT INTO shop.customers (id, name) VALUES (5002, 'after backup')");
    await waitCaughtUp(master, slave);
    expect(await count(slave, "shop.customers")).toBe(102);
  });

  it("mysqldump: replication an admin stopped stays stopped, and the outcome says so", async () => {
    await ensureRunning();
    await slave.query("STOP SLAVE");
    const { outcome, hooks } = await backup(mysqldumpMethod, src);
    expect(outcome.warnings).toContain(
      `replication on 127.0.0.1:${slave.port} was already stopped before this backup (IO thread: No, SQL thread: No); it was left stopped — \`replicator online\` starts it`,
    );
    expect(hooks).toEqual([]);
    expect(await threads(slave)).toBe("IO=No SQL=No");
    expect(outcome.replication?.gtid).toBeTruthy();
  });

  it("mysqldump: a SQL thread left stopped (by a killed run) stays stopped; the IO thread keeps running", async () => {
    await ensureRunning();
    await slave.query("STOP SLAVE SQL_THREAD");
    const { outcome, hooks } = await backup(mysqldumpMethod, src);
    expect(outcome.warnings.join("\n")).toContain(`the SQL thread of replication on 127.0.0.1:${slave.port} was already stopped before this backup (IO thread: Yes, SQL thread: No)`);
    expect(hooks).toEqual([]);
    expect(await threads(slave)).toBe("IO=Yes SQL=No");
  });

  it("mysqldump: an aborted backup still restarts the SQL thread it stopped", async () => {
    await ensureRunning();
    const hang = path.join(work, "hanging-dump-abort.sh");
    await writeFile(hang, "#!/bin/sh\necho '-- dump started'\nexec sleep 300\n");
    await chmod(hang, 0o755);
    const hooks: HookCall[] = [];
    const ac = new AbortController();
    const run = await mysqldumpMethod.backup({
      source: src,
      options: { dumpCommand: hang },
      log: silentLogger(),
      signal: ac.signal,
      replication: {
        stopped: (info) => { hooks.push({ hook: "stopped", threads: info.threads }); return Promise.resolve(); },
        restarted: () => { hooks.push({ hook: "restarted" }); return Promise.resolve(); },
      },
    });
    run.stream.resume();
    run.stream.on("error", () => undefined);
    expect(await threads(slave)).toBe("IO=Yes SQL=No");
    ac.abort();
    await expect(run.outcome).rejects.toThrow(/cancelled/);
    expect(hooks).toEqual([{ hook: "stopped", threads: ["sql"] }, { hook: "restarted" }]);
    expect(await threads(slave)).toBe("IO=Yes SQL=Yes");
  });

  it("mysqldump: a failed dump still restarts the SQL thread it stopped", async () => {
    await ensureRunning();
    const err = await backupError(mysqldumpMethod, src, { dumpCommand: "false" });
    expect(err.message).toContain("false failed to dump the source");
    expect(await threads(slave)).toBe("IO=Yes SQL=Yes");
  });

  // mariabackup is not installed here: a stand-in does what --safe-slave-backup
  // does first (STOP SLAVE SQL_THREAD, with the same credentials file and
  // connection flags), writes a little, then dies or ends.
  async function fakeMariabackup(name: string, exit: number): Promise<string> {
    const file = path.join(work, name);
    await writeFile(
      file,
      `#!/bin/sh\ncase "$*" in *--safe-slave-backup*) mariadb "$1" "$4" "$5" "$6" -e 'STOP SLAVE SQL_THREAD' ;; esac\nprintf 'XBSTCK01'\necho '[00] 2026-11-29 01:26:01 Error: failed to copy datafile ./shop/customers.ibd' >&2\nexit ${exit}\n`,
    );
    await chmod(file, 0o755);
    return file;
  }

  it("mariabackup (safeSlaveBackup): a killed tool's SQL thread stop is undone, and recorded", async () => {
    await ensureRunning();
    const r = await runBackup(mariabackupMethod, src, { safeSlaveBackup: true, mariabackupCommand: await fakeMariabackup("dies.sh", 1) });
    expect(r.error?.message).toContain("failed to back up the source (exit code 1)");
    expect(r.hooks).toEqual([{ hook: "stopped", threads: ["sql"] }, { hook: "restarted" }]);
    expect(await threads(slave)).toBe("IO=Yes SQL=Yes");
  });

  it("mariabackup (safeSlaveBackup): replication an admin stopped stays stopped, and the outcome says so", async () => {
    await ensureRunning();
    await slave.query("STOP SLAVE");
    const r = await runBackup(mariabackupMethod, src, { safeSlaveBackup: true, mariabackupCommand: await fakeMariabackup("ends.sh", 0) });
    expect(r.error).toBeUndefined();
    expect(r.hooks).toEqual([]);
    expect(r.outcome?.warnings).toContain(
      `replication on 127.0.0.1:${slave.port} was already stopped before this backup (IO thread: No, SQL thread: No); it was left stopped — \`replicator online\` starts it`,
    );
    expect(await threads(slave)).toBe("IO=No SQL=No");
  });

  it("a SIGKILLed slave backup (the CLI): the next backup says so, leaves replication as it found it, and sweeps the credentials dir", async () => {
    await ensureRunning();
    const dir = await mkdtemp(path.join(work, "killed-"));
    const repoDir = path.join(dir, "repo");
    await mkdir(repoDir);
    const repo = `file://${repoDir}`;
    // A dump that hangs once it has started: the slave's SQL thread is stopped by then.
    const hang = path.join(dir, "hanging-dump.sh");
    await writeFile(hang, "#!/bin/sh\necho '-- dump started'\nexec sleep 300\n");
    await chmod(hang, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  dumpCommand: ${hang}\n`);
    const killed = execa(process.execPath, [CLI, "backup", "--source", slave.url, "--repository", repo, "--cluster", "k"], {
      cwd: dir,
      detached: true,
      reject: false,
      env: { REPLICATOR_CONFIG: undefined, REPLICATOR_DB_PASSWORD: undefined },
      extendEnv: true,
    });
    const pid = killed.pid;
    if (pid === undefined) throw new Error("the backup did not start");
    const marker = async (): Promise<boolean> => (await readdir(repoDir, { recursive: true })).some((f) => f.endsWith("replication-stopped.json"));
    await waitFor(marker, "the backup to record that it stopped replication", 30_000);
    // Its credentials: a 0600 file in a 0700 dir named after it.
    const [credDir] = privateDirsOf(pid);
    expect(credDir).toBeDefined();
    expect(statSync(credDir ?? "").mode & 0o777).toBe(0o700);
    expect(statSync(path.join(credDir ?? "", "client.cnf")).mode & 0o777).toBe(0o600);
    process.kill(-pid, "SIGKILL");
    await killed;
    expect(await threads(slave)).toBe("IO=Yes SQL=No");
    expect(privateDirsOf(pid)).toHaveLength(1);

    const next = await runCli(["backup", "--source", slave.url, "--repository", repo, "--cluster", "k", "--json"]);
    expect(next.exitCode).toBe(0);
    const warnings = (next.json?.warnings ?? []) as string[];
    expect(warnings.join("\n")).toContain(
      `the SQL thread of replication on 127.0.0.1:${slave.port} was already stopped before this backup (IO thread: Yes, SQL thread: No); it was left stopped — \`replicator online\` starts it`,
    );
    expect(warnings.join("\n")).toMatch(/an earlier backup of this server \(.+\) stopped replication at .+ and never finished/);
    expect(await threads(slave)).toBe("IO=Yes SQL=No");
    expect(privateDirsOf(pid)).toEqual([]);
    expect(await marker()).toBe(false);
  });
});
