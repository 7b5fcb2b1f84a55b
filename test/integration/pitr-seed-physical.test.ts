// Seeding a slave from a physical (mariabackup) backup beyond binlogs the
// master has purged: `replicator restore --datadir --replicate-from`
// restores the backup into the data directory of a stopped server, replays
// the archived binlogs from its position to a state the master still serves
// through a temporary mariadbd on that directory, and writes the replica
// configuration at the bridge's end: the server replicates when it starts.
// Real MariaDB master and slave, mariabackup, real S3 (versitygw). Asserted
// on what a user cares about: both replication threads run, the slave's
// CHECKSUM TABLE equals the master's after further writes (a table without a
// primary key shows a transaction applied twice), no GTID of the slave's own,
// and a missing bridge file fails with one line before anything is written.
import { mkdtemp, readdir, rename, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { checksums, startMariaDb, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";
import {
  archiveDir, currentFile, gtidPos, purgeBinlogsTo, replEnv, replicateFrom, SCHEMAS, startPitr, stopPitr, threads, writeJournal,
} from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";

let s3: S3Server;
let master: MariaDb;
let work: string;
const servers: MariaDb[] = [];
const bucket = "seed-physical";
const repo = `s3://${bucket}/p`;
const SID = 31;
const SLAVE_SID = 32;

/** A fresh path for a data directory (not created: restore creates it). */
async function datadirPath(tag: string): Promise<string> {
  return path.join(await mkdtemp(path.join(work, `${tag}-`)), "data");
}

// The GTID state at the end of each binlog written after the backup.
const ends: Record<string, string> = {};
let backupName = "";
let backupGtid = "";

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 300, tables: "journal", repl: true }));
  work = await mkdtemp(path.join(tmpdir(), "replicator-seed-physical-it-"));
  await writeJournal(master, "before the backup");
  const b = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
  expect(b.stderr).toBe("");
  expect(b.exitCode).toBe(0);
  backupName = String(b.json?.name);
  backupGtid = String((b.json?.replication as { gtid?: string } | undefined)?.gtid);
  expect(backupGtid).toBe(await gtidPos(master));
  const archive = async (): Promise<void> => {
    const a = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c1", "--once"], s3.env);
    expect(a.stderr).toBe("");
    expect(a.exitCode).toBe(0);
  };
  await archive();
  // Writes after the backup, across three rotations; an account among them.
  for (let k = 0; k < 3; k++) {
    await writeJournal(master, `after the backup, binlog ${k}`);
    if (k === 1) await master.query("CREATE USER 'reporter'@'%' IDENTIFIED BY 'reporter-pass'");
    const file = await currentFile(master);
    ends[file] = await gtidPos(master);
    await master.query("FLUSH BINARY LOGS");
  }
  await writeJournal(master, "in the binlog the master keeps");
  await archive();
  // Purge every binlog before the current one: past the backup's position.
  const keep = await currentFile(master);
  await purgeBinlogsTo(master, keep);
  await archive();
});

afterAll(async () => {
  await stopPitr(s3, servers, master);
  if (work) await rm(work, { recursive: true, force: true });
});

describe("seeding a slave from a physical backup over the binlog archive", () => {
  it("a missing archived file in the bridge fails with exit 2 and one line naming the missing range; nothing is written", async () => {
    const files = Object.keys(ends).sort();
    const gone = files[1] as string;
    const aside = await mkdtemp(path.join(tmpdir(), "replicator-aside-"));
    const dir = archiveDir(s3, repo, "c1", SID);
    await rename(path.join(dir, gone), path.join(aside, gone));
    await rename(path.join(dir, `${gone}.index.json`), path.join(aside, `${gone}.index.json`));
    try {
      const d = await datadirPath("gap");
      const r = await runCli(["restore", "--datadir", d, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master)], replEnv(s3));
      expect(r.exitCode).toBe(2);
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`${gone} missing`);
      expect(lines[0]).toMatch(/the transactions after GTID \d+-\d+-\d+ through GTID \d+-\d+-\d+ are missing/);
      expect(await readdir(path.dirname(d))).toEqual([]);
    } finally {
      await rename(path.join(aside, gone), path.join(dir, gone));
      await rename(path.join(aside, `${gone}.index.json`), path.join(dir, `${gone}.index.json`));
      await rm(aside, { recursive: true, force: true });
    }
  });

  it("restore --datadir --replicate-from replays the bridge through a temporary server; the started server replicates with the master's checksums", async () => {
    const files = Object.keys(ends).sort();
    const last = files[files.length - 1] as string;
    const d = await datadirPath("seed");
    const dry = await runCli(["restore", "--datadir", d, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master), "--dry-run", "--json"], replEnv(s3));
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.json?.name).toBe(backupName);
    expect((dry.json?.bridge as { binlogs: string[] }).binlogs).toEqual(files);
    expect(await readdir(path.dirname(d))).toEqual([]);

    const r = await runCli(["restore", "--datadir", d, "--repository", repo, "--cluster", "c1", "--replicate-from", replicateFrom(master), "--json"], replEnv(s3));
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json).toMatchObject({ name: backupName, replicaConfigured: true });
    const bridge = r.json?.bridge as { binlogs: string[]; slavePos: string; backupPosition: string; transactions: number };
    expect(bridge.binlogs).toEqual(files);
    expect(bridge.backupPosition).toBe(backupGtid);
    expect(bridge.slavePos).toBe(ends[last]);
    expect(bridge.transactions).toBeGreaterThan(0);
    expect(r.stdout).not.toContain("replpass");

    const seeded = await startMariaDb({ datadir: d, serverId: SLAVE_SID, binlog: true, args: ["--log-slave-updates"] });
    servers.push(seeded);
    await waitFor(async () => (await threads(seeded)).join() === "Yes,Yes", "the seeded slave to replicate");
    await writeJournal(master, "after the seed");
    await waitCaughtUp(master, seeded);
    expect(await threads(seeded)).toEqual(["Yes", "Yes"]);
    expect(await checksums(seeded, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
    const accounts = await seeded.query<{ User: string }>("SELECT User FROM mysql.user WHERE User = 'reporter'");
    expect(accounts).toEqual([{ User: "reporter" }]);
    // Only the master's GTIDs in its binlog: neither the bridge's replay nor anything of its own.
    const own = (await gtidPos(seeded)).split(",").filter((g) => g.split("-")[1] === String(SLAVE_SID));
    expect(own).toEqual([]);
    const [pos] = await seeded.query<{ pos: string }>("SELECT @@gtid_slave_pos AS pos");
    expect(pos?.pos).toBe(await gtidPos(master));
  });
});
