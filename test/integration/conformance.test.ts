// The plugin contract v1 and its conformance kit, for real:
// - the exec method with tiny fake plugins (no database): env and credentials
//   files, exit codes, result validation, incomplete reads, abort;
// - the kit against the example mydumper plugin, every registered built-in
//   method that has a sandbox here, and the deliberately broken plugin;
// - `replicator plugin-test` exit codes, and `backup|restore --plugin`.
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { silentLogger } from "../../src/lib/log.js";
import { isReplicatorError } from "../../src/lib/errors.js";
import type { Endpoint } from "../../src/db/endpoint.js";
import { loadPlugin, PluginError, type LoadedPlugin } from "../../src/plugins/exec/index.js";
import { commandRunner, findContainerEngine } from "../../src/plugins/exec/runner.js";
import { builtinMethods, getMethod } from "../../src/plugins/registry.js";
import { CHECK_ORDER, engineKit, runConformance, type Report } from "../../src/conformance/kit.js";
import { removeMysqlSandboxTemplate, startMysqlSandbox } from "../../src/conformance/sandbox-mysql.js";
import type { SandboxServer } from "../../src/conformance/types.js";
import type { Manifest } from "../../src/storage/catalog.js";

const root = path.resolve(import.meta.dirname, "../..");
const MYDUMPER = path.join(root, "examples/mydumper-plugin/replicator-mydumper");
const BROKEN = path.join(root, "examples/broken-plugin/replicator-broken");
const log = silentLogger();
let work: string;

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "replicator-conformance-test-"));
});

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
  removeMysqlSandboxTemplate();
  const pgModule = "../../src/conformance/sandbox-postgres.js";
  const pg = (await import(pgModule).catch(() => undefined)) as { removePostgresSandboxTemplate?: () => void } | undefined;
  pg?.removePostgresSandboxTemplate?.();
});

function statuses(r: Report): Record<string, string> {
  return Object.fromEntries(r.checks.map((c) => [c.id, c.status]));
}

function message(r: Report | Record<string, unknown>, id: string): string {
  return ((r.checks as { id: string; message: string }[]).find((c) => c.id === id)?.message) ?? "";
}

const allPass = Object.fromEntries(CHECK_ORDER.map((id) => [id, "PASS"]));

// ---------------------------------------------------------------- fake plugins

/** A plugin as a shell script; `body` handles "$1". */
async function fakePlugin(name: string, body: string, info = `{"contract":1,"name":"${name}","kind":"logical","engine":"mysql","restoreInto":"server","extension":"bin"}`): Promise<string> {
  const file = path.join(work, `${name}-${Math.random().toString(36).slice(2)}`);
  await writeFile(file, `#!/bin/sh\nif [ "$1" = info ]; then echo '${info}'; exit 0; fi\n${body}\n`);
  await chmod(file, 0o755);
  return file;
}

const source: Endpoint = { engine: "mysql", host: "127.0.0.1", port: 3399, user: "backup", password: "s3cr3t-Pa55word" };

async function load(file: string): Promise<LoadedPlugin> {
  return loadPlugin(commandRunner(file), { log });
}

async function runBackupOf(p: LoadedPlugin, signal = new AbortController().signal): Promise<{ bytes: Buffer; outcome: Awaited<ReturnType<LoadedPlugin["method"]["backup"]>>["outcome"] }> {
  const run = await p.method.backup({ source, options: { threads: 2 }, log, signal });
  const chunks: Buffer[] = [];
  try {
    for await (const c of run.stream) chunks.push(c as Buffer);
  } catch {
    // the outcome says why
  }
  return { bytes: Buffer.concat(chunks), outcome: run.outcome };
}

const manifest = { formatVersion: 1, name: "20260101T000000Z-fake-x", method: "fake" } as unknown as Manifest;

describe("the exec method (small fake plugins, no database)", () => {
  it("gives a backup the contract's variables and a 0600 credentials file, and no secret in its environment", async () => {
    process.env.AWS_SECRET_ACCESS_KEY = "aws-secret-value";
    process.env.REPLICATOR_DB_PASSWORD = source.password;
    try {
      const file = await fakePlugin(
        "envdump",
        `[ "$1" = backup ] || exit 3
env | sort
echo "--- file"; cat "$REPLICATOR_DB_DEFAULTS_FILE"; stat -c '%a' "$REPLICATOR_DB_DEFAULTS_FILE"
echo '{"role":"master","serverId":7,"version":"10.11","replication":{"role":"master","gtid":"0-7-3","file":"b.000001","position":4},"details":{"a":1},"warnings":["w1"]}' > "$REPLICATOR_RESULT_FILE"`,
      );
      const p = await load(file);
      expect(p.info.name).toBe("envdump");
      const { bytes, outcome } = await runBackupOf(p);
      const o = await outcome;
      expect(o).toEqual({
        role: "master",
        serverId: 7,
        version: "10.11",
        replication: { role: "master", gtid: "0-7-3", file: "b.000001", position: 4 },
        details: { a: 1, plugin: { name: "envdump", contract: 1 } },
        warnings: ["w1"],
      });
      const text = bytes.toString("utf8");
      const [envText = "", fileText = ""] = text.split("--- file\n");
      expect(envText).toContain("REPLICATOR_CONTRACT=1\n");
      expect(envText).toContain("REPLICATOR_DB_ENGINE=mysql\n");
      expect(envText).toContain("REPLICATOR_DB_HOST=127.0.0.1\n");
      expect(envText).toContain("REPLICATOR_DB_PORT=3399\n");
      expect(envText).toContain("REPLICATOR_DB_USER=backup\n");
      expect(envText).toContain('REPLICATOR_OPTIONS={"threads":2}\n');
      expect(envText).toMatch(/REPLICATOR_TMPDIR=\/.+\/tmp\n/);
      expect(envText).toMatch(/REPLICATOR_RESULT_FILE=\/.+\/result\.json\n/);
      expect(envText).not.toContain(source.password);
      expect(envText).not.toContain("aws-secret-value");
      expect(envText).not.toContain("REPLICATOR_DB_PASSWORD");
      expect(fileText).toBe(`[client]\nuser="backup"\npassword="${source.password}"\nhost="127.0.0.1"\nport=3399\nprotocol=TCP\n600\n`);
      // The run directory (credentials, result, scratch) is gone afterwards.
      const dir = /REPLICATOR_RESULT_FILE=(.+)\/result\.json/.exec(envText)?.[1] ?? "";
      expect(existsSync(dir)).toBe(false);
    } finally {
      delete process.env.AWS_SECRET_ACCESS_KEY;
      delete process.env.REPLICATOR_DB_PASSWORD;
    }
  });

  it("reports exit 2 as bad input and other exits as failures, quoting the plugin's last stderr line", async () => {
    const p2 = await load(await fakePlugin("badin", `echo "connecting" >&2; echo "ERROR 1045 (28000): Access denied for user 'backup'" >&2; exit 2`));
    const e2 = await (await runBackupOf(p2)).outcome.catch((e: unknown) => e);
    expect(e2).toBeInstanceOf(PluginError);
    expect((e2 as PluginError).kind).toBe("BadInput");
    expect((e2 as PluginError).exitCode).toBe(2);
    expect((e2 as Error).message).toBe("plugin badin refused to back up (bad input, exit code 2): ERROR 1045 (28000): Access denied for user 'backup'");

    const p1 = await load(await fakePlugin("crash", `echo "disk full" >&2; exit 5`));
    const e1 = await (await runBackupOf(p1)).outcome.catch((e: unknown) => e);
    expect((e1 as PluginError).kind).toBe("Failed");
    expect((e1 as Error).message).toBe("plugin crash failed to back up (exit code 5): disk full");

    const silent = await load(await fakePlugin("silent", "exit 1"));
    expect(((await (await runBackupOf(silent)).outcome.catch((e: unknown) => e)) as Error).message).toBe(
      "plugin silent failed to back up (exit code 1) and printed nothing on stderr",
    );
  });

  it("checks the result file strictly and says what is wrong in one line", async () => {
    const none = await load(await fakePlugin("noresult", "echo data"));
    expect(((await (await runBackupOf(none)).outcome.catch((e: unknown) => e)) as Error).message).toMatch(
      /^plugin noresult exited 0 but wrote no result to REPLICATOR_RESULT_FILE/,
    );
    const invalid = await load(
      await fakePlugin("badresult", `echo data; echo '{"role":"master","serverId":1,"version":"x","replication":{"role":"master","file":"b.1","position":"4"}}' > "$REPLICATOR_RESULT_FILE"`),
    );
    const e = (await (await runBackupOf(invalid)).outcome.catch((x: unknown) => x)) as Error;
    expect(e.message).toBe('plugin badresult wrote an invalid result: replication.position must be a number (got a string ("4"))');
    expect(isReplicatorError(e) && e.kind).toBe("BadInput");
    const empty = await load(await fakePlugin("nostream", `echo '{"role":"standalone","serverId":1,"version":"x"}' > "$REPLICATOR_RESULT_FILE"`));
    expect(((await (await runBackupOf(empty)).outcome.catch((x: unknown) => x)) as Error).message).toMatch(/^plugin nostream exited 0 but wrote no backup stream on stdout/);
  });

  it("refuses invalid info, a missing plugin and one that is not executable", async () => {
    const bad = await fakePlugin("x", "", '{"contract":1,"name":"My Plugin","kind":"logical","engine":"mysql","restoreInto":"server","extension":"tar"}');
    await expect(load(bad)).rejects.toThrow(`plugin ${bad} printed invalid info: name "My Plugin" is not a valid method name`);
    const builtin = await fakePlugin("x", "", '{"contract":1,"name":"mysqldump","kind":"logical","engine":"mysql","restoreInto":"server","extension":"sql"}');
    await expect(load(builtin)).rejects.toThrow(/is taken by a built-in method/);
    await expect(load(path.join(work, "no-such-plugin"))).rejects.toThrow(/cannot run plugin .*no-such-plugin: it does not exist/);
    const noexec = path.join(work, "noexec");
    await writeFile(noexec, "#!/bin/sh\n");
    await expect(load(noexec)).rejects.toThrow(/it is not executable \(chmod \+x\)/);
  });

  it("gives a restore the manifest and the stream, and fails one that exits 0 without reading it all", async () => {
    const reader = await load(
      await fakePlugin("reader", `[ "$1" = restore ] || exit 3
cat > "$REPLICATOR_TMPDIR/in"; n=$(wc -c < "$REPLICATOR_TMPDIR/in")
grep -q '"name":"20260101T000000Z-fake-x"' "$REPLICATOR_MANIFEST_FILE" || { echo "no manifest" >&2; exit 1; }
[ "$n" = 3000000 ] || { echo "got $n bytes" >&2; exit 1; }`),
    );
    if (reader.method.restoreInto !== "server") throw new Error("unreachable");
    const big = (): Readable => Readable.from([Buffer.alloc(1_000_000, 1), Buffer.alloc(1_000_000, 2), Buffer.alloc(1_000_000, 3)]);
    await reader.method.restore({ target: source, manifest, options: {}, log, signal: new AbortController().signal }, big());

    const quitter = await load(await fakePlugin("quitter", "head -c 10 > /dev/null; exit 0"));
    if (quitter.method.restoreInto !== "server") throw new Error("unreachable");
    await expect(quitter.method.restore({ target: source, manifest, options: {}, log, signal: new AbortController().signal }, big())).rejects.toThrow(
      /^plugin quitter exited 0 after reading only \d+ bytes of the stream; a restore must read stdin to EOF/,
    );
  });

  it("gives a datadir plugin the data directory, takes the position it found, and configures the replica with the master's credentials file", async () => {
    const p = await load(
      await fakePlugin(
        "datadir_fake",
        `case "$1" in
restore) cat > "$REPLICATOR_DATADIR/data.bin"; echo '{"replication":{"role":"master","gtid":"0-1-9","file":"b.000002","position":42},"warnings":["found the position in the data"]}' > "$REPLICATOR_RESULT_FILE";;
configure-replica) { echo "position=$REPLICATOR_POSITION"; env | grep '^REPLICATOR_MASTER_' | grep -v FILE | sort; echo "--- file"; cat "$REPLICATOR_MASTER_DEFAULTS_FILE"; } > "$REPLICATOR_DATADIR/replica.txt";;
*) exit 2;;
esac`,
        '{"contract":1,"name":"datadir_fake","kind":"physical","engine":"mysql","restoreInto":"datadir","extension":"bin"}',
      ),
    );
    if (p.method.restoreInto !== "datadir") throw new Error("expected a datadir method");
    const datadir = await mkdtemp(path.join(work, "datadir-"));
    const signal = new AbortController().signal;
    const out = await p.method.restore({ datadir, manifest, options: {}, log, signal }, Readable.from([Buffer.from("page data")]));
    expect(out).toEqual({ replication: { role: "master", gtid: "0-1-9", file: "b.000002", position: 42 }, warnings: ["found the position in the data"] });
    expect(await readFile(path.join(datadir, "data.bin"), "utf8")).toBe("page data");
    const master: Endpoint = { engine: "mysql", host: "10.0.0.5", port: 3306, user: "repl", password: "r3pl-secret" };
    await p.method.configureReplica({ datadir, manifest, position: out.replication!, replicateFrom: master, options: {}, log, signal });
    expect(await readFile(path.join(datadir, "replica.txt"), "utf8")).toBe(
      'position={"role":"master","gtid":"0-1-9","file":"b.000002","position":42}\n' +
        "REPLICATOR_MASTER_ENGINE=mysql\nREPLICATOR_MASTER_HOST=10.0.0.5\nREPLICATOR_MASTER_PORT=3306\nREPLICATOR_MASTER_USER=repl\n" +
        '--- file\n[client]\nuser="repl"\npassword="r3pl-secret"\nhost="10.0.0.5"\nport=3306\nprotocol=TCP\n',
    );
  });

  it("kills the plugin and its children on abort", async () => {
    const pidFile = path.join(work, "child.pid");
    const p = await load(await fakePlugin("sleeper", `sleep 300 & echo $! > ${pidFile}; echo started; wait`));
    const abort = new AbortController();
    const run = await p.method.backup({ source, options: {}, log, signal: abort.signal });
    run.stream.resume();
    for (let i = 0; i < 100 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 50));
    const child = Number(await readFile(pidFile, "utf8"));
    abort.abort(new Error("stop"));
    await expect(run.outcome).rejects.toThrow(/^plugin sleeper was stopped \(the operation was aborted\)/);
    // Gone, or a zombie waiting for init to reap it.
    const state = async (): Promise<string> => ((await readFile(`/proc/${String(child)}/stat`, "utf8").catch(() => "x) X")).split(") ")[1] ?? "").slice(0, 1);
    for (let i = 0; i < 40 && !["X", "Z"].includes(await state()); i++) await new Promise((r) => setTimeout(r, 50));
    expect(["X", "Z"]).toContain(await state());
  });
});

// ---------------------------------------------------------------- the kit

/** Why an engine has no usable sandbox on this machine, or undefined when it has one. */
async function noSandbox(engine: string): Promise<string | undefined> {
  if (engine === "mysql") return undefined;
  try {
    await engineKit("postgresql");
    const pgModule = "../../src/conformance/sandbox-postgres.js";
    const { pgBinDir } = (await import(pgModule)) as { pgBinDir: () => string };
    const dir = pgBinDir();
    // The sandbox runs these from one directory.
    const missing = ["initdb", "postgres", "pg_isready"].filter((t) => !existsSync(path.join(dir, t)));
    return missing.length > 0 ? `${missing.join(", ")} missing in ${dir}; set REPLICATOR_KIT_PG_BINDIR` : undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

const builtins = builtinMethods();
const sandboxFor = new Map<string, string | undefined>();
for (const name of builtins) sandboxFor.set(getMethod(name).engine, await noSandbox(getMethod(name).engine));

describe("the conformance kit", () => {
  it("passes the example mydumper plugin", { timeout: 300_000 }, async () => {
    const r = await runConformance({ plugin: MYDUMPER, log });
    expect(statuses(r), JSON.stringify(r.checks, null, 2)).toEqual(allPass);
    expect(r).toMatchObject({ ok: true, mode: "command", method: "mydumper", engine: "mysql", kind: "logical", restoreInto: "server", passed: 9, failed: 0 });
    expect(message(r, "position")).toMatch(/^gtid 0-1-\d+ equals the source's gtid 0-1-\d+, mysql-bin\.000001:\d+$/);
  });

  it("passes built-in mysqldump through `replicator plugin-test --method mysqldump --json` (exit 0)", { timeout: 300_000 }, async () => {
    const r = await runCli(["plugin-test", "--method", "mysqldump", "--json"]);
    expect(r.exitCode, r.stderr).toBe(0);
    const report = r.json as unknown as Report;
    expect(statuses(report)).toEqual(allPass);
    expect(report).toMatchObject({ ok: true, mode: "builtin", method: "mysqldump" });
  });

  for (const name of builtins.filter((n) => n !== "mysqldump")) {
    const engine = getMethod(name).engine;
    const why = sandboxFor.get(engine);
    it.skipIf(why !== undefined)(`passes built-in ${name} (${engine}${why ? `; no sandbox here: ${why}` : ""})`, { timeout: 300_000 }, async () => {
      const r = await runConformance({ builtin: name, log });
      expect(r.failed, JSON.stringify(r.checks, null, 2)).toBe(0);
      expect(r.ok).toBe(true);
      const m = getMethod(name);
      // Only a logical PostgreSQL backup may skip the position and replica checks: it seeds no standby.
      const skipped = r.checks.filter((c) => c.status === "SKIP").map((c) => c.id);
      if (m.engine === "postgresql" && m.restoreInto === "server") {
        expect(skipped).toContain("replica");
        expect(skipped.every((id) => id === "replica" || id === "position")).toBe(true);
      } else {
        expect(skipped).toEqual([]);
      }
    });
  }

  it("fails the broken plugin with what it got wrong (`replicator plugin-test` exits 1)", { timeout: 300_000 }, async () => {
    const r = await runCli(["plugin-test", BROKEN, "--json"]);
    expect(r.exitCode, r.stderr).toBe(1);
    const report = r.json as unknown as Report;
    expect(statuses(report)).toEqual({
      info: "PASS",
      backup: "PASS",
      position: "FAIL",
      catalog: "PASS",
      restore: "PASS",
      truncated: "FAIL",
      replica: "FAIL",
      "wrong-password": "FAIL",
      secrets: "FAIL",
    });
    expect(message(report, "position")).toMatch(/^the backup reported gtid 0-1-(\d+) but the source was at 0-1-\d+ \(nothing was written during the backup, so they must be equal\); take it at the dump's consistent point/);
    expect(message(report, "truncated")).toMatch(/^restore of the first half of the stream \(\d+ of \d+ bytes\) exited 0; read stdin to EOF and exit non-zero when the stream is incomplete/);
    expect(message(report, "replica")).toMatch(/^the replica does not replicate: .*Duplicate entry.*; a replica started at the reported position must apply exactly the writes after the backup/);
    expect(message(report, "wrong-password")).toMatch(/^backup with a wrong password exited 0 \(plugin broken_dump exited 0 but wrote no backup stream on stdout/);
    expect(message(report, "secrets")).toMatch(/^a password was on a command line, visible to every user in \/proc: during backup, pid \d+ `sh -c mariadb-dump .*--password='\*\*\*\*'/);
    expect(message(report, "secrets")).toMatch(/never as arguments$/);
    expect(JSON.stringify(report)).not.toMatch(/--password='[^*]/);
  });

  it("stops at invalid info and skips the rest (exit 1), in human-readable form", async () => {
    const r = await runCli(["plugin-test", BROKEN], { BROKEN_MODE: "bad-info" });
    expect(r.exitCode).toBe(1);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe(`testing plugin ${BROKEN} against plugin contract 1 (throw-away servers on 127.0.0.1, a temp file:// repository)`);
    expect(lines[1]).toMatch(/^FAIL info {12}plugin .*replicator-broken printed invalid info: name "Broken Dump" is not a valid method name/);
    expect(lines.slice(2, 10).every((l) => l.startsWith("SKIP "))).toBe(true);
    expect(lines.at(-1)).toMatch(/^0 passed, 1 failed, 8 skipped in [\d.]+s: plugin .*replicator-broken does not conform to contract 1$/);
  });

  it("exits 2 on bad usage, and on an IMAGE without a usable container engine", async () => {
    const none = await runCli(["plugin-test"]);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/^replicator plugin-test: plugin-test needs the plugin's COMMAND \(or IMAGE\), or --method NAME to test a built-in method \(mysqldump/);
    expect((await runCli(["plugin-test", MYDUMPER, "--method", "mysqldump"])).stderr).toMatch(/not both/);
    expect((await runCli(["plugin-test", "--method", "nope"])).stderr).toMatch(/unknown backup method "nope"/);

    // No docker or podman on PATH (node is found by its absolute path).
    const noEngine = await runCli(["plugin-test", "ghcr.io/acme/replicator-mydumper:1.0"], { PATH: "/nonexistent" });
    expect(noEngine.exitCode).toBe(2);
    expect(noEngine.stderr).toBe(
      "replicator plugin-test: ghcr.io/acme/replicator-mydumper:1.0 looks like an image, and running an image needs docker or podman, but neither is on PATH; install one, or pass the plugin's executable instead",
    );
    const engine = findContainerEngine();
    if (engine) {
      // This machine has a docker client but no daemon: one line that says so.
      const r = await runCli(["plugin-test", "ghcr.io/acme/replicator-mydumper:1.0", "--json"]);
      if (r.exitCode === 2) {
        expect(r.stderr).toMatch(/^replicator plugin-test: (docker|podman) cannot run ghcr\.io\/acme\/replicator-mydumper:1\.0: .*; IMAGE mode needs a running docker or podman$/);
        expect(r.json).toMatchObject({ ok: false, reason: "ContainerEngineUnavailable" });
      }
    }
  });
});

// ---------------------------------------------------------------- backup|restore --plugin

describe("replicator backup|restore --plugin", () => {
  let master: SandboxServer;
  const servers: SandboxServer[] = [];
  const password = "Pl4gin-pa55";
  let repo: string;
  let env: Record<string, string>;
  let backupName: string;
  const url = (s: SandboxServer): string => `mysql://root@127.0.0.1:${String(s.endpoint.port)}`;

  beforeAll(async () => {
    master = await startMysqlSandbox({ primary: true, serverId: 1, password });
    await master.query("CREATE DATABASE shop");
    await master.query("CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB");
    await master.query("INSERT INTO shop.items VALUES (1, 'ünïcode ✓'), (2, 'two')");
    repo = `file://${path.join(work, "cli-repo")}`;
    await mkdir(path.join(work, "cli-repo"));
    env = { REPLICATOR_DB_PASSWORD: password };
  });

  afterAll(async () => {
    await Promise.all([master, ...servers].map((s) => s.destroy()));
  });

  async function fresh(): Promise<SandboxServer> {
    const s = await startMysqlSandbox({ serverId: 10 + servers.length, password });
    servers.push(s);
    return s;
  }

  it("backs up with the plugin, named and listed under its method", async () => {
    const r = await runCli(["backup", "--plugin", MYDUMPER, "--source", url(master), "--repository", repo, "--cluster", "c", "--json"], env);
    expect(r.exitCode, r.stderr).toBe(0);
    backupName = r.json!.name as string;
    expect(backupName).toMatch(/^\d{8}T\d{6}Z-mydumper-127\.0\.0\.1-\d+$/);
    expect(r.json).toMatchObject({ ok: true, method: "mydumper", role: "master" });
    const gtid = (await master.query("SELECT @@gtid_binlog_pos"))[0]?.[0];
    expect((r.json!.replication as { gtid: string }).gtid).toBe(gtid);
    const list = await runCli(["list", "--repository", repo, "--cluster", "c", "--json"]);
    expect((list.json!.backups as { method: string }[]).map((b) => b.method)).toEqual(["mydumper"]);
    const manifest = JSON.parse(await readFile(path.join(work, "cli-repo", "c", backupName, "manifest.json"), "utf8")) as Manifest;
    expect(manifest).toMatchObject({ method: "mydumper", kind: "logical", objects: [{ name: "data.tar.zst" }] });
    expect(manifest.details).toMatchObject({ plugin: { name: "mydumper", version: "0.1.0", contract: 1 }, threads: 4 });
    expect(JSON.stringify(manifest)).not.toContain(password);
  });

  it("says which plugin a backup needs when restoring without it, or with another one", async () => {
    const target = await fresh();
    const without = await runCli(["restore", "--target", url(target), "--repository", repo, "--cluster", "c"], env);
    expect(without.exitCode).toBe(2);
    expect(without.stderr).toMatch(/^replicator restore: (backup \S+ was made by plugin mydumper|backups of method mydumper are made by a plugin \(mydumper is not built in: mysqldump[^)]*\)); pass --plugin with that plugin's command \(or set REPLICATOR_PLUGIN\)$/);
    const other = await runCli(["restore", "--plugin", BROKEN, "--target", url(target), "--repository", repo, "--cluster", "c"], env);
    expect(other.exitCode).toBe(2);
    expect(other.stderr).toMatch(/but the plugin given \(.*replicator-broken\) is broken_dump; pass --plugin \(or REPLICATOR_PLUGIN\) with the command of plugin mydumper$/);
  });

  it("restores with REPLICATOR_PLUGIN", async () => {
    const target = await fresh();
    const r = await runCli(["restore", "--target", url(target), "--repository", repo, "--cluster", "c", "--json"], { ...env, REPLICATOR_PLUGIN: MYDUMPER });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ ok: true, method: "mydumper", name: backupName });
    expect(await target.query("SELECT id, name FROM shop.items ORDER BY id")).toEqual([
      ["1", "ünïcode ✓"],
      ["2", "two"],
    ]);
  });

  it("fails a backup whose plugin writes an invalid result, as bad input (exit 2)", async () => {
    const r = await runCli(["backup", "--plugin", BROKEN, "--source", url(master), "--repository", repo, "--cluster", "c", "--json"], { ...env, BROKEN_MODE: "invalid-result" });
    expect(r.exitCode).toBe(2);
    expect(r.json).toMatchObject({ ok: false, reason: "PluginInvalidResult" });
    expect(r.stderr).toMatch(/^replicator backup: plugin broken_dump wrote an invalid result: replication\.position must be a number \(got a string \("\d+"\)\)$/m);
  });

  it("ignores --method with a plugin, and says so", async () => {
    const r = await runCli(["backup", "--plugin", MYDUMPER, "--method", "mysqldump", "--source", url(master), "--repository", repo, "--cluster", "c2", "--json"], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ method: "mydumper" });
    expect(r.stderr).toContain("method mysqldump ignored: backing up with plugin mydumper");
    expect((await stat(path.join(work, "cli-repo", "c2"))).isDirectory()).toBe(true);
  });
});
