// Point-in-time recovery across a switchover: master A is archived (its
// chain binlogs/<A>), slave B, seeded from a backup and replicating with
// log_slave_updates, becomes the master and is archived too (its own chain
// binlogs/<B>, whose first binlog has an empty GTID_LIST: B was seeded). A
// restore from a backup of A's era to a GTID on B replays A's chain up to
// where B's begins, then B's. Asserted: CHECKSUM TABLE equal to B's just
// before the accident (a table without a primary key shows a transaction
// applied twice), and the --dry-run plan names files of both servers. Real
// MariaDB servers, real versitygw.
import { readdir, rm } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { checksums, startMariaDb, waitCaughtUp, type MariaDb } from "../harness/mariadb.js";
import {
  archiveDir, currentFile, gtidPos, nextGtid, prepareMaster, purgeBinlogsTo, replEnv, replicateFrom, SCHEMAS, startTarget, stopPitr, tablesIn, threads,
  writeJournal,
} from "../harness/pitr.js";
import { startS3, type S3Server } from "../harness/s3.js";

let s3: S3Server;
let a: MariaDb;
let b: MariaDb;
const servers: MariaDb[] = [];
const bucket = "switchover";
const repo = `s3://${bucket}/p`;
const A = 31;
const B = 32;

beforeAll(async () => {
  [s3, a, b] = await Promise.all([
    startS3(),
    startMariaDb({ binlog: true, serverId: A }),
    startMariaDb({ binlog: true, serverId: B, args: ["--log-slave-updates"] }),
  ]);
  await s3.createBucket(bucket);
  await prepareMaster(a, { rows: 200, tables: "journal", repl: true });
});

afterAll(async () => {
  await stopPitr(s3, servers, [a, b]);
});

describe("restore to a point in time across a switchover", () => {
  it("stitches the old master's archive to the new master's: a restore and a seed across the switchover", async () => {
    await writeJournal(a, "before the base backup");
    const base = await runCli(["backup", "--source", a.url, "--repository", repo, "--cluster", "db", "--json"], s3.env);
    expect(base.stderr).toBe("");
    expect(base.exitCode).toBe(0);
    await writeJournal(a, "after the base backup");
    await a.query("FLUSH BINARY LOGS");
    await writeJournal(a, "after a rotation on A");
    // B is seeded from a later backup of A (kept elsewhere) and replicates from A, logging what it applies.
    const seed = await runCli(["backup", "--source", a.url, "--repository", repo, "--cluster", "seed", "--json"], s3.env);
    expect(seed.exitCode).toBe(0);
    const s = await runCli(["restore", "--target", b.url, "--repository", repo, "--cluster", "seed", "--replicate-from", replicateFrom(a)], replEnv(s3));
    expect(s.stderr).toBe("");
    expect(s.exitCode).toBe(0);
    await writeJournal(a, "replicated to B");
    await waitCaughtUp(a, b);

    // The switchover: writes stop on A, B has everything, A is archived to its end and stops; B becomes the master.
    const archA = await runCli(["binlog-archive", "--source", a.url, "--repository", repo, "--cluster", "db", "--once", "--json"], s3.env);
    expect(archA.stderr).toBe("");
    expect(archA.exitCode).toBe(0);
    expect(archA.json?.endState).toBe(await gtidPos(a));
    await a.stop();
    await b.query("STOP SLAVE");
    await b.query("RESET SLAVE ALL");
    await writeJournal(b, "on the new master");
    await b.query("FLUSH BINARY LOGS");
    await writeJournal(b, "after a rotation on B");
    const reference = await checksums(b, SCHEMAS);
    const accident = nextGtid(await gtidPos(b));
    expect(accident.startsWith(`0-${B}-`)).toBe(true);
    await b.query("DROP TABLE app.events");
    await b.query("UPDATE shop.customers SET name = 'oops'");
    await b.query("INSERT INTO app.journal (v) VALUES ('after the accident')");
    const archB = await runCli(["binlog-archive", "--source", b.url, "--repository", repo, "--cluster", "db", "--once", "--json"], s3.env);
    // The new master is reported (a warning line), and archived into a chain of its own.
    expect(archB.stderr).toContain("a new master: its binlogs begin a chain of their own");
    expect(archB.exitCode).toBe(0);
    expect(archB.json?.serverId).toBe(B);

    // The plan: the base backup of A's era, A's binlogs up to where B's archive begins, then B's.
    const plan = await runCli(["restore", "--until-gtid", accident, "--target", b.url, "--repository", repo, "--cluster", "db", "--dry-run", "--json"], s3.env);
    expect(plan.stderr).toBe("");
    expect(plan.exitCode).toBe(0);
    const p = plan.json?.plan as { backup: string; binlogs: { serverId: number; file: string }[]; stopGtid: string };
    expect(p.backup).toBe(base.json?.name);
    expect([...new Set(p.binlogs.map((x) => x.serverId))]).toEqual([A, B]);
    expect(p.stopGtid).toBe(accident);
    const text = await runCli(["restore", "--until-gtid", accident, "--target", b.url, "--repository", repo, "--cluster", "db", "--dry-run"], s3.env);
    expect(text.stdout).toContain(`binlogs of server ${A}:`);
    expect(text.stdout).toContain(`then of server ${B}:`);

    const t = await startTarget(servers);
    const r = await runCli(["restore", "--until-gtid", accident, "--target", t.url, "--repository", repo, "--cluster", "db", "--json"], s3.env);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(await checksums(t, SCHEMAS)).toEqual(reference);

    // Seeding from A's era backup. B still has all its binlogs, but its first one begins (empty GTID_LIST: B was seeded)
    // after the backup's position: B would serve the slave by skipping the difference, so the seed bridges it instead.
    await b.query("SET SESSION sql_log_bin=0; CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'127.0.0.1'");
    const early = await startTarget(servers);
    const se = await runCli(["restore", "--target", early.url, "--repository", repo, "--cluster", "db", "--replicate-from", replicateFrom(b), "--json"], replEnv(s3));
    expect(se.stderr).toBe("");
    expect(se.exitCode).toBe(0);
    expect(se.json?.bridge).toBeDefined();
    await b.query("INSERT INTO app.journal (v) VALUES ('after the first seed')");
    await waitCaughtUp(b, early);
    expect(await checksums(early, SCHEMAS)).toEqual(await checksums(b, SCHEMAS));

    // After B purged its binlogs: the bridge is A's archive up to where B's begins, then B's.
    await b.query("FLUSH BINARY LOGS");
    // (app.events is gone since the accident.)
    await b.query("INSERT INTO app.journal (v) VALUES ('before the purge')");
    const again = await runCli(["binlog-archive", "--source", b.url, "--repository", repo, "--cluster", "db", "--once"], s3.env);
    expect(again.exitCode).toBe(0);
    await purgeBinlogsTo(b, await currentFile(b), "B to purge its old binlogs");
    const slave = await startTarget(servers);
    const sd = await runCli(["restore", "--target", slave.url, "--repository", repo, "--cluster", "db", "--replicate-from", replicateFrom(b), "--json"], replEnv(s3));
    expect(sd.stderr).toBe("");
    expect(sd.exitCode).toBe(0);
    expect(sd.json?.name).toBe(base.json?.name);
    const bridged = (sd.json?.bridge as { binlogs: string[] } | undefined)?.binlogs ?? [];
    expect(bridged.some((f) => f.startsWith(`${A}/`)) && bridged.some((f) => f.startsWith(`${B}/`))).toBe(true);
    await b.query("INSERT INTO app.journal (v) VALUES ('after the seed')");
    await b.query("UPDATE shop.customers SET balance = balance + 3 WHERE id <= 30");
    await waitCaughtUp(b, slave);
    expect(await threads(slave)).toEqual(["Yes", "Yes"]);
    expect(await checksums(slave, SCHEMAS)).toEqual(await checksums(b, SCHEMAS));

    // Without A's first archived binlog nothing connects the backup to B's archive: one line naming the missing range, nothing loaded.
    const dirA = archiveDir(s3, repo, "db", A);
    const firstA = (await readdir(dirA)).filter((n) => n.endsWith(".index.json")).sort()[0] ?? "";
    const fileA = firstA.replace(/\.index\.json$/, "");
    await rm(path.join(dirA, firstA));
    await rm(path.join(dirA, fileA));
    const u = await startTarget(servers);
    const g = await runCli(["restore", "--until-gtid", accident, "--target", u.url, "--repository", repo, "--cluster", "db"], s3.env);
    expect(g.exitCode).toBe(2);
    const lines = g.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain("the binlog archives do not connect: no archive holds the first transaction after the backup's position");
    expect(lines[0]).toContain(`where ${repo}/db/binlogs/${A} begins again`);
    expect(lines[0]).toContain(`${repo}/db/binlogs/${B} holds GTID 0-${A}-`);
    expect(await tablesIn(u)).toBe(0);
  });
});
