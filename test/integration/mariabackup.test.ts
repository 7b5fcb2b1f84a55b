// The physical method through the real CLI: `replicator backup --method
// mariabackup` of a master and of a slave, `replicator restore --datadir`
// into the data directory of a stopped server, and slaves seeded with
// --replicate-from that replicate as soon as mariadbd starts on them. Real
// MariaDB servers, mariabackup, mbstream; a file:// repository and one S3 round trip.
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { count, routines, seedShop } from "../harness/fixtures.js";
import { checksums, startMariaDb, startReplication, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";
import { startS3 } from "../harness/s3.js";

const SENTINEL = ".replicator-restore-in-progress";
const SCHEMAS = ["shop", "app"];
const replEnv = { REPLICATOR_REPLICATION_PASSWORD: "replpass" };

let master: MariaDb;
let slave: MariaDb;
let work: string;
let repo: string;
const servers: MariaDb[] = [];

interface Status { Slave_IO_Running: string; Slave_SQL_Running: string; Last_IO_Error: string; Last_SQL_Error: string; Using_Gtid: string }

async function slaveStatus(s: MariaDb): Promise<Status | undefined> {
  const [r] = await s.query<Status>("SHOW SLAVE STATUS");
  return r;
}

async function newServer(opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb(opts);
  servers.push(s);
  return s;
}

/** A fresh path for a data directory (not created: restore creates it). */
async function datadirPath(tag: string): Promise<string> {
  return path.join(await mkdtemp(path.join(work, `${tag}-`)), "data");
}

async function backup(source: MariaDb, cluster: string, extra: string[] = [], env: Record<string, string> = {}): Promise<{ name: string; json: Record<string, unknown> }> {
  const r = await runCli(["backup", "--method", "mariabackup", "--source", source.url, "--repository", repo, "--cluster", cluster, "--json", ...extra], env);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  return { name: r.json!.name as string, json: r.json! };
}

/** The CLI's one-line message (the JSON log lines around it, written asynchronously, may come in any order). */
function messageLine(text: string): string {
  const lines = text.split("\n").filter((l) => l.startsWith("replicator "));
  expect(lines).toHaveLength(1);
  return lines[0] ?? "";
}

async function allOwnedByMe(dir: string): Promise<string[]> {
  const uid = process.getuid?.() ?? 0;
  const others: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const p = path.join(e.parentPath, e.name);
    if ((await stat(p)).uid !== uid) others.push(p);
  }
  return others;
}

beforeAll(async () => {
  [master, slave] = await Promise.all([
    newServer({ binlog: true, serverId: 1 }),
    newServer({ binlog: true, serverId: 2, args: ["--log-slave-updates", "--read-only"] }),
  ]);
  await seedShop(master, { rows: 2000, myisam: true });
  await startReplication(master, slave);
  await waitCaughtUp(master, slave);
  work = await mkdtemp(path.join(tmpdir(), "replicator-mariabackup-it-"));
  await mkdir(path.join(work, "repo"));
  repo = `file://${work}/repo`;
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
  if (work) await rm(work, { recursive: true, force: true });
});

describe("a master's physical backup", () => {
  let name: string;
  let position: Record<string, unknown>;

  it("records the master's own binlog file, position and GTID", async () => {
    const b = await backup(master, "m");
    name = b.name;
    expect(name).toMatch(/^\d{8}T\d{6}Z-mariabackup-127\.0\.0\.1-\d+$/);
    expect(b.json.role).toBe("master");
    position = b.json.replication as Record<string, unknown>;
    const [st] = await master.query<{ File: string; Position: number }>("SHOW MASTER STATUS");
    const [g] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(position).toEqual({ role: "master", file: st!.File, position: st!.Position, gtid: g!.pos, sourceServerId: 1 });
    const dir = path.join(work, "repo", "m", name);
    expect((await readdir(dir)).sort()).toEqual(["claim.json", "data.xbstream.zst", "manifest.json"]);
    const m = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8")) as { kind: string; details: Record<string, unknown> };
    expect(m.kind).toBe("physical");
    expect(m.details).toMatchObject({ safeSlaveBackup: false, parallel: 1, datadir: master.datadir });
    const v = await runCli(["verify", name, "--repository", repo, "--cluster", "m"]);
    expect(v.exitCode).toBe(0);
  });

  it("restores into an empty data directory: every table's checksum (InnoDB and MyISAM) and every routine match", async () => {
    const dir = await datadirPath("restore");
    const r = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "m", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json).toMatchObject({ name, target: dir, replicating: false, replicaConfigured: false, warnings: [] });
    // The position read back from the restored data is the one the backup recorded.
    expect(r.json!.replication).toEqual(position);
    const entries = await readdir(dir);
    expect(entries).not.toContain(SENTINEL);
    expect(entries).not.toContain(".replicator-staging");
    expect(entries).not.toContain("master.info");
    expect(entries.filter((e) => /-bin\.|relay/.test(e))).toEqual([]);
    expect(await allOwnedByMe(dir)).toEqual([]);

    const restored = await newServer({ datadir: dir, serverId: 10 });
    const want = await checksums(master, SCHEMAS);
    expect(Object.keys(want)).toContain("shop.legacy");
    expect(await checksums(restored, SCHEMAS)).toEqual(want);
    expect(await routines(restored, "shop")).toEqual(await routines(master, "shop"));
    expect(await count(restored, "shop.customers")).toBe(2000);
    expect(await slaveStatus(restored)).toBeUndefined();
  });

  it("seeds a slave: mariadbd started on the restored data replicates a write made on the master after the backup", async () => {
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9001, 'after backup'), (9002, 'after backup too')");
    const dir = await datadirPath("seed");
    const r = await runCli(
      ["restore", "--datadir", dir, "--repository", repo, "--cluster", "m", "--backup", name, "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"],
      replEnv,
    );
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json).toMatchObject({ replicaConfigured: true, replicatingFrom: `repl@127.0.0.1:${master.port}`, replication: position });
    expect(r.stdout).not.toContain("replpass");
    expect(await readdir(dir)).not.toContain(SENTINEL);

    const seeded = await newServer({ datadir: dir, serverId: 11, binlog: true, args: ["--log-slave-updates"] });
    await waitFor(async () => {
      const s = await slaveStatus(seeded);
      return s?.Slave_IO_Running === "Yes" && s.Slave_SQL_Running === "Yes";
    }, "the seeded slave to replicate");
    expect((await slaveStatus(seeded))?.Using_Gtid).toBe("Slave_Pos");
    await waitCaughtUp(master, seeded);
    expect(await count(seeded, "shop.customers WHERE id IN (9001, 9002)")).toBe(2);
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9003, 'later')");
    await waitCaughtUp(master, seeded);
    expect(await checksums(seeded, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
    // Nothing of its own in its binlog: only the master's GTIDs.
    const [g] = await seeded.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(g!.pos.split(",").filter((x) => x.split("-")[1] === "11")).toEqual([]);
  });
});

describe("a slave's physical backup", () => {
  it("records the master's GTID position, leaves the slave replicating, and seeds a slave of the master", async () => {
    await waitCaughtUp(master, slave);
    const [mpos] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    const b = await backup(slave, "s");
    expect(b.json.role).toBe("slave");
    expect(b.json.replication).toEqual({ role: "slave", gtid: mpos!.pos, masterHost: "127.0.0.1", masterPort: master.port, sourceServerId: 1 });
    const st = await slaveStatus(slave);
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);

    await master.query("INSERT INTO shop.customers (id, name) VALUES (9100, 'after slave backup')");
    const dir = await datadirPath("seed-from-slave");
    const r = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "s", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"], replEnv);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json!.replication).toEqual(b.json.replication);
    // The slave's own replication state (master.info, relay logs) is not in the backup.
    const seeded = await newServer({ datadir: dir, serverId: 12 });
    await waitFor(async () => (await slaveStatus(seeded))?.Slave_SQL_Running === "Yes", "the seeded slave to replicate");
    await waitCaughtUp(master, seeded);
    expect(await count(seeded, "shop.customers WHERE id = 9100")).toBe(1);
    expect(await checksums(seeded, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
  });

  it("records file/position when the slave does not use GTID", async () => {
    await slave.query("STOP SLAVE; CHANGE MASTER TO MASTER_USE_GTID=no; START SLAVE");
    try {
      await waitCaughtUp(master, slave);
      const [m] = await master.query<{ File: string; Position: number }>("SHOW MASTER STATUS");
      const b = await backup(slave, "s-nogtid");
      expect(b.json.replication).toEqual({ role: "slave", file: m!.File, position: m!.Position, masterHost: "127.0.0.1", masterPort: master.port, sourceServerId: 1 });
      const dir = await datadirPath("seed-nogtid");
      const r = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "s-nogtid", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"], replEnv);
      expect(r.exitCode, r.stderr).toBe(0);
      await master.query("INSERT INTO shop.customers (id, name) VALUES (9200, 'file/pos')");
      const seeded = await newServer({ datadir: dir, serverId: 13 });
      await waitFor(async () => (await count(seeded, "shop.customers WHERE id = 9200")) === 1, "the file/position slave to catch up");
      expect((await slaveStatus(seeded))?.Using_Gtid).toBe("No");
    } finally {
      await slave.query("STOP SLAVE; CHANGE MASTER TO MASTER_USE_GTID=slave_pos; START SLAVE");
    }
  });

  it("brings replication back when mariabackup dies half way after stopping the SQL thread", async () => {
    const dir = await mkdtemp(path.join(work, "failing-"));
    const failing = path.join(dir, "failing-mariabackup.sh");
    // Does what --safe-slave-backup does first (it gets the same credentials
    // file and connection flags), writes a little, then dies.
    await writeFile(
      failing,
      `#!/bin/sh\nmariadb "$1" "$4" "$5" "$6" -e 'STOP SLAVE SQL_THREAD'\nprintf 'XBSTCK01'\necho '[00] 2026-11-25 01:26:01 Error: failed to copy datafile ./shop/customers.ibd' >&2\nexit 1\n`,
    );
    await chmod(failing, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  mariabackupCommand: ${failing}\n`);
    const r = await runCli(["backup", "--method", "mariabackup", "--source", slave.url, "--repository", repo, "--cluster", "f"], {}, { cwd: dir });
    expect(r.exitCode).toBe(1);
    // One line for the person (a JSON log line next to it carries the tail of mariabackup's stderr).
    expect(messageLine(r.stderr)).toBe(`replicator backup: ${failing} failed to back up the source (exit code 1): Error: failed to copy datafile ./shop/customers.ibd`);
    const st = await slaveStatus(slave);
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    const list = await runCli(["list", "--repository", repo, "--cluster", "f", "--json"]);
    expect(list.json!.backups).toEqual([]);
  });
});

describe("refusals and damaged backups", () => {
  it("refuses a non-empty data directory, naming what is there", async () => {
    const dir = await datadirPath("nonempty");
    await mkdir(path.join(dir, "shop"), { recursive: true });
    await writeFile(path.join(dir, "ibdata1"), "x");
    const r = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "m"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain(`data directory ${dir} is not empty (2 entries: ibdata1, shop)`);
    expect((await readdir(dir)).sort()).toEqual(["ibdata1", "shop"]);
  });

  it("asks for --datadir when a physical backup is restored into a server", async () => {
    const r = await runCli(["restore", "--target", master.url, "--repository", repo, "--cluster", "m"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/is physical \(mariabackup\): stop the server and restore into its data directory with --datadir DIR/);
  });

  it("refuses truncated and corrupted objects, and redoes a restore that was interrupted", async () => {
    const good = (await backup(master, "c")).name;
    await new Promise((r) => setTimeout(r, 1100));
    const plain = (await backup(master, "c", ["--compression", "none"])).name;
    const object = (n: string, file: string): string => path.join(work, "repo", "c", n, file);

    // A flipped byte in the middle of the compressed object.
    const zst = object(good, "data.xbstream.zst");
    const original = await readFile(zst);
    const flipped = Buffer.from(original);
    flipped[flipped.length >> 1] = flipped[flipped.length >> 1]! ^ 0xff;
    await writeFile(zst, flipped);
    const dir = await datadirPath("damaged");
    const r1 = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "c", "--backup", good]);
    expect(r1.exitCode).toBe(1);
    expect(r1.stderr.trim().split("\n")).toHaveLength(1);
    expect(r1.stderr).toMatch(/corrupt/i);
    // The sentinel stays: the data directory is marked as an unfinished restore.
    expect(await readdir(dir)).toContain(SENTINEL);

    // Uncompressed: mbstream sees the damage first; the sha256 verdict still wins.
    const raw = object(plain, "data.xbstream");
    const rawBytes = await readFile(raw);
    const rawFlipped = Buffer.from(rawBytes);
    rawFlipped[rawFlipped.length >> 1] = rawFlipped[rawFlipped.length >> 1]! ^ 0xff;
    await writeFile(raw, rawFlipped);
    const r2 = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "c", "--backup", plain]);
    expect(r2.exitCode, `${r2.stderr}\n${r2.stdout}`).toBe(1);
    expect(r2.stderr).toContain("sha256 mismatch; the stored object is corrupt");

    // Truncated.
    await writeFile(zst, original);
    await truncate(zst, 1000);
    const r3 = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "c", "--backup", good]);
    expect(r3.exitCode).toBe(1);
    expect(r3.stderr).toContain(`is 1000 bytes but the manifest says ${original.length}`);

    // Repaired: the retry wipes what the failed attempts left and restores.
    await writeFile(zst, original);
    const r4 = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "c", "--backup", good, "--json"]);
    expect(r4.exitCode, r4.stderr).toBe(0);
    expect(r4.json!.warnings).toContain("the data directory holds an unfinished restore (its sentinel was found); it was wiped and the restore redone");
    expect(await readdir(dir)).not.toContain(SENTINEL);
    const restored = await newServer({ datadir: dir, serverId: 14 });
    expect(await count(restored, "shop.legacy")).toBe(2);
  });
});

describe("bad input and credentials", () => {
  it("names a wrong password, a missing privilege, a bad option and a data directory that is not here", async () => {
    const badPw = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "pw"], { REPLICATOR_DB_PASSWORD: "nope" });
    expect(badPw.exitCode).toBe(2);
    expect(badPw.stderr.trim().split("\n")).toHaveLength(1);
    expect(badPw.stderr).toMatch(/access denied for root@127\.0\.0\.1:\d+ .*wrong user or password/);

    // Connects, but lacks what mariabackup needs: mariabackup's own words.
    await master.query("CREATE USER IF NOT EXISTS 'weak'@'127.0.0.1' IDENTIFIED BY 'weakpw'; GRANT SELECT, SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'weak'@'127.0.0.1'");
    const weak = await runCli(["backup", "--method", "mariabackup", "--source", `mysql://weak@127.0.0.1:${master.port}`, "--repository", repo, "--cluster", "pw"], { REPLICATOR_DB_PASSWORD: "weakpw" });
    expect(weak.exitCode).toBe(1);
    expect(messageLine(weak.stderr)).toBe("replicator backup: mariabackup failed to back up the source (exit code 1): the backup user is missing privileges mariabackup needs: RELOAD on *.*, PROCESS on *.*");
    expect(weak.stderr).not.toContain("weakpw");

    const dir = await mkdtemp(path.join(work, "opts-"));
    await writeFile(path.join(dir, "replicator.yaml"), "methodOptions:\n  parallel: four\n");
    const badOpt = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "pw"], {}, { cwd: dir });
    expect(badOpt.exitCode).toBe(2);
    expect(badOpt.stderr).toContain('parallel must be a whole number from 1 to 64 (got "four")');

    await writeFile(path.join(dir, "replicator.yaml"), "methodOptions:\n  datadir: /nonexistent/mysql\n");
    const remote = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "pw"], {}, { cwd: dir });
    expect(remote.exitCode).toBe(2);
    expect(remote.stderr).toContain("must run where the server's data directory is: /nonexistent/mysql (methodOptions.datadir) is not on this machine");

    // Another server's data directory (here, say): it does not hold the master's databases.
    const other = await newServer({ serverId: 15 });
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  datadir: ${other.datadir}\n`);
    const mismatch = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "pw"], {}, { cwd: dir });
    expect(mismatch.exitCode).toBe(2);
    expect(mismatch.stderr).toContain(`${other.datadir} on this machine is not the data directory of root@127.0.0.1:${master.port}: it lacks the server's databases app, shop`);
  });

  it("never puts the password on mariabackup's command line, in logs or in the manifest", async () => {
    const password = "Sup3r-s3cret-mb";
    await master.query(`CREATE USER IF NOT EXISTS 'backup'@'127.0.0.1' IDENTIFIED BY '${password}'; GRANT ALL ON *.* TO 'backup'@'127.0.0.1'`);
    const dir = await mkdtemp(path.join(work, "secrets-"));
    const argvLog = path.join(dir, "argv.log");
    const wrapper = path.join(dir, "mb-wrapper.sh");
    await writeFile(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" >> ${argvLog}\nexec mariabackup "$@"\n`);
    await chmod(wrapper, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  mariabackupCommand: ${wrapper}\n  parallel: 2\n`);
    const r = await runCli(
      ["backup", "--method", "mariabackup", "--source", `mysql://backup@127.0.0.1:${master.port}`, "--repository", repo, "--cluster", "secrets", "--json", "--log-level", "debug"],
      { REPLICATOR_DB_PASSWORD: password },
      { cwd: dir },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const argv = (await readFile(argvLog, "utf8")).split("\n");
    expect(argv[0]).toMatch(/^--defaults-extra-file=/);
    expect(argv).toContain("--parallel=2");
    const manifest = await readFile(path.join(work, "repo", "secrets", r.json!.name as string, "manifest.json"), "utf8");
    for (const text of [r.stdout, r.stderr, manifest, argv.join("\n")]) expect(text).not.toContain(password);
    expect(r.stderr).toContain("mariabackup started");
  });
});

describe("through S3", () => {
  it("round-trips a physical backup", async () => {
    const s3 = await startS3();
    try {
      await s3.createBucket("phys");
      const b = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", "s3://phys/x", "--cluster", "m", "--json"], s3.env);
      expect(b.exitCode, b.stderr).toBe(0);
      const dir = await datadirPath("s3");
      const r = await runCli(["restore", "--datadir", dir, "--repository", "s3://phys/x", "--cluster", "m", "--json"], s3.env);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.json!.replication).toEqual(b.json!.replication);
      const restored = await newServer({ datadir: dir, serverId: 16 });
      expect(await checksums(restored, SCHEMAS)).toEqual(await checksums(master, SCHEMAS));
    } finally {
      await s3.stop();
    }
  });
});
