// Point-in-time recovery: `replicator binlog-archive` copies a real
// master's binlogs into a real S3 server (versitygw); `replicator restore
// --until/--until-gtid` restores the newest backup before the target and
// replays the archive up to it. Asserted on what a user cares about: the
// restored tables' CHECKSUM TABLE equal a reference taken just before the
// "accident", the archive's GTIDs continuous after an archiver was killed,
// and a missing archive file named in one line.
import { createHash } from "node:crypto";
import { readdir, readFile, rm } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, runCli } from "../harness/cli.js";
import { checksums, waitFor, type MariaDb } from "../harness/mariadb.js";
import {
  archiveDir as archiveDirOf, currentFile, gtidPos, insertEvent, purgeBinlogsTo, runAccident, SCHEMAS, startPitr, startTarget, stopPitr, tablesIn,
  writeAfterBackup, writeEvents,
} from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";
import { scanBinlogFile } from "../../src/pitr/binlog-file.js";

let s3: S3Server;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "pitr";
const repo = `s3://${bucket}/p`;
const SID = 11;

const archiveDir = (cluster: string): string => archiveDirOf(s3, repo, cluster, SID);
const fresh = (): Promise<MariaDb> => startTarget(servers);

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 300, tables: "timed" }));
});

afterAll(async () => {
  await stopPitr(s3, servers, master);
});

describe("restore to a point in time", () => {
  let reference: Record<string, string>;
  let accidentAt: Date;
  let accidentGtid: string;
  let backupName: string;
  let betweenFile: string;

  it("archives the master's binlogs and restores to one second before an accident, and to the GTID just before it", async () => {
    await writeEvents(master, "before backup", 5);
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    backupName = String(b.json?.name);
    // Writes after the backup, across binlog rotations, in a table the backup does not have.
    betweenFile = await writeAfterBackup(master);
    await master.query("UPDATE shop.customers SET balance = balance + 1 WHERE id <= 50");
    // The accident, after writes across a rotation; then the archive.
    const accident = await runAccident(s3, master, repo, "c1");
    ({ reference, accidentAt, accidentGtid } = accident);

    const a = accident.archived;
    expect(a.stderr).toBe("");
    expect(a.exitCode).toBe(0);
    expect(a.json?.serverId).toBe(SID);
    expect(a.json?.endState).toBe(await gtidPos(master));
    // The archive sits beside the backups without being one: list shows the backup alone, prune keeps the archive.
    const l = await runCli(["list", "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect((l.json?.backups as { name: string }[]).map((x) => x.name)).toEqual([backupName]);
    expect(l.json?.incomplete).toEqual([]);
    const pr = await runCli(["prune", "--retain", "1", "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(pr.json?.deleted).toEqual([]);
    expect(pr.json?.abandoned).toEqual([]);
    expect((await readdir(archiveDir("c1"))).filter((n) => n.endsWith(".index.json")).length).toBeGreaterThanOrEqual(4);

    // --dry-run prints the plan: the backup, the binlogs, the range.
    const until = new Date(accidentAt.getTime() - 1000).toISOString();
    const plan = await runCli(["restore", "--until", until, "--target", master.url, "--repository", repo, "--cluster", "c1", "--dry-run", "--json"], s3.env);
    expect(plan.exitCode).toBe(0);
    const p = plan.json?.plan as { backup: string; binlogs: { file: string }[]; stopGtid: string };
    expect(p.backup).toBe(backupName);
    expect(p.binlogs.map((x) => x.file)).toContain(betweenFile);
    expect(p.stopGtid).toBe(accidentGtid);

    const t1 = await fresh();
    const r1 = await runCli(["restore", "--until", until, "--target", t1.url, "--repository", repo, "--cluster", "c1", "--json"], s3.env);
    expect(r1.stderr).toBe("");
    expect(r1.exitCode).toBe(0);
    expect(await checksums(t1, SCHEMAS)).toEqual(reference);

    const t2 = await fresh();
    const r2 = await runCli(["restore", "--until-gtid", accidentGtid, "--target", t2.url, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r2.stderr).toBe("");
    expect(r2.exitCode).toBe(0);
    expect(r2.stdout).toContain(`GTID ${accidentGtid}`);
    expect(await checksums(t2, SCHEMAS)).toEqual(reference);
  });

  it("a missing archive file before the target fails with one line naming the missing range", async () => {
    const dir = archiveDir("c1");
    await rm(path.join(dir, betweenFile), { recursive: true, force: true });
    await rm(path.join(dir, `${betweenFile}.index.json`), { recursive: true, force: true });
    const t = await fresh();
    const r = await runCli(["restore", "--until-gtid", accidentGtid, "--target", t.url, "--repository", repo, "--cluster", "c1"], s3.env);
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/gap/);
    expect(lines[0]).toContain(betweenFile);
    expect(lines[0]).toMatch(/GTIDs after \d+-\d+-\d+ up to \d+-\d+-\d+/);
    // Nothing was loaded.
    expect(await tablesIn(t)).toBe(0);
  });
});

describe("the archiver", () => {
  it("killed mid-file and restarted leaves no gap and no duplicate", async () => {
    const env = { ...process.env, ...s3.env };
    let child: ResultPromise | undefined = execa(process.execPath, [CLI, "binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c2", "--flush-interval", "1"], { env, reject: false, detached: true });
    try {
      await writeEvents(master, "archiver run 1", 10);
      const open = await currentFile(master);
      // The open binlog reaches the archive as a partial object within the flush interval.
      await waitFor(async () => (await readdir(archiveDir("c2")).catch((): string[] => [])).includes(`${open}.partial.index.json`), "a partial object", 60_000);
      // SIGKILL the archiver and its mariadb-binlog child, as a container's end would.
      process.kill(-(child.pid ?? 0), "SIGKILL");
      await child;
      child = undefined;
      await writeEvents(master, "while stopped", 10);
      await master.query("FLUSH BINARY LOGS");
      await insertEvent(master, "after the rotation");
      const again = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c2", "--once", "--json"], s3.env);
      expect(again.stderr).toBe("");
      expect(again.exitCode).toBe(0);
      // A second --once run repeats nothing that is complete.
      const third = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c2", "--once", "--json"], s3.env);
      expect(third.exitCode).toBe(0);
      expect((third.json?.archived as { complete: boolean }[]).filter((x) => x.complete)).toEqual([]);
    } finally {
      if (child?.pid) process.kill(-child.pid, "SIGKILL");
    }
    // Every closed binlog of the master is in the archive byte for byte, and the open one as a partial prefix.
    const dir = archiveDir("c2");
    const names = await readdir(dir);
    const [status] = await master.query<{ File: string }>("SHOW MASTER STATUS");
    const logs = (await master.query<{ Log_name: string }>("SHOW BINARY LOGS")).map((l) => l.Log_name);
    const sha = async (f: string): Promise<string> => createHash("sha256").update(await readFile(f)).digest("hex");
    const gtids: string[] = [];
    for (const log of logs) {
      if (log === status?.File) {
        expect(names).toContain(`${log}.partial`);
        expect(names).not.toContain(log);
        gtids.push(...(await scanBinlogFile(path.join(dir, `${log}.partial`))).gtids.map((g) => `${g.gtid.domain}-${g.gtid.server}-${g.gtid.seq}`));
      } else {
        expect(names).toContain(log);
        expect(names).not.toContain(`${log}.partial`);
        expect(await sha(path.join(dir, log))).toBe(await sha(path.join(path.dirname(master.datadir), "data", log)));
        gtids.push(...(await scanBinlogFile(path.join(dir, log))).gtids.map((g) => `${g.gtid.domain}-${g.gtid.server}-${g.gtid.seq}`));
      }
    }
    // GTIDs 1..N of the master, each once, in order.
    const seqs = gtids.map((g) => Number(g.split("-")[2]));
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(gtids[gtids.length - 1]).toBe(await gtidPos(master));
  });

  it("stopped with SIGTERM flushes the open binlog, exits 0 and leaves no replication client on the master", async () => {
    const dumps = async (): Promise<number> =>
      (await master.query<{ Command: string }>("SHOW PROCESSLIST")).filter((p) => p.Command === "Binlog Dump").length;
    const before = await dumps();
    const child = execa(process.execPath, [CLI, "binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c3", "--flush-interval", "1"], { env: { ...process.env, ...s3.env }, reject: false });
    try {
      await waitFor(async () => (await dumps()) > before, "the archiver's replication connection", 60_000);
      await insertEvent(master, "before SIGTERM");
      const cur = await currentFile(master);
      child.kill("SIGTERM");
      const r = await child;
      expect(r.exitCode, `${String(r.signal)}: ${r.stderr}`).toBe(0);
      expect(await readdir(archiveDir("c3"))).toContain(`${cur}.partial`);
      // A dump thread notices a gone client when it next sends an event: write some.
      await waitFor(async () => {
        await insertEvent(master, "after SIGTERM");
        return (await dumps()) <= before;
      }, "the master to drop the archiver's connection", 30_000);
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("reports binlogs the master purged before they were archived as a gap, in one line", async () => {
    const a = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c3", "--once"], s3.env);
    expect(a.exitCode).toBe(0);
    const before = await currentFile(master);
    await insertEvent(master, "never archived");
    await master.query("FLUSH BINARY LOGS");
    await master.query("FLUSH BINARY LOGS");
    const now = await currentFile(master);
    // A binlog is purged only once InnoDB's binlog checkpoint has passed it: try until it is gone.
    await purgeBinlogsTo(master, now);
    // In a Deployment the same line is the container's termination message, which the operator shows in status.
    const termination = path.join(s3.root, "..", `termination-${String(process.pid)}.json`);
    const r = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c3", "--once"], { ...s3.env, REPLICATOR_TERMINATION_LOG: termination });
    expect(r.exitCode).toBe(2);
    const lines = r.stderr.trim().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`no longer has ${before}`);
    expect(lines[0]).toContain(`its oldest is ${now}`);
    const message = JSON.parse(await readFile(termination, "utf8")) as { ok: boolean; error: string };
    await rm(termination, { force: true });
    expect(message.ok).toBe(false);
    expect(message.error).toContain(`no longer has ${before}`);
  });

  it("a dead S3 endpoint is StorageUnreachable, not a verdict on the archive", async () => {
    const r = await runCli(["binlog-archive", "--source", master.url, "--repository", repo, "--cluster", "c4", "--once", "--json"], { ...s3.env, AWS_ENDPOINT_URL_S3: "http://127.0.0.1:9" });
    expect(r.exitCode).toBe(1);
    expect(r.json?.reason).toBe("StorageUnreachable");
  });
});
