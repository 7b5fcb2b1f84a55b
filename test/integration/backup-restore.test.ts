// Backup → list → verify → restore through the real CLI, against real
// MariaDB servers and a real S3 server (versitygw).
import { mkdtemp, readFile, readdir, writeFile, truncate, cp, mkdir, chmod, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execa } from "execa";
import { hostname } from "node:os";
import { createHash } from "node:crypto";
import { CLI, runCli } from "../harness/cli.js";
import { checksums, startMariaDb, type MariaDb } from "../harness/mariadb.js";
import { count, routines, seedShop } from "../harness/fixtures.js";
import { startS3, type S3Server } from "../harness/s3.js";

let s3: S3Server;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "backups";
const repo = `s3://${bucket}/prod`;
let env: Record<string, string>;

async function freshServer(): Promise<MariaDb> {
  const s = await startMariaDb();
  servers.push(s);
  return s;
}

function objectDir(name: string, cluster = "shop"): string {
  return path.join(s3.root, bucket, "prod", cluster, name);
}

beforeAll(async () => {
  [s3, master] = await Promise.all([startS3(), startMariaDb({ binlog: true, serverId: 1 })]);
  await s3.createBucket(bucket);
  env = s3.env;
  await seedShop(master, { rows: 2000 });
});

afterAll(async () => {
  await Promise.all([...servers, master].map((s) => s.destroy()));
  await s3.stop();
});

describe("backup and restore through S3", () => {
  let first: string;

  it("backs up the master with its replication position", async () => {
    const r = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    const j = r.json!;
    first = j.name as string;
    expect(first).toMatch(/^\d{8}T\d{6}Z-mysqldump-127\.0\.0\.1-\d+$/);
    expect(j.role).toBe("master");
    expect(j.size).toBeGreaterThan(1000);
    const [pos] = await master.query<{ gtid: string }>("SELECT @@gtid_binlog_pos AS gtid");
    expect((j.replication as { gtid: string }).gtid).toBe(pos!.gtid);
    expect((j.replication as { file: string }).file).toMatch(/^mysql-bin\.\d+$/);
    // The manifest is in the S3 server, next to the data object.
    const files = (await readdir(objectDir(first))).sort();
    expect(files).toEqual(["claim.json", "data.sql.zst", "manifest.json"]);
    const manifest = JSON.parse(await readFile(path.join(objectDir(first), "manifest.json"), "utf8")) as Record<string, unknown>;
    expect(manifest.formatVersion).toBe(1);
    expect((manifest.details as { lock: string }).lock).toBe("single-transaction");
  });

  it("restores the latest backup into a fresh server: every table's checksum and every routine match", async () => {
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.name).toBe(first);
    expect(await checksums(target, ["shop", "app"])).toEqual(await checksums(master, ["shop", "app"]));
    expect(await count(target, "shop.customers")).toBe(2000);
    expect(await routines(target, "shop")).toEqual(await routines(master, "shop"));
    // The trigger works after the restore.
    await target.query("CALL shop.add_order(1, 5)");
    expect(await count(target, "shop.audit")).toBe(21);
  });

  it("lists backups oldest first, named by time and method, and picks by --backup and --before", async () => {
    await master.query("INSERT INTO shop.customers (id, name) VALUES (5001, 'late')");
    await new Promise((r) => setTimeout(r, 1100));
    const second = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(second.exitCode).toBe(0);
    const secondName = second.json!.name as string;
    expect(secondName > first).toBe(true);

    const list = await runCli(["list", "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(list.exitCode).toBe(0);
    const names = (list.json!.backups as { name: string }[]).map((b) => b.name);
    expect(names).toEqual([first, secondName]);
    const table = await runCli(["list", "--repository", repo, "--cluster", "shop"], env);
    expect(table.stdout.split("\n")[0]).toMatch(/^NAME\s+METHOD\s+ROLE\s+SIZE\s+POSITION\s+FINISHED$/);
    expect(table.stdout).toContain(secondName);

    const byName = await freshServer();
    const r1 = await runCli(["restore", "--target", byName.url, "--repository", repo, "--cluster", "shop", "--backup", first, "--json"], env);
    expect(r1.exitCode).toBe(0);
    expect(await count(byName, "shop.customers")).toBe(2000);

    const byTime = await freshServer();
    const firstTime = first.slice(0, 16); // yyyymmddThhmmssZ
    const r2 = await runCli(["restore", "--target", byTime.url, "--repository", repo, "--cluster", "shop", "--before", firstTime, "--json"], env);
    expect(r2.exitCode).toBe(0);
    expect(r2.json!.name).toBe(first);

    const latest = await freshServer();
    const r3 = await runCli(["restore", "--target", latest.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(r3.json!.name).toBe(secondName);
    expect(await count(latest, "shop.customers")).toBe(2001);

    const tooEarly = await runCli(["restore", "--target", latest.url, "--repository", repo, "--cluster", "shop", "--before", "2001-01-01T00:00:00Z"], env);
    expect(tooEarly.exitCode).toBe(2);
    expect(tooEarly.stderr).toMatch(/no backup at or before 2001-01-01T00:00:00.000Z .*the oldest is/);
  });

  it("refuses a non-empty target unless --force, naming what it found", async () => {
    const target = await freshServer();
    await target.query("CREATE DATABASE crm; CREATE TABLE crm.leads (id INT PRIMARY KEY)");
    const r = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop"], env);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("is not empty (1 database with tables: crm (1 table))");
    expect(r.stderr).toContain("--force");
    expect(await count(target, "information_schema.schemata WHERE schema_name='shop'")).toBe(0);
    const forced = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop", "--force"], env);
    expect(forced.exitCode).toBe(0);
    expect(await count(target, "shop.customers")).toBe(2001);
  });

  it("redoes an interrupted restore: a target holding the restore sentinel is not taken for data", async () => {
    const target = await freshServer();
    // What a restore killed half way leaves behind: its sentinel and part of the data.
    await target.query("SET SESSION sql_log_bin=0; CREATE DATABASE _replicator_restore_in_progress; CREATE DATABASE shop; CREATE TABLE shop.customers (id INT PRIMARY KEY); INSERT INTO shop.customers VALUES (1)");
    const r = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json!.warnings).toContain("the target holds an unfinished restore (its sentinel was found); it is redone");
    expect(await count(target, "shop.customers")).toBe(2001);
    expect(await count(target, "information_schema.schemata WHERE schema_name = '_replicator_restore_in_progress'")).toBe(0);
  });

  it("never lists or restores a backup without a manifest, and prune removes it after the grace period", async () => {
    const { json } = await runCli(["list", "--repository", repo, "--cluster", "shop", "--json"], env);
    const names = (json!.backups as { name: string }[]).map((b) => b.name);
    const newest = names[names.length - 1]!;
    // A newer backup whose upload died before its manifest was written.
    const halfNew = "29991231T235959Z-mysqldump-127.0.0.1";
    const halfOld = "20010101T000000Z-mysqldump-127.0.0.1";
    for (const n of [halfNew, halfOld]) {
      await mkdir(objectDir(n), { recursive: true });
      await cp(path.join(objectDir(newest), "data.sql.zst"), path.join(objectDir(n), "data.sql.zst"));
    }
    // The old one was last written long ago; prune goes by the last write, so a running backup is never removed.
    const longAgo = new Date("2001-01-01T00:05:00Z");
    await utimes(path.join(objectDir(halfOld), "data.sql.zst"), longAgo, longAgo);
    const list = await runCli(["list", "--repository", repo, "--cluster", "shop", "--json"], env);
    expect((list.json!.backups as { name: string }[]).map((b) => b.name)).toEqual(names);
    expect(list.json!.incomplete).toEqual([halfOld, halfNew]);

    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(r.json!.name).toBe(newest);
    const named = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "shop", "--backup", halfNew, "--force"], env);
    expect(named.exitCode).toBe(2);
    expect(named.stderr).toContain(`backup ${halfNew} not found (or incomplete)`);

    const prune = await runCli(["prune", "--retain", "10", "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(prune.exitCode).toBe(0);
    expect(prune.json!.abandoned).toEqual([halfOld]);
    const after = await runCli(["list", "--repository", repo, "--cluster", "shop", "--json"], env);
    expect(after.json!.incomplete).toEqual([halfNew]);
  });

  it("verify and restore report a corrupt or truncated object as exactly that", async () => {
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "corrupt", "--json"], env);
    expect(b.exitCode).toBe(0);
    const name = b.json!.name as string;
    const ok = await runCli(["verify", name, "--repository", repo, "--cluster", "corrupt"], env);
    expect(ok.exitCode).toBe(0);
    expect(ok.stdout).toMatch(/^ok\s+.*data\.sql\.zst/m);

    const file = path.join(objectDir(name, "corrupt"), "data.sql.zst");
    const bytes = await readFile(file);
    const mid = Math.floor(bytes.length / 2);
    bytes[mid] = bytes[mid]! ^ 0xff;
    await writeFile(file, bytes);
    const bad = await runCli(["verify", name, "--repository", repo, "--cluster", "corrupt"], env);
    expect(bad.exitCode).toBe(1);
    expect(bad.stdout).toMatch(/^FAILED .*data\.sql\.zst.*corrupt/m);
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "corrupt"], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/corrupt/i);

    await truncate(file, 100);
    const r2 = await runCli(["restore", "--target", target.url, "--repository", repo, "--cluster", "corrupt", "--force"], env);
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr).toContain("is 100 bytes but the manifest says");
  });

  it("refuses an object cut short even when its manifest was rewritten to match it", async () => {
    // zlib's zstd decoder ends quietly on a stream cut inside a frame; the raw
    // size recorded at backup time is what catches it. (A file:// repository:
    // S3 objects cannot be edited behind the server's checksums.)
    const fsRepo = await mkdtemp(path.join(tmpdir(), "replicator-cut-"));
    const url = `file://${fsRepo}`;
    const b = await runCli(["backup", "--source", master.url, "--repository", url, "--cluster", "cut", "--json"], env);
    expect(b.exitCode).toBe(0);
    const name = b.json!.name as string;
    const file = path.join(fsRepo, "cut", name, "data.sql.zst");
    const whole = await readFile(file);
    const cut = whole.subarray(0, Math.floor(whole.length * 0.6));
    await writeFile(file, cut);
    const mfile = path.join(fsRepo, "cut", name, "manifest.json");
    const m = JSON.parse(await readFile(mfile, "utf8")) as { objects: { size: number; sha256: string; rawSize: number }[] };
    m.objects[0]!.size = cut.length;
    m.objects[0]!.sha256 = createHash("sha256").update(cut).digest("hex");
    await writeFile(mfile, JSON.stringify(m));
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", url, "--cluster", "cut", "--json"], env);
    expect(r.exitCode, r.stderr).toBe(1);
    expect(r.json!.reason).toBe("CorruptBackup");
    expect(r.stderr).toMatch(/(decompressed to \d+ bytes but the manifest says \d+; the stored object is truncated|does not decompress)/);
    // The sentinel stays: the target is not taken for a finished restore.
    const [s] = await target.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '_replicator_restore_in_progress'");
    expect(Number(s?.n)).toBe(1);
  });
});

describe("retention", () => {
  it("keeps the newest N after each backup and never deletes a backup a restore is using", async () => {
    const made: string[] = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 1000));
      const r = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "keep", "--retain", "2", "--json"], env);
      expect(r.exitCode).toBe(0);
      made.push(r.json!.name as string);
      if (i === 2) expect(r.json!.pruned).toEqual([made[0]]);
    }
    const list = await runCli(["list", "--repository", repo, "--cluster", "keep", "--json"], env);
    expect((list.json!.backups as { name: string }[]).map((b) => b.name)).toEqual(made.slice(1));

    // A restore holds a lease on the oldest remaining backup: prune keeps it.
    const leaseDir = path.join(s3.root, bucket, "prod", "keep", made[1]!, "in-use");
    await mkdir(leaseDir, { recursive: true });
    await writeFile(
      path.join(leaseDir, "test.json"),
      JSON.stringify({ id: "test", purpose: "restore", holder: "test", expiresAt: new Date(Date.now() + 3600_000).toISOString() }),
    );
    const prune = await runCli(["prune", "--retain", "1", "--repository", repo, "--cluster", "keep", "--json"], env);
    expect(prune.exitCode).toBe(0);
    expect(prune.json!.deleted).toEqual([]);
    expect(prune.json!.keptInUse).toEqual([made[1]]);
    const del = await runCli(["delete", made[1]!, "--repository", repo, "--cluster", "keep"], env);
    expect(del.exitCode).toBe(2);
    expect(del.stderr).toContain("is in use by test");

    const zero = await runCli(["prune", "--retain", "0", "--repository", repo, "--cluster", "keep"], env);
    expect(zero.exitCode).toBe(2);
    expect(zero.stderr).toContain("the newest backup is never deleted");
  });
});

describe("filesystem repository, config file and secrets", () => {
  it("backs up and restores with only replicator.yaml, and no secret reaches argv, logs or the manifest", async () => {
    const password = "Sup3r-s3cret-pw";
    await master.query(`CREATE USER IF NOT EXISTS 'backup'@'127.0.0.1' IDENTIFIED BY '${password}'`);
    await master.query("GRANT ALL ON *.* TO 'backup'@'127.0.0.1'");
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-fsrepo-"));
    // A wrapper records the argv mariadb-dump really gets.
    const argvLog = path.join(dir, "argv.log");
    const wrapper = path.join(dir, "dump-wrapper.sh");
    await writeFile(wrapper, `#!/bin/sh\nprintf '%s\\n' "$@" >> ${argvLog}\nexec mariadb-dump "$@"\n`);
    await chmod(wrapper, 0o755);
    await writeFile(path.join(dir, "db-password"), `${password}\n`, { mode: 0o600 });
    await mkdir(path.join(dir, "repo"));
    await writeFile(
      path.join(dir, "replicator.yaml"),
      [
        "cluster: fsdemo",
        `repository: file://${dir}/repo`,
        `source: mysql://backup@127.0.0.1:${master.port}`,
        "passwordFile: db-password",
        "compression: gzip",
        "retain: 3",
        "methodOptions:",
        `  dumpCommand: ${wrapper}`,
        "",
      ].join("\n"),
    );
    const b = await runCli(["backup", "--json", "--log-level", "debug"], {}, { cwd: dir });
    expect(b.exitCode).toBe(0);
    const name = b.json!.name as string;
    const manifestText = await readFile(path.join(dir, "repo", "fsdemo", name, "manifest.json"), "utf8");
    expect((JSON.parse(manifestText) as { compression: string }).compression).toBe("gzip");
    const argv = await readFile(argvLog, "utf8");
    expect(argv).toContain("--defaults-extra-file=");
    for (const text of [b.stdout, b.stderr, manifestText, argv]) expect(text).not.toContain(password);
    expect(b.stderr).toContain("dump started"); // debug logs were on, and still no secret

    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--json"], {}, { cwd: dir });
    // The config's password is for `backup`; the target's root has none, so pass an empty one.
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/access denied for root@127\.0\.0\.1:\d+ .*wrong user or password/);
    const r2 = await runCli(["restore", "--target", target.url, "--json"], { REPLICATOR_DB_PASSWORD: "" }, { cwd: dir });
    expect(r2.exitCode).toBe(0);
    expect(await checksums(target, ["shop", "app"])).toEqual(await checksums(master, ["shop", "app"]));
  });

  it("chooses FLUSH TABLES WITH READ LOCK when a table is not transactional", async () => {
    const src = await freshServer();
    await seedShop(src, { rows: 10, myisam: true });
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-fsrepo-"));
    const b = await runCli(["backup", "--source", src.url, "--repository", `file://${dir}`, "--json"], {});
    expect(b.exitCode).toBe(0);
    expect(b.json!.role).toBe("standalone");
    const m = JSON.parse(await readFile(path.join(dir, "default", b.json!.name as string, "manifest.json"), "utf8")) as { details: { lock: string } };
    expect(m.details.lock).toBe("ftwrl");
    expect(b.json!.warnings).toContain("binary logging is off on the source: the backup records no replication position");
    // The filesystem backend has no checksum of its own: our sha256 catches the damage.
    const file = path.join(dir, "default", b.json!.name as string, "data.sql.zst");
    const bytes = await readFile(file);
    bytes[10] = bytes[10]! ^ 0x01;
    await writeFile(file, bytes);
    const v = await runCli(["verify", "--repository", `file://${dir}`], {});
    expect(v.exitCode).toBe(1);
    expect(v.stdout).toContain("sha256 mismatch (corrupt object)");
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", `file://${dir}`], {});
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/corrupt/);
  });
});

describe("users, grants and progress", () => {
  it("--users carries accounts and grants to the restored server", async () => {
    const src = await freshServer();
    // mariadb-install-db creates root@<hostname>, which SHOW CREATE USER cannot show
    // under skip-name-resolve (see README); a real server would not have it.
    await src.query(`SET SESSION sql_log_bin=0; DROP USER IF EXISTS 'root'@'${hostname()}'`);
    await seedShop(src, { rows: 10 });
    await src.query("CREATE USER 'reporting'@'%' IDENTIFIED BY 'rep0rt'; GRANT SELECT ON shop.* TO 'reporting'@'%'");
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-users-"));
    const b = await runCli(["backup", "--source", src.url, "--repository", `file://${dir}`, "--users", "--json"], {});
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", `file://${dir}`], {});
    expect(r.exitCode).toBe(0);
    const grants = await target.query<Record<string, string>>("SHOW GRANTS FOR 'reporting'@'%'");
    expect(grants.map((g) => Object.values(g)[0])).toContain("GRANT SELECT ON `shop`.* TO `reporting`@`%`");
  });

  it("draws a progress line (bytes, rate, elapsed) on a TTY, and nothing without one", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-tty-"));
    const cmd = `${process.execPath} ${CLI} backup --source ${master.url} --repository file://${dir}`;
    const tty = await execa("script", ["-qec", cmd, "/dev/null"], { reject: false });
    expect(tty.exitCode).toBe(0);
    expect(tty.stdout).toMatch(/backup \d{8}T\d{6}Z-mysqldump-127\.0\.0\.1-\d+ [\d.]+ (KiB|MiB)\s+[\d.]+ (B|KiB|MiB|GiB)\/s\s+00:\d\d/);
    const plain = await runCli(["backup", "--source", master.url, "--repository", `file://${dir}`], {});
    expect(plain.stderr).toBe("");
  });
});

describe("bad input gets one clear line", () => {
  it.each([
    [["backup", "--source", "mysql://root:pw@127.0.0.1:1", "--repository", "file:///tmp"], 2, "contains a password; remove it and set REPLICATOR_DB_PASSWORD"],
    [["backup", "--repository", "file:///tmp"], 2, "no source given; pass --source, or set source in replicator.yaml"],
    [["backup", "--bogus"], 2, "Unknown option '--bogus'"],
    [["frobnicate"], 2, 'unknown command "frobnicate"'],
    [["restore", "--target", "mysql://root@127.0.0.1:1", "--repository", "ftp://x/y"], 2, 'unsupported repository scheme "ftp:"'],
    [["backup", "--source", "mysql://root@127.0.0.1:1", "--repository", "file:///tmp", "--retain", "0"], 2, "--retain must be a whole number >= 1"],
    [["backup", "--source", "mysql://root@127.0.0.1:1", "--repository", "file:///tmp", "--method", "tape"], 2, 'unknown backup method "tape"'],
    [["list", "--repository", "file:///nonexistent/dir"], 2, "repository directory /nonexistent/dir does not exist"],
  ])("%j exits %i", async (args, code, message) => {
    const r = await runCli(args, {});
    expect(r.exitCode).toBe(code);
    expect(r.stderr).toContain(message);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("names a missing bucket, wrong S3 credentials and a wrong database password", async () => {
    const noBucket = await runCli(["list", "--repository", "s3://no-such-bucket/x"], env);
    expect(noBucket.exitCode).toBe(2);
    expect(noBucket.stderr).toContain('S3 bucket "no-such-bucket" does not exist');
    const badKey = await runCli(["list", "--repository", repo], { ...env, AWS_SECRET_ACCESS_KEY: "wrong" });
    expect(badKey.exitCode).toBe(2);
    expect(badKey.stderr).toContain("S3 rejected the credentials");
    const badPw = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "pw"], { ...env, REPLICATOR_DB_PASSWORD: "nope" });
    expect(badPw.exitCode).toBe(2);
    expect(badPw.stderr).toMatch(/access denied for root@127\.0\.0\.1:\d+/);
    const down = await runCli(["backup", "--source", "mysql://root@127.0.0.1:1", "--repository", repo, "--cluster", "pw"], env);
    expect(down.exitCode).toBe(1);
    expect(down.stderr).toContain("cannot reach the database at 127.0.0.1:1 (ECONNREFUSED)");
    const none = await runCli(["restore", "--target", master.url, "--repository", repo, "--cluster", "empty"], env);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain("no complete backup in s3://backups/prod/empty; run `replicator backup` first");
  });
});
