// PostgreSQL through the real CLI, against real PostgreSQL 15 servers (the
// conformance kit's sandbox) and a file:// repository; one round trip
// through the real S3 server.
//
// The CLI runs as the servers' OS user (postgres, when the tests run as
// root), as it does in the init container of a server pod: a physical
// restore writes a data directory the server must own.
import { createHash } from "node:crypto";
import { chown, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import path from "node:path";
import { constants as zlibConstants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CLI, type CliResult } from "../harness/cli.js";
import { waitFor } from "../harness/mariadb.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { postgresFixture as fixture } from "../../src/conformance/fixture-postgres.js";
import { removePostgresSandboxTemplate, serverUser, startPostgresSandbox } from "../../src/conformance/sandbox-postgres.js";
import type { SandboxOptions, SandboxServer } from "../../src/conformance/types.js";
import { endpointUrl } from "../../src/db/endpoint.js";
import { withPgEnv } from "../../src/db/postgres/client.js";

const repoRoot = path.resolve(import.meta.dirname, "../..");
// Passwords with the characters that need quoting in a password file (: \)
// and in a conninfo string (' \ and a space).
const PASSWORD = "su:per\\secret 'pw'";
const REPL = { user: "repl", password: "re'pl\\pass:word x" };
const DUMP_SCHEMAS = ["kit"];

let primary: SandboxServer;
const servers: SandboxServer[] = [];
let repoDir: string;
let repo: string;

/** Run the built CLI as the servers' OS user. */
async function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  const u = serverUser();
  const r = await execa(process.execPath, [CLI, ...args], {
    reject: false,
    env: { REPLICATOR_CONFIG: undefined, REPLICATOR_DB_PASSWORD: PASSWORD, REPLICATOR_REPLICATION_PASSWORD: undefined, ...env },
    extendEnv: true,
    cwd: repoRoot,
    timeout: 170_000,
    ...(u ? { uid: u.uid, gid: u.gid } : {}),
  });
  const lastLine = r.stdout.trim().split("\n").pop() ?? "";
  let json: Record<string, unknown> | undefined;
  if (lastLine.startsWith("{")) json = JSON.parse(lastLine) as Record<string, unknown>;
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

async function sandbox(opts: SandboxOptions = {}): Promise<SandboxServer> {
  const s = await startPostgresSandbox({ password: PASSWORD, ...opts });
  servers.push(s);
  return s;
}

const url = (s: SandboxServer, user?: string): string => endpointUrl({ ...s.endpoint, ...(user ? { user } : {}) });

const tempDirs: string[] = [];

/** A directory the CLI (running as the servers' user) can write; removed after the tests. */
async function userDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  tempDirs.push(dir);
  const u = serverUser();
  if (u) await chown(dir, u.uid, u.gid);
  return dir;
}

/** The backup's directory in the file:// repository. */
function backupDir(cluster: string, name: string): string {
  return path.join(repoDir, cluster, name);
}

/** pg_dump of `s` (schema and data), without the lines that differ between two servers for the same data. */
async function dumpOf(s: SandboxServer): Promise<string> {
  const out = await withPgEnv(s.endpoint, async (env) => (await execa("pg_dump", ["--no-password", ...DUMP_SCHEMAS.flatMap((n) => ["-n", n])], { env })).stdout);
  return out
    .split("\n")
    .filter((l) => !l.startsWith("--") && !/^\\(un)?restrict /.test(l))
    .join("\n");
}

async function schemaExists(s: SandboxServer, name: string): Promise<boolean> {
  const rows = await s.query(`SELECT count(*) FROM pg_namespace WHERE nspname = '${name}'`);
  return rows[0]?.[0] === "1";
}

/** Flip bytes in the middle of a stored object and rewrite the manifest to match: a damaged backup that passes the size and sha256 checks. */
async function damageConsistently(cluster: string, name: string, object: string): Promise<void> {
  await rewriteConsistently(cluster, name, object, (b) => {
    const out = Buffer.from(b);
    const mid = Math.floor(out.length / 2);
    for (let i = mid; i < mid + 16; i++) out.writeUInt8(out.readUInt8(i) ^ 0x5a, i);
    return out;
  });
}

/** Make a stored object shorter and rewrite the manifest to match: a cut-short backup that passes the size and sha256 checks. */
async function cutShortConsistently(cluster: string, name: string, object: string, keep: (size: number) => number): Promise<void> {
  await rewriteConsistently(cluster, name, object, (b) => b.subarray(0, keep(b.length)));
}

async function rewriteConsistently(cluster: string, name: string, object: string, change: (b: Buffer) => Buffer, rawSize?: number): Promise<void> {
  const dir = backupDir(cluster, name);
  const file = path.join(dir, object);
  const bytes = change(await readFile(file));
  await writeFile(file, bytes);
  const manifestFile = path.join(dir, "manifest.json");
  const manifest = JSON.parse(await readFile(manifestFile, "utf8")) as { objects: { name: string; size: number; sha256: string; rawSize?: number }[] };
  manifest.objects[0]!.size = bytes.length;
  manifest.objects[0]!.sha256 = createHash("sha256").update(bytes).digest("hex");
  if (rawSize !== undefined) manifest.objects[0]!.rawSize = rawSize;
  await writeFile(manifestFile, JSON.stringify(manifest));
}

/**
 * Replace a stored zstd object by the same raw bytes changed by `change` and compressed again (by
 * the agent's in-process zstd, as backups before the zstd tool were written, or by the zstd tool),
 * with a manifest that matches: well-formed zstd whatever the content.
 */
async function recompressConsistently(cluster: string, name: string, object: string, by: "zlib" | "tool", change: (raw: Buffer) => Buffer = (b) => b): Promise<void> {
  const raw = change(zstdDecompressSync(await readFile(path.join(backupDir(cluster, name), object))));
  const packed = by === "zlib" ? zstdCompressSync(raw, { params: { [zlibConstants.ZSTD_c_checksumFlag]: 1 } }) : (await execa("zstd", ["-3", "-c"], { input: raw, encoding: "buffer" })).stdout;
  await rewriteConsistently(cluster, name, object, () => Buffer.from(packed), raw.length);
}

beforeAll(async () => {
  primary = await sandbox({ primary: true, replicationUser: REPL });
  await fixture.seed(primary);
  repoDir = await userDir("replicator-pg-repo-");
  repo = `file://${repoDir}`;
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
  await Promise.all(tempDirs.map((d) => rm(d, { recursive: true, force: true })));
  removePostgresSandboxTemplate();
});

describe("pg_dump: a logical backup of one database", () => {
  let first: string;

  it("backs up the database in the URL and restores it into an empty server: every table, the view, the sequence and the schema match", async () => {
    const b = await cli(["backup", "--source", url(primary), "--repository", repo, "--cluster", "pg", "--json"]);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    first = b.json!.name as string;
    expect(first).toMatch(/^\d{8}T\d{6}Z-pg_dump-127\.0\.0\.1-\d+$/);
    expect(b.json!.role).toBe("master");
    expect(b.json!.replication).toBeUndefined();
    expect((await readdir(backupDir("pg", first))).sort()).toEqual(["claim.json", "data.sql.zst", "manifest.json"]);
    const manifest = JSON.parse(await readFile(path.join(backupDir("pg", first), "manifest.json"), "utf8")) as Record<string, unknown>;
    expect(manifest.details).toMatchObject({ database: "postgres", format: "plain" });
    expect((manifest.source as { version: string }).version).toMatch(/^15\./);

    const target = await sandbox();
    const r = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", "pg", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.name).toBe(first);
    expect(await fixture.checksums(target)).toEqual(await fixture.checksums(primary));
    expect(await dumpOf(target)).toBe(await dumpOf(primary));
    // The restore's sentinel is gone, and the trigger and the sequence work on the copy.
    expect(await schemaExists(target, "_replicator_restore_in_progress")).toBe(false);
    await target.query("INSERT INTO kit.orders (customer_id, amount, placed) VALUES (7, 1.50, '2024-01-01')");
    expect(await target.query("SELECT max(id), count(*) FROM kit.events WHERE payload LIKE 'order % for 1.50'")).toEqual([["8600", "1"]]);
    await target.destroy();
  });

  it("refuses a non-empty target, naming what it found; --force replaces what the backup holds and keeps the rest", async () => {
    const target = await sandbox();
    await target.query("CREATE TABLE public.leads (id int PRIMARY KEY); INSERT INTO public.leads VALUES (1)");
    const r = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", "pg"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toContain("is not empty (1 database with tables: public (1 table))");
    expect(r.stderr).toContain("--force");
    expect(await schemaExists(target, "kit")).toBe(false);

    // What --force replaces: a stale copy of the backup's own schema.
    await target.query("CREATE SCHEMA kit; CREATE TABLE kit.customers (id int PRIMARY KEY, name text NOT NULL); INSERT INTO kit.customers VALUES (1, 'stale')");
    const forced = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", "pg", "--force", "--json"]);
    expect(forced.stderr).toBe("");
    expect(forced.exitCode).toBe(0);
    expect(forced.json!.warnings).toEqual([expect.stringContaining("target was not empty")]);
    expect(await fixture.checksums(target)).toEqual(await fixture.checksums(primary));
    expect(await target.query("SELECT count(*) FROM public.leads")).toEqual([["1"]]);
    await target.destroy();
  });

  it("refuses a truncated or cut-short object and commits nothing of it; the target keeps the sentinel so the next restore redoes it", async () => {
    const cluster = "pg-corrupt";
    const b = await cli(["backup", "--source", url(primary), "--repository", repo, "--cluster", cluster, "--json"]);
    expect(b.exitCode).toBe(0);
    const name = b.json!.name as string;
    const target = await sandbox();

    // 1. Truncated on storage: the size no longer matches the manifest.
    const file = path.join(backupDir(cluster, name), "data.sql.zst");
    const good = await readFile(file);
    await truncate(file, Math.floor(good.length / 2));
    const r1 = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", cluster]);
    expect(r1.exitCode).toBe(1);
    expect(r1.stderr).toContain(`data.sql.zst is ${Math.floor(good.length / 2)} bytes but the manifest says ${good.length}`);
    expect(await schemaExists(target, "kit")).toBe(false);
    expect(await schemaExists(target, "_replicator_restore_in_progress")).toBe(true);

    // 2. Damaged, with a manifest that matches (a faulty writer): zstd's
    // frame checksum fails at the end of the stream, after most of the dump
    // has reached psql.
    await writeFile(file, good);
    await damageConsistently(cluster, name, "data.sql.zst");
    const r2 = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", cluster]);
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr).toMatch(/does not decompress .*the stored object is corrupt/);
    expect(await schemaExists(target, "kit")).toBe(false);

    // 3. Uncompressed and cut short at a line end: every statement that
    // arrived is valid SQL, but the dump lacks pg_dump's completion line.
    const raw = await cli(["backup", "--source", url(primary), "--repository", repo, "--cluster", cluster, "--compression", "none", "--json"]);
    expect(raw.exitCode).toBe(0);
    const rawName = raw.json!.name as string;
    const sql = await readFile(path.join(backupDir(cluster, rawName), "data.sql"), "utf8");
    const cut = sql.lastIndexOf("\nALTER TABLE ONLY kit.orders") + 1;
    expect(cut).toBeGreaterThan(0);
    await cutShortConsistently(cluster, rawName, "data.sql", () => Buffer.byteLength(sql.slice(0, cut)));
    const r3 = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", cluster, "--backup", rawName]);
    expect(r3.exitCode).toBe(1);
    expect(r3.stderr).toContain("does not end with pg_dump's completion line: the dump is incomplete; nothing was committed");
    expect(await schemaExists(target, "kit")).toBe(false);

    // The sentinel makes the next restore a redo, not a "non-empty target".
    const redo = await cli(["restore", "--target", url(target), "--repository", repo, "--cluster", "pg", "--json"]);
    expect(redo.exitCode, redo.stderr).toBe(0);
    expect(redo.json!.warnings).toContain("the target holds an unfinished restore (its sentinel was found); it is redone");
    expect(await fixture.checksums(target)).toEqual(await fixture.checksums(primary));
    expect(await schemaExists(target, "_replicator_restore_in_progress")).toBe(false);
    await target.destroy();
  });

  it("names a wrong password, an unknown database and a stopped server in one line", async () => {
    const wrong = await cli(["backup", "--source", url(primary), "--repository", repo, "--cluster", "pg"], { REPLICATOR_DB_PASSWORD: "not-it" });
    expect(wrong.exitCode).toBe(2);
    expect(wrong.stderr.trim().split("\n")).toHaveLength(1);
    expect(wrong.stderr).toContain(`PostgreSQL at 127.0.0.1:${primary.endpoint.port} rejected the password of user "postgres"`);
    expect(wrong.stderr).toContain("REPLICATOR_DB_PASSWORD or --password-file");
    expect(wrong.stderr).not.toContain("not-it");

    const nodb = await cli(["backup", "--source", `${url(primary).replace(/\/postgres$/, "")}/shop`, "--repository", repo, "--cluster", "pg"]);
    expect(nodb.exitCode).toBe(2);
    expect(nodb.stderr).toContain('has no database "shop"');

    const down = await sandbox();
    await down.stop();
    const r = await cli(["backup", "--source", url(down), "--repository", repo, "--cluster", "pg"]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`cannot reach PostgreSQL at 127.0.0.1:${down.endpoint.port} (connection refused)`);
    await down.destroy();
  });
  it("a pg_dump that fails midway (a table its user may not read) stores no backup and says why in one line", async () => {
    // pg_dump writes into the agent's zstd through an OS pipe: its failure after the first bytes
    // must still leave no manifest, so nothing is listed or restored.
    const pw = "dump'er pw";
    await primary.query(`CREATE ROLE dumper LOGIN PASSWORD '${pw.replace(/'/g, "''")}'`);
    await primary.query("GRANT USAGE ON SCHEMA kit TO dumper");
    await primary.query("GRANT SELECT ON ALL TABLES IN SCHEMA kit TO dumper");
    await primary.query("GRANT SELECT ON ALL SEQUENCES IN SCHEMA kit TO dumper");
    await primary.query("REVOKE SELECT ON kit.events FROM dumper");
    try {
      const r = await cli(["backup", "--source", url(primary, "dumper"), "--repository", repo, "--cluster", "pg-denied"], { REPLICATOR_DB_PASSWORD: pw });
      expect(r.exitCode).toBe(1);
      // One line says why (pg_dump's error line, not the "detail: Query was" after it); the rest is the logged detail.
      expect(r.stderr.trim().split("\n").filter((l) => !l.startsWith("{"))).toEqual(["replicator backup: pg_dump failed to dump the source (exit code 1): query failed: ERROR:  permission denied for table events"]);
      expect(r.stderr).not.toContain(pw);
      const after = await cli(["list", "--repository", repo, "--cluster", "pg-denied", "--json"]);
      expect(after.exitCode).toBe(0);
      // Never listed as a backup (and so never restored): an incomplete prefix, for prune to remove after 6 h.
      const listed = JSON.parse(after.stdout.trim().split("\n").pop() ?? "{}") as { backups: unknown[]; incomplete: string[] };
      expect(listed.backups).toEqual([]);
      expect(listed.incomplete).toHaveLength(1);
      const restore = await cli(["restore", "--target", url(primary), "--repository", repo, "--cluster", "pg-denied"]);
      expect(restore.exitCode).toBe(2);
      expect(restore.stderr).toContain("no complete backup in");
    } finally {
      await primary.query("REVOKE ALL ON ALL TABLES IN SCHEMA kit FROM dumper");
      await primary.query("REVOKE ALL ON ALL SEQUENCES IN SCHEMA kit FROM dumper");
      await primary.query("REVOKE USAGE ON SCHEMA kit FROM dumper");
      await primary.query("DROP ROLE dumper");
    }
  });
});

describe("pg_basebackup: a physical backup of the whole cluster", () => {
  let name: string;
  /** The primary's checksums when `name` was taken (later tests write to it). */
  let atBackup: Record<string, string>;
  /** The standby the seeding test makes (used by the next test). */
  let standby: SandboxServer;

  it("backs up with the WAL end point and timeline, and restores into an empty data directory that starts with every table intact", async () => {
    const b = await cli(["backup", "--source", url(primary), "--method", "pg_basebackup", "--repository", repo, "--cluster", "pgb", "--json"]);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    name = b.json!.name as string;
    atBackup = await fixture.checksums(primary);
    expect(name).toMatch(/-pg_basebackup-127\.0\.0\.1-\d+$/);
    const pos = b.json!.replication as { role: string; lsn: string; timeline: number };
    expect(pos.role).toBe("master");
    expect(pos.timeline).toBe(1);
    expect(pos.lsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);
    // The end point is behind the primary's current WAL position, and in the backup's own records.
    const [[behind]] = (await primary.query(`SELECT pg_current_wal_lsn() >= '${pos.lsn}'::pg_lsn`)) as [[string]];
    expect(behind).toBe("t");
    expect((await readdir(backupDir("pgb", name))).sort()).toEqual(["claim.json", "data.tar.zst", "manifest.json"]);

    const copy = await sandbox({ empty: true });
    const r = await cli(["restore", "--datadir", copy.datadir, "--repository", repo, "--cluster", "pgb", "--json"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.replication).toEqual(pos);
    expect(r.json!.replicaConfigured).toBe(false);
    expect((await stat(copy.datadir)).mode & 0o777).toBe(0o700);
    expect(await readdir(copy.datadir)).not.toContain(".replicator-restore-in-progress");
    await copy.start();
    expect(await copy.query("SELECT pg_is_in_recovery()")).toEqual([["f"]]);
    expect(await fixture.checksums(copy)).toEqual(atBackup);
    await copy.destroy();
  });

  it("seeds a standby with --replicate-from: it streams from the primary and sees writes made after the backup", async () => {
    await fixture.writeAfter(primary);
    standby = await sandbox({ empty: true });
    const r = await cli(
      ["restore", "--datadir", standby.datadir, "--repository", repo, "--cluster", "pgb", "--replicate-from", url(primary, REPL.user), "--json"],
      { REPLICATOR_REPLICATION_PASSWORD: REPL.password },
    );
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.replicaConfigured).toBe(true);
    expect(r.json!.replicatingFrom).toBe(`repl@127.0.0.1:${primary.endpoint.port}`);
    // The replication password is only in the 0600 postgresql.auto.conf, as pg_basebackup -R writes it.
    const conf = path.join(standby.datadir, "postgresql.auto.conf");
    expect((await stat(conf)).mode & 0o777).toBe(0o600);
    expect(await readdir(standby.datadir)).toContain("standby.signal");

    await standby.start();
    await waitFor(() => fixture.replicating(standby), "the standby to stream from the primary");
    // The primary sees it under this host's name (application_name in primary_conninfo).
    expect(await primary.query("SELECT application_name, state FROM pg_stat_replication WHERE usename = 'repl'")).toEqual([
      [hostname().toLowerCase().replace(/[^a-z0-9_-]+/g, "_"), "streaming"],
    ]);
    await waitFor(() => fixture.sawWriteAfter(standby), "the write made after the backup to reach the standby");
    await primary.query("INSERT INTO kit.events (id, payload) VALUES (2000002, 'written while streaming')");
    await waitFor(async () => (await standby.query("SELECT count(*) FROM kit.events WHERE id = 2000002"))[0]?.[0] === "1", "a live write to reach the standby");
    expect(await fixture.checksums(standby)).toEqual(await fixture.checksums(primary));
  });

  it("backs up a standby (role slave), and refuses it as a logical restore target or as the primary to seed from", async () => {
    const b = await cli(["backup", "--source", url(standby), "--method", "pg_basebackup", "--repository", repo, "--cluster", "pgb-standby", "--json"]);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    expect(b.json!.role).toBe("slave");
    expect(b.json!.replication).toMatchObject({ role: "slave", timeline: 1 });
    const copy = await sandbox({ empty: true });
    const r = await cli(["restore", "--datadir", copy.datadir, "--repository", repo, "--cluster", "pgb-standby", "--json"]);
    expect(r.exitCode, r.stderr).toBe(0);
    // Without --replicate-from the copy is a server of its own, not a second standby.
    expect(r.json!.warnings).toEqual([expect.stringContaining("the backup was taken from a standby: its standby.signal was removed")]);
    await copy.start();
    expect(await copy.query("SELECT pg_is_in_recovery()")).toEqual([["f"]]);
    expect(await fixture.checksums(copy)).toEqual(await fixture.checksums(standby));
    await copy.destroy();

    const d = await cli(["backup", "--source", url(standby), "--repository", repo, "--cluster", "pg-standby", "--json"]);
    expect(d.exitCode).toBe(0);
    expect(d.json!.role).toBe("slave");
    expect(d.json!.warnings).toEqual([expect.stringContaining("dumped from a standby")]);

    const into = await cli(["restore", "--target", url(standby), "--repository", repo, "--cluster", "pg", "--force"]);
    expect(into.exitCode).toBe(2);
    expect(into.stderr).toContain(`target postgres@127.0.0.1:${standby.endpoint.port} is a PostgreSQL standby (in recovery) and cannot be loaded into`);

    const from = await cli(
      ["restore", "--datadir", path.join(await userDir("replicator-pg-from-standby-"), "data"), "--repository", repo, "--cluster", "pgb", "--replicate-from", url(standby, REPL.user)],
      { REPLICATOR_REPLICATION_PASSWORD: REPL.password },
    );
    expect(from.exitCode).toBe(2);
    expect(from.stderr).toContain(`repl@127.0.0.1:${standby.endpoint.port} is a standby (in recovery), not a primary; pass the primary as --replicate-from`);
    await standby.destroy();
  });

  it("names a user without the REPLICATION attribute, and a replication user that may not list the primary's WAL", async () => {
    await primary.query("CREATE ROLE app LOGIN PASSWORD 'app-pw'; CREATE ROLE repl2 LOGIN REPLICATION PASSWORD 'repl2-pw'");
    const b = await cli(["backup", "--source", url(primary, "app"), "--method", "pg_basebackup", "--repository", repo, "--cluster", "pgb-x"], {
      REPLICATOR_DB_PASSWORD: "app-pw",
    });
    expect(b.exitCode).toBe(2);
    expect(b.stderr.trim()).toBe(
      `replicator backup: user "app" on 127.0.0.1:${primary.endpoint.port} may not open a replication connection (back up the source); ALTER ROLE "app" REPLICATION, or use a superuser`,
    );
    const r = await cli(
      ["restore", "--datadir", path.join(await userDir("replicator-pg-monitor-"), "data"), "--repository", repo, "--cluster", "pgb", "--replicate-from", url(primary, "repl2")],
      { REPLICATOR_REPLICATION_PASSWORD: "repl2-pw" },
    );
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`user "repl2" may not list repl2@127.0.0.1:${primary.endpoint.port}'s WAL (pg_ls_waldir)`);
    expect(r.stderr).toContain("GRANT pg_monitor TO repl2, or pass --skip-binlog-check");
  });

  it("refuses a non-empty data directory, and a wrong replication password before writing anything", async () => {
    const dir = await userDir("replicator-pg-nonempty-");
    await writeFile(path.join(dir, "PG_VERSION"), "15\n");
    const r = await cli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "pgb"]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`data directory ${dir} is not empty (1 entries: PG_VERSION)`);

    const empty = await userDir("replicator-pg-empty-");
    const bad = await cli(
      ["restore", "--datadir", path.join(empty, "data"), "--repository", repo, "--cluster", "pgb", "--replicate-from", url(primary, REPL.user)],
      { REPLICATOR_REPLICATION_PASSWORD: "wrong" },
    );
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain(`PostgreSQL at 127.0.0.1:${primary.endpoint.port} rejected the password of user "repl"`);
    expect(bad.stderr).toContain("REPLICATOR_REPLICATION_PASSWORD or --replication-password-file");
    expect(await readdir(empty)).toEqual([]);
  });

  it("refuses a truncated or corrupt object as corrupt (never as a failed extract), leaves the sentinel so the next restore wipes and redoes it, and restores a backup written by the in-process zstd", async () => {
    const cluster = "pgb-corrupt";
    const b = await cli(["backup", "--source", url(primary), "--method", "pg_basebackup", "--repository", repo, "--cluster", cluster, "--json"]);
    expect(b.exitCode).toBe(0);
    const atThis = await fixture.checksums(primary);
    const bad = b.json!.name as string;
    const file = path.join(backupDir(cluster, bad), "data.tar.zst");
    const manifestFile = path.join(backupDir(cluster, bad), "manifest.json");
    const good = await readFile(file);
    const goodManifest = await readFile(manifestFile);
    const restoreBad = (): Promise<CliResult> => cli(["restore", "--datadir", target.datadir, "--repository", repo, "--cluster", cluster]);
    const putBack = async (): Promise<void> => {
      await writeFile(file, good);
      await writeFile(manifestFile, goodManifest);
    };
    const size = good.length;
    await truncate(file, 4096);
    const target = await sandbox({ empty: true });
    const r1 = await restoreBad();
    expect(r1.exitCode).toBe(1);
    expect(r1.stderr).toContain(`data.tar.zst is 4096 bytes but the manifest says ${size}`);
    expect(await readdir(target.datadir)).toEqual([".replicator-restore-in-progress"]);

    // Damaged, with a manifest that matches: zstd's frame (a block, or its
    // checksum) gives it away, whatever tar made of the bytes it was fed.
    await putBack();
    await damageConsistently(cluster, bad, "data.tar.zst");
    const r2 = await restoreBad();
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr).toMatch(/does not decompress .*the stored object is corrupt/);
    expect(await readdir(target.datadir)).toContain(".replicator-restore-in-progress");

    // Cut short with a matching manifest: zstd's frame has no end.
    await putBack();
    await cutShortConsistently(cluster, bad, "data.tar.zst", (n) => Math.floor(n / 2));
    const r3 = await restoreBad();
    expect(r3.exitCode).toBe(1);
    expect(r3.stderr).toMatch(/does not decompress .*the stored object is corrupt/);
    expect(await readdir(target.datadir)).toContain(".replicator-restore-in-progress");

    // Well-formed zstd around a cut-short archive (a faulty writer): tar, or
    // the missing backup_manifest (the archive's last member), gives it away.
    // Cut mid-member, and cut at the member boundary before backup_manifest.
    const raw = zstdDecompressSync(good);
    const lastMember = raw.lastIndexOf(Buffer.from("backup_manifest\0"));
    expect(lastMember).toBeGreaterThan(0);
    expect(lastMember % 512).toBe(0);
    for (const keep of [Math.floor(raw.length / 2), lastMember]) {
      await putBack();
      await recompressConsistently(cluster, bad, "data.tar.zst", "tool", (r) => r.subarray(0, keep));
      const r4 = await restoreBad();
      expect(r4.exitCode).toBe(1);
      expect(r4.stderr).toMatch(/ends early.*the stored backup is incomplete/);
      expect(await readdir(target.datadir)).toContain(".replicator-restore-in-progress");
    }

    // A server container that checks for the sentinel never starts on this;
    // a redo wipes it. The object is the one the agent's in-process zstd
    // would have written (older backups): the zstd tool restores it.
    await putBack();
    await recompressConsistently(cluster, bad, "data.tar.zst", "zlib");
    const redo = await cli(["restore", "--datadir", target.datadir, "--repository", repo, "--cluster", cluster, "--json"]);
    expect(redo.exitCode, redo.stderr).toBe(0);
    expect(redo.json!.warnings).toContain("the data directory holds an unfinished restore (its sentinel was found); it was wiped and the restore redone");
    expect(redo.json!.replication).toEqual(b.json!.replication);
    await target.start();
    expect(await fixture.checksums(target)).toEqual(atThis);
    await target.destroy();
  });

  it("refuses to seed a standby when the primary no longer has the backup's WAL, naming the fix", async () => {
    const source = await sandbox({ primary: true, replicationUser: REPL });
    await source.query("ALTER SYSTEM SET wal_keep_size = 0; SELECT pg_reload_conf()");
    const cluster = "pgb-recycled";
    const b = await cli(["backup", "--source", url(source), "--method", "pg_basebackup", "--repository", repo, "--cluster", cluster, "--json"]);
    expect(b.exitCode).toBe(0);
    // Move the WAL on by a few segments and checkpoint: the backup's segment is recycled.
    for (let i = 0; i < 4; i++) await source.query("SELECT pg_switch_wal(); CREATE TABLE IF NOT EXISTS t (x int); INSERT INTO t VALUES (1); CHECKPOINT");
    const dir = path.join(await userDir("replicator-pg-recycled-"), "data");
    const r = await cli(
      ["restore", "--datadir", dir, "--repository", repo, "--cluster", cluster, "--replicate-from", url(source, REPL.user)],
      { REPLICATOR_REPLICATION_PASSWORD: REPL.password },
    );
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/no longer has WAL segment [0-9A-F]{24} .*raise wal_keep_size, or use a replication slot/);
    await source.destroy();
  });
});

describe("through S3", () => {
  let s3: S3Server | undefined;
  afterAll(async () => { await s3?.stop(); });

  it("a pg_dump backup goes to S3 and back", async () => {
    s3 = await startS3();
    await s3.createBucket("pgdumps");
    const b = await cli(["backup", "--source", url(primary), "--repository", "s3://pgdumps/prod", "--cluster", "pg", "--json"], s3.env);
    expect(b.stderr).toBe("");
    expect(b.exitCode).toBe(0);
    const target = await sandbox();
    const r = await cli(["restore", "--target", url(target), "--repository", "s3://pgdumps/prod", "--cluster", "pg", "--json"], s3.env);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(await fixture.checksums(target)).toEqual(await fixture.checksums(primary));
    await target.destroy();
  });
});
