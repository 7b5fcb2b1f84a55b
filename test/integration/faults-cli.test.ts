// The data path under faults, through the built CLI as a user runs it:
// real MariaDB servers, the real S3 server (versitygw) behind the fault
// proxy, a full filesystem. Each case ends either correct (the right backup
// restored, checksums equal) or with one clear line that names the fault;
// never an older backup restored, a good one deleted, or a target destroyed.
import { execa } from "execa";
import { randomBytes } from "node:crypto";
import { chmod, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, runCli } from "../harness/cli.js";
import { count, seedShop } from "../harness/fixtures.js";
import { checksums, exists, startMariaDb, startReplication, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { S3ObjectStore } from "../../src/storage/s3/s3-store.js";

let s3: S3Server;
let proxy: FaultProxy;
let master: MariaDb;
const servers: MariaDb[] = [];
const bucket = "faults";
let env: Record<string, string>;
let work: string;

async function freshServer(): Promise<MariaDb> {
  const s = await startMariaDb();
  servers.push(s);
  return s;
}

function repoArgs(cluster: string): string[] {
  return ["--repository", `s3://${bucket}/r`, "--cluster", cluster, "--s3-endpoint", proxy.endpoint];
}

/**
 * Rewrite a stored object through the S3 API (a faulty writer, a newer
 * replicator): the server's own checksum matches what it holds, so only our
 * manifest checks can tell.
 */
async function rewrite(cluster: string, name: string, file: string, text: string): Promise<void> {
  const store = new S3ObjectStore({ bucket, prefix: "r", endpoint: s3.endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
  await store.put(`${cluster}/${name}/${file}`, text);
}

function objectDir(cluster: string, name: string): string {
  return path.join(s3.root, bucket, "r", cluster, name);
}

async function backup(cluster: string, source = master.url, extra: string[] = []): Promise<string> {
  const r = await runCli(["backup", "--source", source, ...repoArgs(cluster), "--json", ...extra], env);
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  return r.json!.name as string;
}

/** The one line a failed command prints on stderr (JSON log lines aside). */
function errorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((l) => l.startsWith("replicator"));
  expect(lines).toHaveLength(1);
  return lines[0] ?? "";
}

async function slaveStatus(s: MariaDb): Promise<{ Slave_IO_Running: string; Slave_SQL_Running: string } | undefined> {
  const [st] = await s.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
  return st;
}

beforeAll(async () => {
  [s3, master] = await Promise.all([startS3(), startMariaDb({ binlog: true, serverId: 1 })]);
  await s3.createBucket(bucket);
  proxy = await startFaultProxy(s3.endpoint, { seed: 7 });
  // The CLI reaches S3 only through the proxy; short timeouts keep the stalled cases quick.
  env = { ...s3.env, AWS_ENDPOINT_URL_S3: proxy.endpoint, REPLICATOR_S3_IDLE_TIMEOUT_MS: "4000" };
  await seedShop(master, { rows: 3000 });
  work = await mkdtemp(path.join(tmpdir(), "replicator-faults-"));
});

afterAll(async () => {
  await Promise.all([...servers, master].map((s) => s.destroy()));
  await proxy.close();
  await s3.stop();
  await rm(work, { recursive: true, force: true });
});

describe("storage faults are never verdicts", () => {
  let older: string;
  let newest: string;

  beforeAll(async () => {
    older = await backup("v");
    await master.query("INSERT INTO shop.customers (id, name) VALUES (900001, 'only in the newest backup')");
    newest = await backup("v");
    expect(newest > older).toBe(true);
  });

  it("retries a transient 503 on the newest manifest and restores the newest backup", async () => {
    const remove = proxy.add({ op: "GET", key: new RegExp(`${newest}/manifest\\.json$`), times: 2, action: { kind: "status", status: 503, code: "SlowDown" } });
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, ...repoArgs("v"), "--json"], env);
    remove();
    expect(r.exitCode).toBe(0);
    expect(r.json!.name).toBe(newest);
    expect(await count(target, "shop.customers WHERE id = 900001")).toBe(1);
    expect(proxy.requests.some((q) => q.fault !== undefined && q.key.endsWith(`${newest}/manifest.json`))).toBe(true);
  });

  it("a persistent fault on the newest manifest fails restore, list, verify and prune as a fault, and touches nothing", async () => {
    const remove = proxy.add({ op: "GET", key: new RegExp(`${newest}/manifest\\.json$`), action: { kind: "status", status: 500, code: "InternalError" } });
    try {
      const target = await freshServer();
      const r = await runCli(["restore", "--target", target.url, ...repoArgs("v")], env);
      expect(r.exitCode).toBe(1);
      const line = errorLine(r.stderr);
      expect(line).toContain(`${newest}/manifest.json`);
      expect(line).toMatch(/500|InternalError/);
      expect(line).not.toMatch(/corrupt|no complete backup|not found/i);
      // Nothing was loaded: not the older backup, not anything.
      const dbs = await target.query<{ n: number }>("SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = 'shop'");
      expect(dbs[0]?.n).toBe(0);

      for (const args of [["list"], ["verify"], ["prune", "--retain", "1"]]) {
        const c = await runCli([...args, ...repoArgs("v")], env);
        expect(c.exitCode, args.join(" ")).toBe(1);
        expect(errorLine(c.stderr)).toContain("manifest.json");
      }
    } finally {
      remove();
    }
    // Both backups are still there, whole.
    expect(await exists(path.join(objectDir("v", older), "manifest.json"))).toBe(true);
    expect(await exists(path.join(objectDir("v", newest), "manifest.json"))).toBe(true);
    const v = await runCli(["verify", ...repoArgs("v"), "--json"], env);
    expect(v.exitCode).toBe(0);
  });

  it("a dead S3 endpoint is named as such, not as a missing or corrupt backup", async () => {
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, "--repository", `s3://${bucket}/r`, "--cluster", "v", "--s3-endpoint", "http://127.0.0.1:9"], env);
    expect(r.exitCode).toBe(1);
    const line = errorLine(r.stderr);
    expect(line).toMatch(/cannot reach S3 endpoint http:\/\/127\.0\.0\.1:9/);
    expect(line).not.toMatch(/Premature close|corrupt|no complete backup/i);
  });

  it("connection resets and a truncated download are retried: backup, verify and restore stay exact", async () => {
    const removers = [
      proxy.add({ op: "PUT", times: 2, action: { kind: "reset" } }),
      proxy.add({ op: "GET", key: /manifest\.json$/, times: 2, action: { kind: "reset" } }),
      proxy.add({ op: "GET", key: /data\.sql\.zst$/, times: 1, action: { kind: "truncate", bytes: 4096 } }),
    ];
    try {
      const name = await backup("resets");
      const v = await runCli(["verify", name, ...repoArgs("resets"), "--json"], env);
      expect(v.exitCode).toBe(0);
      const target = await freshServer();
      const r = await runCli(["restore", "--target", target.url, ...repoArgs("resets"), "--json"], env);
      expect(r.stderr).toBe("");
      expect(r.exitCode).toBe(0);
      expect(await checksums(target, ["shop", "app"])).toEqual(await checksums(master, ["shop", "app"]));
    } finally {
      for (const f of removers) f();
    }
  });

  it("the S3 server frozen mid-upload: the backup fails as unreachable within its timeouts, and writes no manifest", async () => {
    // Hold every upload request: the S3 server is frozen right after the backup starts writing.
    const remove = proxy.add({ op: "PUT", key: /data\./, action: { kind: "stall" } });
    try {
      const r = await runCli(["backup", "--source", master.url, ...repoArgs("frozen")], env);
      expect(r.exitCode).toBe(1);
      const line = errorLine(r.stderr);
      expect(line).toMatch(/S3|storage|timed out|unreachable/i);
      expect(line).not.toMatch(/Premature close/);
    } finally {
      remove();
      proxy.clear();
    }
    const list = await runCli(["list", ...repoArgs("frozen"), "--json"], env);
    expect(list.exitCode).toBe(0);
    expect(list.json!.backups).toEqual([]);
  });

  it("the S3 server killed mid-upload: the backup fails naming the endpoint, and nothing half-written is listed", async () => {
    const remove = proxy.add({ op: "PUT", key: /data\./, times: 1, action: { kind: "stall", ms: 3000 } });
    const run = execa(process.execPath, [CLI, "backup", "--source", master.url, ...repoArgs("killed")], { reject: false, env });
    await waitFor(() => Promise.resolve(proxy.requests.some((q) => q.op === "PUT" && q.key.includes("data.") && q.fault !== undefined)), "the upload to start", 20_000);
    await s3.kill();
    const r = await run;
    remove();
    await s3.restart();
    expect(r.exitCode).toBe(1);
    const line = errorLine(r.stderr);
    expect(line).toMatch(/S3|storage|unreachable/i);
    const list = await runCli(["list", ...repoArgs("killed"), "--json"], env);
    expect(list.exitCode).toBe(0);
    expect(list.json!.backups).toEqual([]);
  });
});

describe("unusable manifests", () => {
  let good: string;
  let bad: string;

  beforeAll(async () => {
    good = await backup("m");
    bad = await backup("m");
  });

  it("a corrupt newest manifest: latest is refused (never the older one), verify fails, prune keeps the good backup", async () => {
    const original = await readFile(path.join(objectDir("m", bad), "manifest.json"), "utf8");
    await rewrite("m", bad, "manifest.json", original.slice(0, 40));
    try {
      const target = await freshServer();
      const r = await runCli(["restore", "--target", target.url, ...repoArgs("m")], env);
      expect(r.exitCode).not.toBe(0);
      const line = errorLine(r.stderr);
      expect(line).toContain(bad);
      expect(line).toContain(`--backup ${good}`);
      expect(await count(target, "information_schema.schemata WHERE schema_name = 'shop'")).toBe(0);

      const l = await runCli(["list", ...repoArgs("m"), "--json"], env);
      expect(l.exitCode).toBe(0);
      expect((l.json!.backups as { name: string }[]).map((b) => b.name)).toEqual([good]);
      expect(l.json!.unusable).toEqual([expect.objectContaining({ name: bad, reason: "CorruptManifest" })]);

      const v = await runCli(["verify", ...repoArgs("m")], env);
      expect(v.exitCode).toBe(1);
      expect(v.stdout).toContain(`${bad}/manifest.json`);

      const p = await runCli(["prune", "--retain", "1", ...repoArgs("m"), "--json"], env);
      expect(p.exitCode).toBe(0);
      expect(p.json!.deleted).toEqual([]);
      expect(await exists(path.join(objectDir("m", good), "manifest.json"))).toBe(true);

      // Named explicitly, the good one restores.
      const ok = await runCli(["restore", "--target", target.url, ...repoArgs("m"), "--backup", good, "--json"], env);
      expect(ok.exitCode).toBe(0);
      expect(ok.json!.name).toBe(good);
    } finally {
      await rewrite("m", bad, "manifest.json", original);
    }
  });

  it("a manifest from a newer format is reported as such and never deleted by retention", async () => {
    const original = await readFile(path.join(objectDir("m", bad), "manifest.json"), "utf8");
    await rewrite("m", bad, "manifest.json", JSON.stringify({ ...(JSON.parse(original) as object), formatVersion: 99 }));
    try {
      const l = await runCli(["list", ...repoArgs("m"), "--json"], env);
      expect(l.json!.unusable).toEqual([expect.objectContaining({ name: bad, reason: "UnknownFormat" })]);
      const p = await runCli(["prune", "--retain", "1", ...repoArgs("m"), "--json"], env);
      expect(p.exitCode).toBe(0);
      expect(await exists(path.join(objectDir("m", bad), "manifest.json"))).toBe(true);
      expect(await exists(path.join(objectDir("m", good), "manifest.json"))).toBe(true);
    } finally {
      await rewrite("m", bad, "manifest.json", original);
    }
  });
});

describe("names and concurrency", () => {
  it("two backups started in the same second get two names, and both are whole", async () => {
    const [a, b] = await Promise.all([
      runCli(["backup", "--source", master.url, ...repoArgs("same"), "--json"], env),
      runCli(["backup", "--source", master.url, ...repoArgs("same"), "--json"], env),
    ]);
    expect(a.exitCode).toBe(0);
    expect(b.exitCode).toBe(0);
    expect(a.json!.name).not.toBe(b.json!.name);
    const v = await runCli(["verify", ...repoArgs("same"), "--json"], env);
    expect(v.exitCode).toBe(0);
    expect((v.json!.backups as unknown[]).length).toBe(2);
  });

  it("a restore and a prune started at the same instant: either the backup is kept for the restore, or the restore says it was deleted", async () => {
    for (let i = 0; i < 3; i++) {
      const cluster = `race${i}`;
      const old = await backup(cluster);
      await backup(cluster);
      const target = await freshServer();
      const [r, p] = await Promise.all([
        runCli(["restore", "--target", target.url, ...repoArgs(cluster), "--backup", old, "--json"], env),
        runCli(["prune", "--retain", "1", ...repoArgs(cluster), "--json"], env),
      ]);
      expect(p.exitCode).toBe(0);
      const deleted = p.json!.deleted as string[];
      if (r.exitCode === 0) {
        // The restore won: it read every byte of the backup, verified.
        expect(await count(target, "shop.customers")).toBeGreaterThan(0);
      } else {
        // Prune won: the restore says the backup was deleted, and loaded nothing.
        expect(deleted).toEqual([old]);
        expect(errorLine(r.stderr)).toMatch(/not found|deleted/);
        expect(errorLine(r.stderr)).not.toMatch(/corrupt|damaged/i);
        expect(await count(target, "information_schema.schemata WHERE schema_name = 'shop'")).toBe(0);
      }
    }
  });

  it("the default source name carries the port, and a name that cannot be represented is refused, not mangled", async () => {
    const other = await freshServer();
    await other.query("CREATE DATABASE x");
    const a = await backup("names");
    const b = await backup("names", other.url);
    expect(a.endsWith(`-127.0.0.1-${master.port}`)).toBe(true);
    expect(b.endsWith(`-127.0.0.1-${other.port}`)).toBe(true);
    const bad = await runCli(["backup", "--source", master.url, ...repoArgs("names"), "--source-name", "dé-ü_数据库"], env);
    expect(bad.exitCode).toBe(2);
    expect(errorLine(bad.stderr)).toMatch(/source name/i);
    const long = await runCli(["backup", "--source", master.url, ...repoArgs("names"), "--source-name", "a".repeat(70)], env);
    expect(long.exitCode).toBe(2);
  });

  it("a repository URL that climbs out of its bucket is refused", async () => {
    const r = await runCli(["list", "--repository", `s3://${bucket}/../other/x`, "--cluster", "c", "--s3-endpoint", proxy.endpoint], env);
    expect(r.exitCode).toBe(2);
    expect(errorLine(r.stderr)).toContain("..");
  });
});

describe("options belong to their command", () => {
  it("refuses a flag the command does not use, naming why", async () => {
    const r = await runCli(["restore", "--target", master.url, ...repoArgs("v"), "--threads", "4", "--force"], env);
    expect(r.exitCode).toBe(2);
    expect(errorLine(r.stderr)).toMatch(/--threads is not an option of `replicator restore`.*how a backup is made/);
    const l = await runCli(["list", ...repoArgs("v"), "--retain", "3"], env);
    expect(l.exitCode).toBe(2);
    const b = await runCli(["backup", "--source", master.url, ...repoArgs("v"), "--backup", "x"], env);
    expect(b.exitCode).toBe(2);
  });
});

describe("destructive steps last, checked first", () => {
  it("a restore user that cannot CREATE is refused before anything is dropped", async () => {
    const name = await backup("priv");
    const target = await freshServer();
    await seedShop(target, { rows: 10 });
    const before = await checksums(target, ["shop", "app"]);
    await target.query("CREATE USER 'weak'@'127.0.0.1' IDENTIFIED BY 'weak-pass'");
    await target.query("GRANT SELECT, DROP, INSERT ON *.* TO 'weak'@'127.0.0.1'");
    const r = await runCli(
      ["restore", "--target", `mysql://weak@127.0.0.1:${target.port}`, ...repoArgs("priv"), "--backup", name, "--force"],
      { ...env, REPLICATOR_DB_PASSWORD: "weak-pass" },
    );
    expect(r.exitCode).toBe(2);
    expect(errorLine(r.stderr)).toMatch(/MissingPrivilege|cannot|privilege/i);
    expect(await checksums(target, ["shop", "app"])).toEqual(before);
  });

  it("a full disk under a file:// repository is named as such, and nothing half-written is listed", async () => {
    const mnt = path.join(work, "small");
    await mkdir(mnt);
    await execa("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    try {
      // Incompressible rows, 4 MiB: more than the filesystem holds.
      await master.query("CREATE DATABASE IF NOT EXISTS blobs");
      await master.query("CREATE TABLE blobs.b (id INT PRIMARY KEY, b LONGBLOB)");
      for (let i = 0; i < 16; i++) await master.query("INSERT INTO blobs.b VALUES (?, ?)", [i, randomBytes(256 * 1024)]);
      const r = await runCli(["backup", "--source", master.url, "--repository", `file://${mnt}`, "--cluster", "full"], env);
      expect(r.exitCode).toBe(1);
      const line = errorLine(r.stderr);
      expect(line).toMatch(/no space left/i);
      expect(line).toContain(mnt);
      expect(line).not.toMatch(/Premature close/);
      const l = await runCli(["list", "--repository", `file://${mnt}`, "--cluster", "full", "--json"], env);
      expect(l.json!.backups).toEqual([]);
    } finally {
      await master.query("DROP DATABASE IF EXISTS blobs");
      await execa("umount", [mnt]);
    }
  });
});

describe("a physical restore checks the space it needs first", () => {
  it("refuses a data directory on a filesystem too small for the backup, before writing anything", async () => {
    const b = await runCli(["backup", "--method", "mariabackup", "--source", master.url, ...repoArgs("phys"), "--json"], env);
    expect(b.stderr).toBe("");
    const name = b.json!.name as string;
    const mnt = path.join(work, "tiny-datadir");
    await mkdir(mnt);
    await execa("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]);
    try {
      const r = await runCli(["restore", "--datadir", mnt, ...repoArgs("phys"), "--backup", name], env);
      expect(r.exitCode).toBe(2);
      const line = errorLine(r.stderr);
      expect(line).toMatch(new RegExp(`data directory ${mnt} has .* free but backup ${name} needs .* unpacked`));
      // Nothing was written: no sentinel, no partial files.
      expect(await readdir(mnt)).toEqual([]);
    } finally {
      await execa("umount", [mnt]);
    }
  });
});

describe("a slave's backup killed while replication is stopped", () => {
  it("leaves no credentials behind, is reported by the next backup, which does not restart replication behind the admin's back", async () => {
    const slave = await startMariaDb({ binlog: true, serverId: 51 });
    servers.push(slave);
    await startReplication(master, slave);
    await waitCaughtUp(master, slave);
    const dir = await mkdtemp(path.join(work, "slow-"));
    const slow = path.join(dir, "slow-dump.sh");
    await writeFile(slow, `#!/bin/sh\necho '-- slow dump'\nsleep 30\nexec mariadb-dump "$@"\n`);
    await chmod(slow, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  dumpCommand: ${slow}\n`);
    const run = execa(process.execPath, [CLI, "backup", "--source", slave.url, ...repoArgs("killed-slave")], { reject: false, env, cwd: dir });
    const clusterDir = path.join(s3.root, bucket, "r", "killed-slave");
    let marker = "";
    await waitFor(async () => {
      for (const name of await readdir(clusterDir).catch(() => [] as string[])) {
        if (await exists(path.join(clusterDir, name, "replication-stopped.json"))) marker = name;
      }
      return marker !== "";
    }, "the backup to stop replication", 30_000);
    const pid = run.pid ?? 0;
    run.kill("SIGKILL");
    await run;
    // The SQL thread stays stopped: nothing restarts it after a SIGKILL.
    expect((await slaveStatus(slave))?.Slave_SQL_Running).toBe("No");
    // Its credentials file is not left readable by anyone but its owner; the next run removes it.
    const leftovers = (await readdir(tmpdir())).filter((n) => n.startsWith(`replicator-cred-${pid}-`));
    for (const l of leftovers) {
      const st = await import("node:fs/promises").then((m) => m.stat(path.join(tmpdir(), l)));
      expect(st.mode & 0o077).toBe(0);
    }

    const next = await runCli(["backup", "--source", slave.url, ...repoArgs("killed-slave"), "--json"], env);
    expect(next.exitCode).toBe(0);
    const warnings = (next.json!.warnings as string[]).join("\n");
    expect(warnings).toContain(marker);
    expect(warnings).toMatch(/stopped replication/);
    // It did not start what it did not stop.
    expect((await slaveStatus(slave))?.Slave_SQL_Running).toBe("No");
    expect((await readdir(tmpdir())).filter((n) => n.startsWith(`replicator-cred-${pid}-`))).toEqual([]);
    // Said once: a later backup no longer repeats it.
    const again = await runCli(["backup", "--source", slave.url, ...repoArgs("killed-slave"), "--json"], env);
    expect((again.json!.warnings as string[]).join("\n")).not.toContain(marker);

    const on = await runCli(["online", "--target", slave.url], env);
    expect(on.exitCode).toBe(0);
    await waitFor(async () => (await slaveStatus(slave))?.Slave_SQL_Running === "Yes", "replication to run again", 10_000);
  });
});

describe("--json output", () => {
  it("every command's JSON carries formatVersion 1 and its documented fields", async () => {
    const b = await runCli(["backup", "--source", master.url, ...repoArgs("json"), "--json"], env);
    expect(b.json).toMatchObject({ ok: true, formatVersion: 1, operation: "backup", name: (expect.any(String) as unknown), size: (expect.any(Number) as unknown), sha256: (expect.stringMatching(/^[0-9a-f]{64}$/) as unknown), warnings: [], pruned: [] });
    const name = b.json!.name as string;
    const l = await runCli(["list", ...repoArgs("json"), "--json"], env);
    expect(l.json).toMatchObject({ ok: true, formatVersion: 1, operation: "list", repository: (expect.any(String) as unknown), incomplete: [], unusable: [] });
    expect((l.json!.backups as { name: string }[])[0]).toMatchObject({ name, method: "mysqldump", role: "master", size: (expect.any(Number) as unknown), compression: "zstd" });
    const v = await runCli(["verify", ...repoArgs("json"), "--json"], env);
    expect(v.json).toMatchObject({ ok: true, formatVersion: 1, operation: "verify", backups: [{ name, objects: [expect.objectContaining({ ok: true })] }] });
    const target = await freshServer();
    const r = await runCli(["restore", "--target", target.url, ...repoArgs("json"), "--json"], env);
    expect(r.json).toMatchObject({ ok: true, formatVersion: 1, operation: "restore", name, replicating: false, warnings: [] });
    const p = await runCli(["prune", "--retain", "1", ...repoArgs("json"), "--json", "--dry-run"], env);
    expect(p.json).toMatchObject({ ok: true, formatVersion: 1, operation: "prune", retain: 1, deleted: [], abandoned: [], keptInUse: [], dryRun: true });
    const d = await runCli(["delete", name, ...repoArgs("json"), "--json"], env);
    expect(d.json).toEqual({ ok: true, formatVersion: 1, operation: "delete", name });
    const e = await runCli(["restore", "--target", target.url, ...repoArgs("json"), "--json"], env);
    expect(e.exitCode).toBe(2);
    expect(e.json).toMatchObject({ ok: false, formatVersion: 1, reason: "NoBackup", error: (expect.any(String) as unknown) });
  });
});
