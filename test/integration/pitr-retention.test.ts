// Retention of the binlog archive: `replicator prune` removes, with the
// backups it deletes, the archived binlogs that no remaining backup needs to
// be replayed forward, against a real master (binlogs rotated by FLUSH
// BINARY LOGS, backups between) and a real S3 server (versitygw). Asserted:
// exactly the binlogs before the kept backup's position go (dry run first,
// then for real), a point-in-time restore after the kept backup is still
// exact (checksums), one before it fails with one line naming what is
// missing, and an index that cannot be read or parsed deletes nothing.
import { readdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { checksums, type MariaDb } from "../harness/mariadb.js";
import {
  archiveDir as archiveDirOf, currentFile, SCHEMAS, sleep, startPitr, startTarget, stopPitr, tablesIn, utcNow, writeEvents,
} from "../harness/pitr.js";
import { type S3Server } from "../harness/s3.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { openRepository } from "../../src/storage/open.js";

let s3: S3Server;
let proxy: FaultProxy;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "pitr-retention";
const repo = `s3://${bucket}/r`;
const CLUSTER = "ret";
const SID = 21;
const repoArgs = ["--repository", repo, "--cluster", CLUSTER];

const archiveDir = (): string => archiveDirOf(s3, repo, CLUSTER, SID);

async function archived(): Promise<string[]> {
  return (await readdir(archiveDir())).sort();
}

const fresh = (): Promise<MariaDb> => startTarget(servers);

async function backup(): Promise<string> {
  const b = await runCli(["backup", "--source", master.url, ...repoArgs, "--json"], s3.env);
  expect(b.stderr).toBe("");
  expect(b.exitCode).toBe(0);
  return String(b.json?.name);
}

function errorLines(stderr: string): string[] {
  return stderr.trim().split("\n").filter((l) => l.startsWith("replicator"));
}

beforeAll(async () => {
  ({ s3, master } = await startPitr({ bucket, serverId: SID, rows: 200, tables: "timed" }));
  proxy = await startFaultProxy(s3.endpoint, { seed: 11 });
});

afterAll(async () => {
  await proxy.close();
  await stopPitr(s3, servers, master);
});

describe("binlog archive retention", () => {
  let b1: string;
  let b2: string;
  let beforeKept: Date;
  let afterKept: Date;
  let reference: Record<string, string>;
  let expectedGone: string[];

  it("prune --retain 1 removes exactly the archived binlogs before the kept backup's position (dry run first)", async () => {
    await writeEvents(master, "first", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "second", 3);
    b1 = await backup();
    await sleep(1100);
    beforeKept = await utcNow(master);
    await sleep(1100);
    await writeEvents(master, "between backups a", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "between backups b", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "between backups c", 3);
    // The kept backup's position lies in this binlog: every file before it is wholly in the backup.
    const keptFile = await currentFile(master);
    b2 = await backup();
    await writeEvents(master, "after the kept backup", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "later", 3);
    reference = await checksums(master, SCHEMAS);
    await sleep(2200);
    afterKept = await utcNow(master);
    await sleep(1100);
    await master.query("UPDATE shop.customers SET name = 'oops'");
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "in the open binlog", 1);

    const a = await runCli(["binlog-archive", "--source", master.url, ...repoArgs, "--once", "--json"], s3.env);
    expect(a.stderr).toBe("");
    expect(a.exitCode).toBe(0);
    const logs = (await master.query<{ Log_name: string }>("SHOW BINARY LOGS")).map((l) => l.Log_name);
    expectedGone = logs.filter((l) => l < keptFile);
    expect(expectedGone.length).toBeGreaterThanOrEqual(3);
    const before = await archived();
    for (const f of expectedGone) expect(before).toContain(`${f}.index.json`);

    const dry = await runCli(["prune", "--retain", "1", ...repoArgs, "--dry-run", "--json"], s3.env);
    expect(dry.stderr).toBe("");
    expect(dry.exitCode).toBe(0);
    expect(dry.json?.deleted).toEqual([b1]);
    expect((dry.json?.binlogsDeleted as { file: string }[]).map((x) => x.file)).toEqual(expectedGone);
    expect(await archived()).toEqual(before);
    const dryText = await runCli(["prune", "--retain", "1", ...repoArgs, "--dry-run"], s3.env);
    expect(dryText.stdout).toContain(`would delete ${expectedGone.length} archived binlog(s) before ${b2}`);

    const pr = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
    expect(pr.stderr).toBe("");
    expect(pr.exitCode).toBe(0);
    expect(pr.json?.deleted).toEqual([b1]);
    const gone = pr.json?.binlogsDeleted as { serverId: number; file: string; lastGtid: string }[];
    expect(gone.map((x) => x.file)).toEqual(expectedGone);
    expect(gone.every((x) => x.serverId === SID)).toBe(true);
    expect((pr.json?.binlogsKeptFrom as { name: string }).name).toBe(b2);
    const after = await archived();
    expect(after).toEqual(before.filter((n) => !expectedGone.some((f) => n === f || n === `${f}.index.json`)));
    expect(after).toContain(keptFile);
    expect(after).toContain(`${keptFile}.index.json`);

    // A second prune has nothing more to take.
    const again = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
    expect(again.exitCode).toBe(0);
    expect(again.json?.binlogsDeleted).toEqual([]);
  });

  it("a point-in-time restore after the kept backup is still exact", async () => {
    const t = await fresh();
    const r = await runCli(["restore", "--until", afterKept.toISOString(), "--target", t.url, ...repoArgs, "--json"], s3.env);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect((r.json?.plan as { backup: string }).backup).toBe(b2);
    expect(await checksums(t, SCHEMAS)).toEqual(reference);
  });

  it("a point in time before the kept backup fails with one line naming what is missing", async () => {
    const t = await fresh();
    const r = await runCli(["restore", "--until", beforeKept.toISOString(), "--target", t.url, ...repoArgs], s3.env);
    expect(r.exitCode).toBe(2);
    const lines = errorLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`cannot restore to ${beforeKept.toISOString()}`);
    expect(lines[0]).toContain(`the earliest recoverable point is backup ${b2}`);
    expect(lines[0]).toMatch(/the archive .* begins at \S+ \(GTID \d+-\d+-\d+, .*\): everything before is missing/);
    expect(await tablesIn(t)).toBe(0);
  });

  it("an index that cannot be parsed, or whose bytes were damaged at rest, deletes nothing, no backup and no binlog, and is named", async () => {
    await writeEvents(master, "before a third backup", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "more", 3);
    await sleep(1100);
    const b3 = await backup();
    const a = await runCli(["binlog-archive", "--source", master.url, ...repoArgs, "--once"], s3.env);
    expect(a.exitCode).toBe(0);
    const names = await archived();
    const indexes = names.filter((n) => n.endsWith(".index.json") && !n.includes(".partial"));
    const damaged = indexes[indexes.length - 1] as string;
    const file = path.join(archiveDir(), damaged);
    const good = await readFile(file);
    const key = `${CLUSTER}/binlogs/${SID}/${damaged}`;
    const store = await openRepository(repo, { endpoint: s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const expectNothingDeleted = async (): Promise<void> => {
      expect(await archived()).toEqual(names);
      const l = await runCli(["list", ...repoArgs, "--json"], s3.env);
      expect((l.json?.backups as { name: string }[]).map((x) => x.name)).toEqual([b2, b3]);
    };
    try {
      // Written through S3: a valid object whose content is not an index.
      await store.put(key, "{ not json");
      const pr = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
      expect(pr.exitCode, pr.stderr).toBe(2);
      expect(pr.json?.reason).toBe("CorruptArchive");
      const lines = errorLines(pr.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(damaged);
      expect(lines[0]).toContain("not valid JSON");
      expect(lines[0]).toContain("nothing was deleted");
      await expectNothingDeleted();

      // Bytes changed on the server's disk: the store's own checksum refuses them.
      await store.put(key, good);
      await writeFile(file, good.toString("utf8").replace(/"size": \d+/, '"size": 1'));
      const pr2 = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
      expect(pr2.exitCode, pr2.stderr).toBe(1);
      const lines2 = errorLines(pr2.stderr);
      expect(lines2).toHaveLength(1);
      expect(lines2[0]).toContain(damaged);
      expect(lines2[0]).toContain("nothing was deleted");
      await expectNothingDeleted();
    } finally {
      await store.put(key, good);
      store.close();
    }
  });

  it("a storage fault reading an index is a fault, not a verdict: nothing deleted, the key named; a leased backup keeps its binlogs", async () => {
    const names = await archived();
    const victim = names.find((n) => n.endsWith(".index.json") && !n.includes(".partial")) as string;
    const env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint };
    const remove = proxy.add({ op: "GET", key: new RegExp(`${victim.replace(/\./g, "\\.")}$`), action: { kind: "status", status: 500, code: "InternalError" } });
    try {
      const pr = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], env);
      expect(pr.exitCode).toBe(1);
      expect(pr.json?.reason).not.toBe("CorruptArchive");
      const lines = errorLines(pr.stderr);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(victim);
      expect(lines[0]).toMatch(/500|InternalError/);
      expect(lines[0]).toContain("nothing was deleted");
    } finally {
      remove();
    }
    expect(await archived()).toEqual(names);
    const l = await runCli(["list", ...repoArgs, "--json"], s3.env);
    expect((l.json?.backups as { name: string }[]).length).toBe(2);

    // A restore's lease on the older backup keeps it, and with it every binlog it would replay.
    const store = await openRepository(repo, { endpoint: s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    const leaseKey = `${CLUSTER}/${b2}/in-use/test-lease.json`;
    try {
      await store.put(leaseKey, JSON.stringify({ id: "test-lease", purpose: "point-in-time restore", holder: "test", expiresAt: new Date(Date.now() + 600_000).toISOString() }));
      const leased = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
      expect(leased.exitCode, leased.stderr).toBe(0);
      expect(leased.json?.deleted).toEqual([]);
      expect(leased.json?.keptInUse).toEqual([b2]);
      expect(leased.json?.binlogsDeleted).toEqual([]);
      expect(await archived()).toEqual(names);
    } finally {
      await store.delete([leaseKey]);
      store.close();
    }

    // With the fault and the lease gone, the same prune goes through: the older backup and the binlogs before the newer one.
    const pr = await runCli(["prune", "--retain", "1", ...repoArgs, "--json"], s3.env);
    expect(pr.exitCode).toBe(0);
    expect(pr.json?.deleted).toEqual([b2]);
    expect((pr.json?.binlogsDeleted as unknown[]).length).toBeGreaterThan(0);
  });
});

describe("backup --retain trims the binlog archive too", () => {
  it("the backups it prunes take the archived binlogs no kept backup needs with them; the newest complete binlog stays", async () => {
    const cluster = "ret-backup";
    const args = ["--repository", repo, "--cluster", cluster];
    const first = await runCli(["backup", "--source", master.url, ...args, "--json"], s3.env);
    expect(first.exitCode).toBe(0);
    await writeEvents(master, "after the first backup", 3);
    await master.query("FLUSH BINARY LOGS");
    await writeEvents(master, "and more", 3);
    await master.query("FLUSH BINARY LOGS");
    const keptFile = await currentFile(master);
    const a = await runCli(["binlog-archive", "--source", master.url, ...args, "--once", "--json"], s3.env);
    expect(a.exitCode).toBe(0);
    const complete = (await master.query<{ Log_name: string }>("SHOW BINARY LOGS")).map((l) => l.Log_name).filter((l) => l < keptFile).sort();
    // Every complete binlog is before the new backup's position; the newest of them is where the archiver resumes, so it stays.
    const expected = complete.slice(0, -1).map((f) => `${String(SID)}/${f}`);
    expect(expected.length).toBeGreaterThanOrEqual(1);

    const b = await runCli(["backup", "--source", master.url, ...args, "--retain", "1", "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    expect(b.json?.pruned).toEqual([first.json?.name]);
    expect([...((b.json?.prunedBinlogs as string[] | undefined) ?? [])].sort()).toEqual(expected);
    const dir = archiveDirOf(s3, repo, cluster, SID);
    const left = await readdir(dir);
    for (const f of complete.slice(0, -1)) {
      expect(left).not.toContain(f);
      expect(left).not.toContain(`${f}.index.json`);
    }
    expect(left).toContain(`${complete.at(-1) ?? "?"}.index.json`);
  });
});
