// The long-running binlog archiver (`replicator binlog-archive`, not --once)
// across the events a production master goes through: the archiver
// SIGKILLed mid-file and started again, the MASTER restarted on its datadir
// (a clean shutdown, a new binlog file with its GTID_LIST), FLUSH BINARY
// LOGS, then an accident. Asserted: the archive's files, scanned, hold every
// GTID from the first to the last exactly once, and point-in-time restores
// to a GTID between the restarts and to the GTID just before the accident
// give CHECKSUM TABLE equal to the master's at that point. Real MariaDB,
// real versitygw.
import { readdir } from "node:fs/promises";
import path from "node:path";
import { execa, type ResultPromise } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, runCli } from "../harness/cli.js";
import { checksums, startMariaDb, waitFor, type MariaDb } from "../harness/mariadb.js";
import { archiveDir as archiveDirOf, currentFile, gtidPos, nextGtid, SCHEMAS, startPitr, startTarget, stopPitr, writeEvents } from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";
import { scanBinlogFile } from "../../src/pitr/binlog-file.js";
import { compareBinlogNames, parseIndex } from "../../src/pitr/layout.js";
import { readFile } from "node:fs/promises";

let s3: S3Server;
let master: MariaDb;
const stale: MariaDb[] = [];
const servers: MariaDb[] = [];
const bucket = "pitr-restart";
const repo = `s3://${bucket}/p`;
const cluster = "r1";
const SID = 21;

const archiveDir = (): string => archiveDirOf(s3, repo, cluster, SID);

/** The archive's committed end: the highest endState among its indexes (complete and partial). */
async function archivedThrough(): Promise<string[]> {
  const names = await readdir(archiveDir()).catch((): string[] => []);
  const out: string[] = [];
  for (const n of names.filter((x) => x.endsWith(".index.json"))) {
    out.push(parseIndex(await readFile(path.join(archiveDir(), n), "utf8"), n).endState);
  }
  return out;
}

function startArchiver(): ResultPromise {
  return execa(process.execPath, [CLI, "binlog-archive", "--source", master.url, "--repository", repo, "--cluster", cluster, "--flush-interval", "1"], {
    env: { ...process.env, ...s3.env }, reject: false, detached: true,
  });
}

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 200, tables: "timed" }));
});

afterAll(async () => {
  await stopPitr(s3, servers, master, stale);
});

describe("the long-running archiver across its own kill, a master restart and a rotation", () => {
  it("archives every GTID once and restores exactly to points between and after the restarts", async () => {
    await writeEvents(master, "before the backup", 5);
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", cluster, "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    await writeEvents(master, "after the backup", 10);

    let archiver: ResultPromise | undefined = startArchiver();
    // What the master holds at the two restore points, taken while it runs.
    const points = { midGtid: "", midReference: {} as Record<string, string>, accidentGtid: "", reference: {} as Record<string, string> };
    try {
      // The archiver is mid-file: the open binlog has reached the archive as a partial object.
      const cur = await currentFile(master);
      await waitFor(async () => (await readdir(archiveDir()).catch((): string[] => [])).includes(`${cur}.partial.index.json`), "a partial object", 60_000);
      process.kill(-(archiver.pid ?? 0), "SIGKILL");
      await archiver;
      await writeEvents(master, "while the archiver is dead", 5);
      archiver = startArchiver();
      await writeEvents(master, "after the archiver's restart", 5);
      points.midReference = await checksums(master, SCHEMAS);
      points.midGtid = nextGtid(await gtidPos(master));
      await master.query("UPDATE shop.customers SET balance = balance + 7 WHERE id <= 20");
      await writeEvents(master, "before the master's restart", 5);
      const before = await gtidPos(master);
      await waitFor(async () => (await archivedThrough()).includes(before), "the archive to reach the master's position", 60_000);

      // The master stops cleanly and starts again on its datadir and port: a new binlog file.
      await master.stop();
      stale.push(master);
      await new Promise((r) => setTimeout(r, 1500));
      master = await startMariaDb({ binlog: true, serverId: SID, datadir: master.datadir, port: master.port });
      expect(await gtidPos(master)).toBe(before);
      await writeEvents(master, "after the master's restart", 5);
      await master.query("FLUSH BINARY LOGS");
      await writeEvents(master, "after the rotation", 5);
      await master.query("DELETE FROM shop.customers WHERE id % 10 = 3");
      points.reference = await checksums(master, SCHEMAS);
      points.accidentGtid = nextGtid(await gtidPos(master));
      await master.query("DROP TABLE app.events");
      await master.query("UPDATE shop.customers SET name = 'oops'");
      const end = await gtidPos(master);
      // The archiver reconnects by itself (with backoff) and archives through the accident.
      await waitFor(async () => (await archivedThrough()).includes(end), "the archiver to reconnect and reach the master's position", 120_000);
      const a = archiver;
      archiver = undefined;
      a.kill("SIGTERM");
      const r = await a;
      expect(r.exitCode, String(r.stderr)).toBe(0);
      expect(String(r.stderr)).toContain("reconnecting");
    } finally {
      if (archiver?.pid) process.kill(-archiver.pid, "SIGKILL");
    }

    // The archive, scanned file by file in binlog order (the open one as its partial):
    // GTIDs 1..N of the master, each once, ending at the master's position.
    const names = await readdir(archiveDir());
    const logs = (await master.query<{ Log_name: string }>("SHOW BINARY LOGS")).map((l) => l.Log_name).sort(compareBinlogNames);
    const [status] = await master.query<{ File: string }>("SHOW MASTER STATUS");
    const gtids: string[] = [];
    for (const log of logs) {
      const object = log === status?.File ? `${log}.partial` : log;
      expect(names).toContain(object);
      gtids.push(...(await scanBinlogFile(path.join(archiveDir(), object))).gtids.map((g) => `${g.gtid.domain}-${g.gtid.server}-${g.gtid.seq}`));
    }
    const seqs = gtids.map((g) => Number(g.split("-")[2]));
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(gtids[gtids.length - 1]).toBe(await gtidPos(master));
    // Every file of the master is archived: none missing, none but the open one partial.
    expect(names.filter((n) => !n.endsWith(".index.json")).sort(compareBinlogNames)).toEqual(logs.map((l) => (l === status?.File ? `${l}.partial` : l)));

    const t1 = await startTarget(servers);
    const r1 = await runCli(["restore", "--until-gtid", points.accidentGtid, "--target", t1.url, "--repository", repo, "--cluster", cluster], s3.env);
    expect(r1.stderr).toBe("");
    expect(r1.exitCode).toBe(0);
    expect(await checksums(t1, SCHEMAS)).toEqual(points.reference);

    const t2 = await startTarget(servers);
    const r2 = await runCli(["restore", "--until-gtid", points.midGtid, "--target", t2.url, "--repository", repo, "--cluster", cluster], s3.env);
    expect(r2.stderr).toBe("");
    expect(r2.exitCode).toBe(0);
    expect(await checksums(t2, SCHEMAS)).toEqual(points.midReference);
  });
});
