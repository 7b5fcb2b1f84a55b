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
import { checksums, waitCaughtUp, type MariaDb } from "../harness/mariadb.js";
import {
  archiveDir as archiveDirOf, currentFile, gtidPos, purgeBinlogsTo, replEnv, replicateFrom, SCHEMAS, startPitr, startTarget,
  stopPitr, tablesIn, threads, writeJournal,
} from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";
import { startFaultProxy } from "../harness/s3-fault-proxy.js";

let s3: S3Server;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "seed";
const repo = `s3://${bucket}/p`;
const SID = 21;
let nextSid = 22;

const archiveDir = (cluster: string): string => archiveDirOf(s3, repo, cluster, SID);
const fresh = (): Promise<MariaDb> => startTarget(servers, { serverId: nextSid++ });

// The GTID state at the end of each binlog of the bridge.
const ends: Record<string, string> = {};
let backupGtid = "";
let oldestAfterPurge = "";

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 300, tables: "journal", repl: true }));
  await writeJournal(master, "before the backups");
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
    await writeJournal(master, `after the backup, binlog ${k}`);
    const file = await currentFile(master);
    ends[file] = await gtidPos(master);
    await master.query("FLUSH BINARY LOGS");
    if (k === 0) await archive("c2");
  }
  await writeJournal(master, "in the binlog the master keeps");
  await archive("c1");
  // Purge every binlog before the current one: past the backups' position.
  const keep = await currentFile(master);
  await purgeBinlogsTo(master, keep);
  const [o] = await master.query<{ pos: string }>("SELECT BINLOG_GTID_POS(?, 4) AS pos", [keep]);
  oldestAfterPurge = o?.pos ?? "";
  await archive("c1");
});

afterAll(async () => {
  await stopPitr(s3, servers, master);
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
      const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master)], replEnv(s3));
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
    const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c2", "--replicate-from", replicateFrom(master), "--json"], replEnv(s3));
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
        ["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master), "--json"],
        { ...replEnv(s3), AWS_ENDPOINT_URL_S3: proxy.endpoint },
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
    const plan = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master), "--dry-run"], replEnv(s3));
    expect(plan.stderr).toBe("");
    expect(plan.exitCode).toBe(0);
    expect(plan.stdout).toContain(`first replay the archived binlogs ${Object.keys(ends).sort().join(", ")}`);
    expect(plan.stdout).toContain(`from the first transaction after GTID ${backupGtid} through GTID ${oldestAfterPurge}`);
    expect(await tablesIn(t)).toBe(0);
    const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master), "--json"], replEnv(s3));
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json?.replicating).toBe(true);
    const bridge = r.json?.bridge as { binlogs: string[]; slavePos: string; transactions: number };
    expect(bridge.binlogs).toEqual(Object.keys(ends).sort());
    expect(bridge.slavePos).toBe(oldestAfterPurge);
    expect(await threads(t)).toEqual(["Yes", "Yes"]);
    await writeJournal(master, "after the seed");
    await waitCaughtUp(master, t);
    expect(await threads(t)).toEqual(["Yes", "Yes"]);
    expect(await checksums(t, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
    const [g] = await t.query<{ s: string; b: string }>("SELECT @@gtid_slave_pos AS s, @@gtid_binlog_pos AS b");
    expect(g?.s).toBe(await gtidPos(master));
    // Neither the load nor the bridge went into the slave's binlog: no GTID of its own, none of the master's before the seed.
    expect(g?.b).toBe("");
  });
});
