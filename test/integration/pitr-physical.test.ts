// Point-in-time recovery on a physical (mariabackup) base backup:
// `replicator restore --datadir DIR --until/--until-gtid` restores the
// newest physical backup before the target into the data directory of a
// stopped server, replays the binlog archive up to the target through a
// temporary mariadbd on it, and leaves gtid_slave_pos at the state before the
// target. Real MariaDB servers, mariabackup, and the real S3 server
// (versitygw). Asserted on what a user cares about: a server started on the
// restored directory has the tables' CHECKSUM TABLE of just before the
// "accident", an account created after the backup, no GTID the master never
// had, and gtid_slave_pos at the accident's predecessor; a missing archive
// file is named in one line with the data directory untouched; a replay that
// cannot run leaves the directory marked as unfinished, and says so.
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { checksums, startMariaDb, type MariaDb } from "../harness/mariadb.js";
import { archiveDir, gtidPos, runAccident, SCHEMAS, startPitr, stopPitr, writeAfterBackup, writeEvents } from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";

const SENTINEL = ".replicator-restore-in-progress";
let s3: S3Server;
let master: MariaDb;
let work: string;
const servers: MariaDb[] = [];
const bucket = "pitr-physical";
const repo = `s3://${bucket}/p`;
const SID = 21;

/** A fresh path for a data directory (not created: restore creates it). */
async function datadirPath(tag: string): Promise<string> {
  return path.join(await mkdtemp(path.join(work, `${tag}-`)), "data");
}

/** The CLI's one-line message (JSON log lines may come around it). */
function messageLine(text: string): string {
  const lines = text.split("\n").filter((l) => l.startsWith("replicator "));
  expect(lines, text).toHaveLength(1);
  return lines[0] ?? "";
}

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 300, tables: "timed" }));
  work = await mkdtemp(path.join(tmpdir(), "replicator-pitr-physical-it-"));
  await master.query("CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB");
});

afterAll(async () => {
  await stopPitr(s3, servers, master);
  if (work) await rm(work, { recursive: true, force: true });
});

describe("restore a physical backup to a point in time (--datadir)", () => {
  let reference: Record<string, string>;
  let lastGood: string;
  let accidentAt: Date;
  let accidentGtid: string;
  let physical: string;
  let betweenFile: string;

  /** Start a server on a restored data directory and check what the user cares about. */
  async function checkRestored(dir: string, serverId: number): Promise<void> {
    const entries = await readdir(dir);
    expect(entries).not.toContain(SENTINEL);
    // The temporary server left no binlog, relay log or replica configuration of its own.
    expect(entries.filter((e) => /-bin\.|relay|^master\.info$/.test(e))).toEqual([]);
    const restored = await startMariaDb({ datadir: dir, serverId, binlog: true });
    servers.push(restored);
    expect(await checksums(restored, SCHEMAS)).toEqual(reference);
    const [later] = await restored.query<{ n: number }>("SELECT COUNT(*) AS n FROM app.later");
    expect(Number(later?.n)).toBe(2);
    const [oops] = await restored.query<{ n: number }>("SELECT COUNT(*) AS n FROM shop.customers WHERE name = 'oops'");
    expect(Number(oops?.n)).toBe(0);
    // The account created after the backup was replayed (under --skip-grant-tables, after FLUSH PRIVILEGES).
    const accounts = await restored.query<{ User: string; Host: string }>("SELECT User, Host FROM mysql.user WHERE User = 'reporter'");
    expect(accounts).toEqual([{ User: "reporter", Host: "%" }]);
    const [g] = await restored.query<{ slave: string; binlog: string; current: string }>(
      "SELECT @@gtid_slave_pos AS slave, @@gtid_binlog_pos AS binlog, @@gtid_current_pos AS current",
    );
    // The state just before the accident, in gtid_slave_pos; no GTID of the restore's own.
    expect(g).toEqual({ slave: lastGood, binlog: "", current: lastGood });
  }

  it("restores to one second before an accident, and to the GTID just before it; --dry-run prints the plan", async () => {
    await writeEvents(master, "before backup", 5);
    const b = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    physical = String(b.json?.name);
    // Writes after the backup, across binlog rotations: a new table, an account, updates.
    betweenFile = await writeAfterBackup(master);
    await master.query("CREATE USER 'reporter'@'%' IDENTIFIED BY 'reporter-pass'");
    await master.query("GRANT SELECT ON shop.* TO 'reporter'@'%'");
    await master.query("UPDATE shop.customers SET balance = balance + 1 WHERE id <= 50");
    // A 12 MB row: its row event replays as a BINLOG statement of about 16 MB, over a server's default max_allowed_packet.
    await master.query("INSERT INTO app.blobs VALUES (1, REPEAT('x', 12 * 1024 * 1024))");
    // A newer logical backup: a restore into --datadir still starts from the physical one.
    const logical = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(logical.exitCode, logical.stderr).toBe(0);
    // The accident, after writes across a rotation; then the archive.
    const accident = await runAccident(s3, master, repo, "c1");
    ({ reference, lastGood, accidentAt, accidentGtid } = accident);

    const a = accident.archived;
    expect(a.stderr).toBe("");
    expect(a.exitCode).toBe(0);
    expect(a.json?.endState).toBe(await gtidPos(master));

    const until = new Date(accidentAt.getTime() - 1000).toISOString();
    const dry = await runCli(["restore", "--datadir", path.join(work, "never-created"), "--until", until, "--repository", repo, "--cluster", "c1", "--dry-run", "--json"], s3.env);
    expect(dry.exitCode, dry.stderr).toBe(0);
    const p = dry.json?.plan as { backup: string; kind: string; binlogs: { file: string }[]; stopGtid: string; endState: string };
    expect(p.backup).toBe(physical);
    expect(p.kind).toBe("physical");
    expect(p.binlogs.map((x) => x.file)).toContain(betweenFile);
    expect(p.stopGtid).toBe(accidentGtid);
    expect(p.endState).toBe(lastGood);
    expect(await readdir(work)).not.toContain("never-created");
    const dryText = await runCli(["restore", "--datadir", path.join(work, "never-created"), "--until", until, "--repository", repo, "--cluster", "c1", "--dry-run"], s3.env);
    expect(dryText.stdout).toContain(`plan: restore ${physical}`);
    expect(dryText.stdout).toContain(`GTID ${accidentGtid}`);
    expect(dryText.stdout).toContain(`gtid_slave_pos ${lastGood}`);

    const dir1 = await datadirPath("until-time");
    const r1 = await runCli(["restore", "--datadir", dir1, "--until", until, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(r1.stderr).toBe("");
    expect(r1.exitCode).toBe(0);
    expect(r1.json?.replayed).toBeGreaterThan(0);
    expect((r1.json?.restore as { replication: { gtid: string } }).replication.gtid).toBe(lastGood);
    await checkRestored(dir1, 51);

    const dir2 = await datadirPath("until-gtid");
    const r2 = await runCli(["restore", "--datadir", dir2, "--until-gtid", accidentGtid, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r2.stderr).toBe("");
    expect(r2.exitCode).toBe(0);
    expect(r2.stdout).toContain(`restored ${physical}`);
    expect(r2.stdout).toContain(`GTID ${accidentGtid}`);
    expect(r2.stdout).toContain(`gtid_slave_pos is ${lastGood}`);
    await checkRestored(dir2, 52);
  });

  it("refuses --replicate-from with --until, and --target with --datadir, in one line", async () => {
    const dir = await datadirPath("refused");
    const r = await runCli(["restore", "--datadir", dir, "--until-gtid", accidentGtid, "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--repository", repo, "--cluster", "c1"], { ...s3.env, REPLICATOR_REPLICATION_PASSWORD: "x" });
    expect(r.exitCode).toBe(2);
    expect(messageLine(r.stderr)).toContain("do not combine with --replicate-from");
    const both = await runCli(["restore", "--datadir", dir, "--target", master.url, "--until-gtid", accidentGtid, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(both.exitCode).toBe(2);
    expect(messageLine(both.stderr)).toContain("give one, not both");
    expect(await readdir(path.dirname(dir))).toEqual([]);
  });

  it("a temporary server that cannot run: mariadbd missing is one line before anything is written; a failed start leaves the directory marked unfinished", async () => {
    const missing = path.join(work, "missing.yaml");
    await writeFile(missing, "methodOptions:\n  mariadbdCommand: mariadbd-not-installed\n");
    const dir = await datadirPath("no-mariadbd");
    const r = await runCli(["restore", "--config", missing, "--datadir", dir, "--until-gtid", accidentGtid, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r.exitCode).toBe(1);
    expect(messageLine(r.stderr)).toContain("mariadbd-not-installed is not installed");
    expect(await readdir(path.dirname(dir))).toEqual([]);

    const bad = path.join(work, "bad.yaml");
    await writeFile(bad, "methodOptions:\n  mariadbdArgs: [\"--no-such-option-for-the-test\"]\n");
    const dir2 = await datadirPath("bad-start");
    const r2 = await runCli(["restore", "--config", bad, "--datadir", dir2, "--until-gtid", accidentGtid, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r2.exitCode).toBe(1);
    const line = messageLine(r2.stderr);
    expect(line).toContain(`data directory ${dir2} is now partial`);
    expect(line).toContain(`it holds backup ${physical}`);
    expect(line).toContain("do not start a server on it");
    expect(line).toContain("no-such-option-for-the-test");
    expect(await readdir(dir2)).toContain(SENTINEL);
  });

  it("a missing archive file before the target fails with one line naming the missing range; the data directory is not touched", async () => {
    const archive = archiveDir(s3, repo, "c1", SID);
    await rm(path.join(archive, betweenFile), { recursive: true, force: true });
    await rm(path.join(archive, `${betweenFile}.index.json`), { recursive: true, force: true });
    const dir = await datadirPath("gap");
    const r = await runCli(["restore", "--datadir", dir, "--until-gtid", accidentGtid, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/gap/);
    expect(lines[0]).toContain(betweenFile);
    expect(lines[0]).toMatch(/GTIDs after \d+-\d+-\d+ up to \d+-\d+-\d+/);
    expect(await readdir(path.dirname(dir))).toEqual([]);
  });
});
