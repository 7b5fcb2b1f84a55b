// Seeding a slave beyond binlogs the master has purged: `replicator restore
// --replicate-from` loads the newest backup, replays the archived binlogs
// from its position to a state the master still serves, and replicates from
// there. Real MariaDB master and slaves, real S3 (versitygw). Asserted on
// what a user cares about: both replication threads run, the slave's
// CHECKSUM TABLE equals the master's after further writes (a table without a
// primary key shows a transaction applied twice, a skipped one shows
// anywhere), and a missing stretch fails with one line naming it before
// anything is loaded.
import { mkdtemp, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { seedShop } from "../harness/fixtures.js";
import { checksums, startMariaDb, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { startFaultProxy } from "../harness/s3-fault-proxy.js";

let s3: S3Server;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "seed";
const repo = `s3://${bucket}/p`;
const SCHEMAS = ["shop", "app"];
const SID = 21;
let nextSid = 22;

function archiveDir(cluster: string): string {
  return path.join(s3.root, bucket, "p", cluster, "binlogs", String(SID));
}

async function fresh(): Promise<MariaDb> {
  const s = await startMariaDb({ binlog: true, serverId: nextSid++ });
  servers.push(s);
  return s;
}

async function gtidPos(s: MariaDb): Promise<string> {
  const [r] = await s.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
  return r?.pos ?? "";
}

async function currentFile(): Promise<string> {
  const [r] = await master.query<{ File: string }>("SHOW MASTER STATUS");
  return r?.File ?? "";
}

async function write(v: string, n = 3): Promise<void> {
  for (let i = 0; i < n; i++) {
    await master.query("INSERT INTO app.events (v) VALUES (?)", [`${v} ${i}`]);
    // No primary key: a transaction applied twice leaves a second row, and the checksums differ.
    await master.query("INSERT INTO app.journal (v) VALUES (?)", [`${v} ${i}`]);
  }
  await master.query("UPDATE shop.customers SET balance = balance + 1 WHERE id <= 20");
}

async function tablesIn(s: MariaDb): Promise<number> {
  const [n] = await s.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema IN ('shop','app')");
  return Number(n?.n);
}

async function threads(s: MariaDb): Promise<[string, string]> {
  const [r] = await s.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
  return [r?.Slave_IO_Running ?? "-", r?.Slave_SQL_Running ?? "-"];
}

const replicateFrom = (): string => `mysql://repl@127.0.0.1:${master.port}`;
const env = (): Record<string, string> => ({ ...s3.env, REPLICATOR_REPLICATION_PASSWORD: "replpass" });

// The GTID state at the end of each binlog of the bridge.
const ends: Record<string, string> = {};
let backupGtid = "";
let oldestAfterPurge = "";

beforeAll(async () => {
  [s3, master] = await Promise.all([startS3(), startMariaDb({ binlog: true, serverId: SID })]);
  await s3.createBucket(bucket);
  await master.query("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpass'");
  await master.query("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'127.0.0.1'");
  await seedShop(master, { rows: 300 });
  await master.query("CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB");
  await master.query("CREATE TABLE app.journal (v VARCHAR(64)) ENGINE=InnoDB");
  await write("before the backups");
  // Two clusters hold a backup of the same master: c1's archive keeps up, c2's stops early.
  for (const cluster of ["c1", "c2"]) {
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", cluster, "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    backupGtid = String((b.json?.replication as { gtid?: string } | undefined)?.gtid);
  }
  expect(backupGtid).toBe(await gtidPos(master));
  const archive = async (cluster: string): Promise<void> => {
    const a = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", cluster, "--once"], s3.env);
    expect(a.stderr).toBe("");
    expect(a.exitCode).toBe(0);
  };
  await archive("c1");
  // Writes after the backups, across three rotations.
  for (let k = 0; k < 3; k++) {
    await write(`after the backup, binlog ${k}`);
    const file = await currentFile();
    ends[file] = await gtidPos(master);
    await master.query("FLUSH BINARY LOGS");
    if (k === 0) await archive("c2");
  }
  await write("in the binlog the master keeps");
  await archive("c1");
  // Purge every binlog before the current one: past the backups' position.
  const keep = await currentFile();
  await waitFor(async () => {
    await master.query(`PURGE BINARY LOGS TO '${keep}'`);
    const logs = await master.query<{ Log_name: string }>("SHOW BINARY LOGS");
    return logs[0]?.Log_name === keep;
  }, "the master to purge its old binlogs");
  const [o] = await master.query<{ pos: string }>("SELECT BINLOG_GTID_POS(?, 4) AS pos", [keep]);
  oldestAfterPurge = o?.pos ?? "";
  await archive("c1");
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
  await master.destroy();
  await s3.stop();
});

describe("seeding a slave over the binlog archive", () => {
  it("a missing archived file in the bridge fails with exit 2 and one line naming the missing range; nothing is loaded", async () => {
    const files = Object.keys(ends).sort();
    const gone = files[1] as string;
    const aside = await mkdtemp(path.join(tmpdir(), "replicator-aside-"));
    const dir = archiveDir("c1");
    await rename(path.join(dir, gone), path.join(aside, gone));
    await rename(path.join(dir, `${gone}.index.json`), path.join(aside, `${gone}.index.json`));
    try {
      const t = await fresh();
      const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom()], env());
      expect(r.exitCode).toBe(2);
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`the transactions after GTID ${ends[files[0] as string] ?? "?"} through GTID ${ends[gone] ?? "?"} are missing`);
      expect(lines[0]).toContain(`${gone} missing`);
      expect(lines[0]).toContain(`begins after GTID ${oldestAfterPurge}`);
      expect(await tablesIn(t)).toBe(0);
      expect(await threads(t)).toEqual(["-", "-"]);
    } finally {
      await rename(path.join(aside, gone), path.join(dir, gone));
      await rename(path.join(aside, `${gone}.index.json`), path.join(dir, `${gone}.index.json`));
      await rm(aside, { recursive: true, force: true });
    }
  });

  it("an archive that ends before the master's oldest binlog is BinlogsPurged, naming the range", async () => {
    const t = await fresh();
    const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c2", "--replicate-from", replicateFrom(), "--json"], env());
    expect(r.exitCode).toBe(2);
    expect(r.json?.reason).toBe("BinlogsPurged");
    const first = Object.keys(ends).sort()[0] as string;
    const line = String(r.json?.error);
    expect(line).toContain(`the transactions after GTID ${ends[first] ?? "?"} through GTID ${oldestAfterPurge} are missing`);
    expect(line).toContain(`ends at GTID ${ends[first] ?? "?"} (${first}`);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(await tablesIn(t)).toBe(0);
  });

  it("a storage fault reading the archive is a storage fault, never BinlogsPurged; nothing is loaded", async () => {
    const proxy = await startFaultProxy(s3.endpoint, { seed: 3 });
    try {
      proxy.add({ op: "GET", key: /\/binlogs\/\d+\/[^/]+\.index\.json$/, action: { kind: "status", status: 500, code: "InternalError" } });
      const t = await fresh();
      const r = await runCli(
        ["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(), "--json"],
        { ...env(), AWS_ENDPOINT_URL_S3: proxy.endpoint },
      );
      expect(r.exitCode).toBe(1);
      expect(["StorageError", "StorageUnreachable"]).toContain(r.json?.reason);
      expect(String(r.json?.error)).toContain("index.json");
      expect(await tablesIn(t)).toBe(0);
    } finally {
      await proxy.close();
    }
  });

  it("restores the backup, replays the bridge and replicates: both threads run and the checksums match the master's after more writes", async () => {
    const t = await fresh();
    // --dry-run: the plan after the checks, nothing loaded.
    const plan = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(), "--dry-run"], env());
    expect(plan.stderr).toBe("");
    expect(plan.exitCode).toBe(0);
    expect(plan.stdout).toContain(`first replay the archived binlogs ${Object.keys(ends).sort().join(", ")}`);
    expect(plan.stdout).toContain(`from the first transaction after GTID ${backupGtid} through GTID ${oldestAfterPurge}`);
    expect(await tablesIn(t)).toBe(0);
    const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(), "--json"], env());
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json?.replicating).toBe(true);
    const bridge = r.json?.bridge as { binlogs: string[]; slavePos: string; transactions: number };
    expect(bridge.binlogs).toEqual(Object.keys(ends).sort());
    expect(bridge.slavePos).toBe(oldestAfterPurge);
    expect(await threads(t)).toEqual(["Yes", "Yes"]);
    await write("after the seed");
    await waitCaughtUp(master, t);
    expect(await threads(t)).toEqual(["Yes", "Yes"]);
    expect(await checksums(t, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
    const [g] = await t.query<{ s: string; b: string }>("SELECT @@gtid_slave_pos AS s, @@gtid_binlog_pos AS b");
    expect(g?.s).toBe(await gtidPos(master));
    // Neither the load nor the bridge went into the slave's binlog: no GTID of its own, none of the master's before the seed.
    expect(g?.b).toBe("");
  });
});
