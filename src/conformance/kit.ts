// The conformance kit: runs a plugin (an executable, or an image through
// docker/podman) or a built-in method through the agent's own backup and
// restore pipelines against throw-away servers it starts itself, and reports
// each rule of the contract as PASS/FAIL with what to fix.
//
//   runConformance({ plugin: "./my-plugin" })  or  runConformance({ builtin: "mysqldump" })
//
// Nothing here writes to a server or repository it did not create: the
// servers (StartSandbox) live in temp directories on free 127.0.0.1 ports and
// the repository is a temp file:// directory; all are removed at the end.
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { execa } from "execa";
import { runBackup, type BackupResult } from "../agent/backup.js";
import { openBackupInput, runRestore } from "../agent/restore.js";
import type { Endpoint, Engine } from "../db/endpoint.js";
import { badInput, failed, isReplicatorError, oneLine } from "../lib/errors.js";
import { silentLogger, type Logger } from "../lib/log.js";
import type { BackupMethod } from "../plugins/contract.js";
import { loadPlugin, PluginError, pluginResolver, type LoadedPlugin } from "../plugins/exec/index.js";
import { CONTRACT_VERSION, isValidMethodName } from "../plugins/exec/protocol.js";
import { findContainerEngine, runnerFor, type PluginRunner } from "../plugins/exec/runner.js";
import { builtinMethods, getMethod } from "../plugins/registry.js";
import { formatBytes, formatPosition, formatStamp, parseBackupName, type ReplicationPosition } from "../storage/catalog.js";
import { openRepository } from "../storage/open.js";
import { Repository } from "../storage/repository.js";
import { SecretWatcher } from "./secrets.js";
import type { Fixture, SandboxServer, StartSandbox } from "./types.js";

const REPLICA_HINT =
  "a replica started at the reported position must apply exactly the writes after the backup (a duplicate-key error means the position is earlier than the data; missing rows mean it is later)";
const NO_LOGICAL_STANDBY = "PostgreSQL standbys are physical copies; a logical backup cannot seed one";

/** How long a sandbox server may take to start before the kit gives up. */
const SANDBOX_START_MS = 180_000;

export type CheckId = "info" | "backup" | "position" | "catalog" | "restore" | "truncated" | "replica" | "wrong-password" | "secrets";
export type CheckStatus = "PASS" | "FAIL" | "SKIP";

export const CHECK_TITLES: Record<CheckId, string> = {
  info: "info is valid",
  backup: "backup exits 0 with a stream and a valid result",
  position: "the reported position is the source's at backup time",
  catalog: "the backup is listed under the method's name, in time order",
  restore: "restore reproduces every table, view, routine, trigger and event",
  truncated: "restore fails on a truncated stream",
  replica: "a replica seeded from the backup replicates a later write",
  "wrong-password": "backup with a wrong password fails with a message",
  secrets: "no password on any command line",
};
export const CHECK_ORDER = Object.keys(CHECK_TITLES) as CheckId[];

export interface CheckResult {
  id: CheckId;
  title: string;
  status: CheckStatus;
  /** What happened; on FAIL, what the plugin got wrong and how to fix it. */
  message: string;
  durationMs: number;
}

export interface Report {
  contract: number;
  /** The command, image, or built-in method under test. */
  subject: string;
  mode: "command" | "image" | "builtin";
  method?: string | undefined;
  engine?: Engine | undefined;
  kind?: string | undefined;
  restoreInto?: "server" | "datadir" | undefined;
  ok: boolean;
  passed: number;
  failed: number;
  skipped: number;
  checks: CheckResult[];
  notes: string[];
  durationMs: number;
}

export interface EngineKit {
  start: StartSandbox;
  fixture: Fixture;
}

export interface ConformanceOptions {
  /** A plugin: the path of an executable, a command on PATH, or an image (anything with ':' or '/' that is not a path). */
  plugin?: string | undefined;
  /** A built-in method instead, e.g. "mysqldump". */
  builtin?: string | undefined;
  /** Method options (REPLICATOR_OPTIONS for a plugin). */
  methodOptions?: Record<string, unknown>;
  log?: Logger;
  signal?: AbortSignal;
  /** Called as each check finishes (the CLI prints it). */
  onCheck?: (c: CheckResult) => void;
  /** Per step (one backup, one restore...); default 10 minutes. */
  stepTimeoutMs?: number;
  /** How long a replica may take to receive the write made after the backup; default 60 s. */
  replicaTimeoutMs?: number;
  /** Sandboxes per engine (tests); default: MariaDB here, PostgreSQL from ./sandbox-postgres.js. */
  engines?: Partial<Record<Engine, EngineKit>>;
}

/** The sandbox and fixture for an engine. PostgreSQL's are loaded only when needed. */
export async function engineKit(engine: Engine, overrides: ConformanceOptions["engines"] = {}): Promise<EngineKit> {
  const given = overrides[engine];
  if (given) return given;
  if (engine === "mysql") {
    const [{ startMysqlSandbox }, { mysqlFixture }] = await Promise.all([import("./sandbox-mysql.js"), import("./fixture-mysql.js")]);
    return { start: startMysqlSandbox, fixture: mysqlFixture };
  }
  // Specifiers in variables: these modules are written separately and may be absent.
  const sandboxModule = "./sandbox-postgres.js";
  const fixtureModule = "./fixture-postgres.js";
  let sb: { startPostgresSandbox?: StartSandbox };
  let fx: { postgresFixture?: Fixture };
  try {
    [sb, fx] = await Promise.all([import(sandboxModule) as Promise<typeof sb>, import(fixtureModule) as Promise<typeof fx>]);
  } catch (err) {
    throw failed("NoSandbox", `the kit has no PostgreSQL sandbox here (${oneLine(err)}); it needs src/conformance/sandbox-postgres.ts and fixture-postgres.ts`);
  }
  if (!sb.startPostgresSandbox || !fx.postgresFixture) {
    throw failed("NoSandbox", "sandbox-postgres.js must export startPostgresSandbox and fixture-postgres.js postgresFixture");
  }
  return { start: sb.startPostgresSandbox, fixture: fx.postgresFixture };
}

/** IMAGE mode: the engine must answer, or every check would fail with the same docker error. */
async function checkContainerEngine(runner: PluginRunner, engine: string): Promise<void> {
  const r = await execa(engine, ["version", "--format", "{{.Server.Version}}"], { reject: false, timeout: 20_000 });
  if (r.exitCode !== 0) {
    const why = r.stderr.trim().split("\n").filter(Boolean).pop() ?? `exit code ${String(r.exitCode)}`;
    throw badInput("ContainerEngineUnavailable", `${path.basename(engine)} cannot run ${runner.describe}: ${why}; IMAGE mode needs a running docker or podman`);
  }
}

function gtidSet(s: string | undefined): string {
  return (s ?? "").split(",").map((x) => x.trim()).filter(Boolean).sort().join(",");
}

interface SourcePosition {
  gtid?: string;
  file?: string;
  position?: number;
}

async function sourcePosition(server: SandboxServer): Promise<SourcePosition | undefined> {
  if (server.engine !== "mysql") return undefined;
  const out: SourcePosition = {};
  const g = await server.query("SELECT @@gtid_binlog_pos").catch(() => server.query("SELECT @@gtid_executed"));
  const gtid = g[0]?.[0];
  if (gtid && gtid !== "NULL") out.gtid = gtid;
  const m = await server.query("SHOW MASTER STATUS");
  if (m[0]?.[0]) {
    out.file = m[0][0];
    out.position = Number(m[0][1]);
  }
  return out;
}

function describeSourcePos(p: SourcePosition): string {
  return [p.gtid ? `gtid ${p.gtid}` : undefined, p.file ? `${p.file}:${String(p.position)}` : undefined].filter(Boolean).join(", ") || "no position";
}

/** Pure: compare a MySQL position reported by a method with the source's, which did not move during the backup. */
export function comparePosition(reported: ReplicationPosition | undefined, role: string, source: SourcePosition): { ok: boolean; message: string } {
  const fix = "take it at the dump's consistent point (under the dump's lock or snapshot) and write it to replication in the result file";
  if (!reported || (!reported.gtid && !reported.file)) {
    return { ok: false, message: `the backup reported no replication position, but the source is a master at ${describeSourcePos(source)}; ${fix}` };
  }
  if (role !== "master" || reported.role !== "master") {
    return {
      ok: false,
      message: `the backup says role ${role} / replication.role ${reported.role}, but the source is a master (binary log on, no replication); report role "master" and the source's own binlog position`,
    };
  }
  const problems: string[] = [];
  if (reported.gtid !== undefined && gtidSet(reported.gtid) !== gtidSet(source.gtid)) {
    problems.push(`gtid ${reported.gtid || '""'} but the source was at ${source.gtid ?? "(no gtid)"}`);
  }
  if (reported.file !== undefined && (reported.file !== source.file || reported.position !== source.position)) {
    problems.push(`${reported.file}:${String(reported.position)} but the source was at ${source.file ?? "?"}:${String(source.position)}`);
  }
  if (problems.length > 0) {
    return { ok: false, message: `the backup reported ${problems.join(", and ")} (nothing was written during the backup, so they must be equal); ${fix}` };
  }
  const missing = !reported.gtid && source.gtid ? "; note: no gtid reported, so replicas start from file/position instead of GTID" : "";
  return { ok: true, message: `${formatPosition(reported)} equals the source's ${describeSourcePos(source)}${missing}` };
}

/** Pure: name the objects that differ between the source's and the copy's checksums. */
export function diffChecksums(source: Record<string, string>, copy: Record<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(source)) {
    if (!(k in copy)) out.push(`${k} is missing`);
    else if (copy[k] !== v) out.push(`${k} differs`);
  }
  for (const k of Object.keys(copy)) if (!(k in source)) out.push(`${k} is extra`);
  return out;
}

async function readAllBytes(stream: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = c as Buffer;
    n += b.length;
    if (n > limit) {
      stream.destroy();
      throw failed("TooLarge", `the raw backup is larger than ${formatBytes(limit)}; the kit's fixture should never make one that big`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Poll `check` until it is true (→ true), the timeout passes, or it throws (→ false). */
async function waitUntil(check: () => Promise<boolean>, timeoutMs: number, signal: AbortSignal): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok: boolean;
    try {
      ok = await check();
    } catch {
      return false;
    }
    if (ok) return true;
    if (Date.now() > deadline || signal.aborted) return false;
    await new Promise((r) => setTimeout(r, 250));
  }
}

function hintFor(err: unknown): string {
  if (!isReplicatorError(err)) return "";
  switch (err.reason) {
    case "PluginFailed":
    case "PluginBadInput":
      return "; run the plugin by hand with the variables in docs/plugins.md to see all of its stderr";
    case "PluginInvalidResult":
      return " (docs/plugins.md, \"The result file\")";
    default:
      return "";
  }
}

export function countChecks(checks: CheckResult[]): { passed: number; failed: number; skipped: number } {
  return {
    passed: checks.filter((c) => c.status === "PASS").length,
    failed: checks.filter((c) => c.status === "FAIL").length,
    skipped: checks.filter((c) => c.status === "SKIP").length,
  };
}

/** Run every check against one plugin or built-in method. Throws only when the kit itself cannot run (bad arguments, no sandbox) or was interrupted. */
export async function runConformance(opts: ConformanceOptions): Promise<Report> {
  const t0 = Date.now();
  if (!!opts.plugin === !!opts.builtin) {
    throw badInput("InvalidArguments", "give the plugin to test (COMMAND or IMAGE), or --method NAME for a built-in method, not both");
  }
  const log = opts.log ?? silentLogger();
  const outer = opts.signal ?? new AbortController().signal;
  // A function, so that type narrowing never assumes it is still false.
  const interrupted = (): boolean => outer.aborted;
  const stepMs = opts.stepTimeoutMs ?? 10 * 60_000;
  const methodOptions = opts.methodOptions ?? {};
  const checks: CheckResult[] = [];
  const notes: string[] = [];
  const done = new Set<CheckId>();
  const record = (id: CheckId, status: CheckStatus, message: string, since: number): void => {
    // After an interrupt, failures are the interrupt's, not the method's: nothing more is reported.
    if (done.has(id) || interrupted()) return;
    done.add(id);
    const c: CheckResult = { id, title: CHECK_TITLES[id], status, message, durationMs: Date.now() - since };
    checks.push(c);
    opts.onCheck?.(c);
  };
  const skipRest = (why: string): void => {
    for (const id of CHECK_ORDER) if (!done.has(id)) record(id, "SKIP", why, Date.now());
  };
  const stepSignal = (): AbortSignal => AbortSignal.any([outer, AbortSignal.timeout(stepMs)]);

  // ---- the subject, and `info`
  let method: BackupMethod | undefined;
  let subject = opts.plugin ?? opts.builtin ?? "";
  let mode: Report["mode"] = opts.builtin ? "builtin" : "command";
  let resolveMethod: (name: string) => BackupMethod;
  const report = (): Report => {
    const order = (c: CheckResult): number => CHECK_ORDER.indexOf(c.id);
    const sorted = [...checks].sort((a, b) => order(a) - order(b));
    const n = countChecks(sorted);
    return {
      contract: CONTRACT_VERSION,
      subject,
      mode,
      method: method?.name,
      engine: method?.engine,
      kind: method?.kind,
      restoreInto: method?.restoreInto,
      ok: n.failed === 0 && n.passed > 0,
      ...n,
      checks: sorted,
      notes,
      durationMs: Date.now() - t0,
    };
  };

  const tInfo = Date.now();
  if (opts.builtin) {
    subject = opts.builtin;
    mode = "builtin";
    const b = getMethod(opts.builtin);
    method = b;
    const problems = [
      isValidMethodName(b.name) ? undefined : `name ${b.name} is not a valid method name`,
      /^[a-z0-9]+(?:\.[a-z0-9]+)*$/.test(b.extension) ? undefined : `extension ${b.extension} is not valid`,
    ].filter(Boolean);
    record("info", problems.length ? "FAIL" : "PASS", problems.length ? problems.join("; ") : `built-in ${b.name}: ${b.kind}, ${b.engine}, restores into a ${b.restoreInto}, stream .${b.extension}`, tInfo);
    resolveMethod = getMethod;
  } else {
    subject = opts.plugin ?? "";
    const runner = runnerFor(subject, { allowImage: true });
    mode = runner.mode;
    if (runner.mode === "image") {
      notes.push("IMAGE mode runs the plugin with `docker|podman run --rm -i --network host --entrypoint /replicator/plugin IMAGE SUBCOMMAND`; it has not been tested on the machine the kit was written on (no container engine there)");
      const engine = findContainerEngine();
      if (engine) await checkContainerEngine(runner, engine);
    }
    let loaded: LoadedPlugin;
    try {
      loaded = await loadPlugin(runner, { log, signal: stepSignal(), timeoutMs: stepMs });
    } catch (err) {
      record("info", "FAIL", `${oneLine(err)}; \`PLUGIN info\` must print one JSON object like {"contract":1,"name":"my_method","kind":"logical","engine":"mysql","restoreInto":"server","extension":"tar"}`, tInfo);
      if (interrupted()) throw failed("Interrupted", "interrupted");
      skipRest("skipped: info failed, so nothing else can run");
      return report();
    }
    method = loaded.method;
    const i = loaded.info;
    record("info", "PASS", `${i.name}${i.version ? ` ${i.version}` : ""}: ${i.kind}, ${i.engine}, restores into a ${i.restoreInto}, stream .${i.extension}, contract ${String(i.contract)}`, tInfo);
    resolveMethod = pluginResolver(loaded);
  }

  if (interrupted()) throw failed("Interrupted", "interrupted");

  // ---- the servers and the repository
  const m: BackupMethod = method;
  const kit = await engineKit(m.engine, opts.engines);
  const password = `kit${randomBytes(12).toString("hex")}`;
  const replication = { user: "kit_repl", password: `repl${randomBytes(12).toString("hex")}` };
  const wrongPassword = `wrong${randomBytes(10).toString("hex")}`;
  const watcher = new SecretWatcher([password, replication.password, wrongPassword]);
  const canWatch = await SecretWatcher.available();
  if (canWatch) watcher.start();
  const cleanups: (() => Promise<void>)[] = [];
  const work = await mkdtemp(path.join(tmpdir(), "replicator-kit-"));
  cleanups.push(() => rm(work, { recursive: true, force: true }));
  const server = async (o: Parameters<StartSandbox>[0]): Promise<SandboxServer> => {
    let timer: NodeJS.Timeout | undefined;
    const tooLong = new Promise<never>((_, reject) => {
      timer = setTimeout(() => { reject(failed("SandboxTimeout", `the kit's ${m.engine} server did not start within ${String(SANDBOX_START_MS / 1000)} s`)); }, SANDBOX_START_MS);
    });
    const starting = kit.start({ password, ...o });
    const s = await Promise.race([starting, tooLong]).finally(() => { clearTimeout(timer); });
    cleanups.push(() => s.destroy().catch(() => undefined));
    return s;
  };
  let nextId = 2;
  const target = (empty: boolean): Promise<SandboxServer> => server({ serverId: nextId++, ...(empty ? { empty: true } : {}) });
  const datadirShape = m.restoreInto === "datadir";
  // PostgreSQL standbys are physical copies: a logical backup seeds none.
  const seedsReplicas = m.engine === "mysql" || datadirShape;

  try {
    await mkdir(path.join(work, "repository"));
    const repo = new Repository(await openRepository(`file://${path.join(work, "repository")}`), "conformance");
    watcher.phase = "setup";
    const source = await server({ primary: true, serverId: 1, replicationUser: replication });
    await kit.fixture.seed(source);
    const sourceSums = await kit.fixture.checksums(source);

    // ---- backup
    watcher.phase = "backup";
    const tBackup = Date.now();
    const before = await sourcePosition(source);
    let backup: BackupResult | undefined;
    try {
      backup = await runBackup({
        repo,
        source: source.endpoint,
        sourceName: "kit-source",
        method: m.name,
        methodOptions,
        compression: "zstd",
        log,
        signal: stepSignal(),
        resolveMethod,
      });
      record("backup", "PASS", `${formatBytes(backup.rawSize)} raw (${formatBytes(backup.size)} stored), role ${backup.role}, position ${formatPosition(backup.replication)}`, tBackup);
      for (const w of backup.warnings) notes.push(`backup warning: ${w}`);
    } catch (err) {
      record("backup", "FAIL", `${oneLine(err)}${hintFor(err)}`, tBackup);
    }
    const after = await sourcePosition(source);

    if (backup) {
      // ---- position
      const tPos = Date.now();
      if (m.engine === "mysql" && before && after) {
        if (describeSourcePos(before) !== describeSourcePos(after)) {
          record(
            "position",
            "FAIL",
            `the source's binlog moved during the backup (${describeSourcePos(before)} → ${describeSourcePos(after)}) although the kit wrote nothing: the backup itself wrote to the binary log (e.g. FLUSH TABLES without NO_WRITE_TO_BINLOG, or a table it created); a backup must not write to its source`,
            tPos,
          );
        } else {
          const c = comparePosition(backup.replication, backup.role, before);
          record("position", c.ok ? "PASS" : "FAIL", c.message, tPos);
        }
      } else {
        const lsn = backup.replication?.lsn;
        if (lsn) record("position", "PASS", `lsn ${lsn} reported`, tPos);
        else if (!seedsReplicas) record("position", "SKIP", `skipped: ${NO_LOGICAL_STANDBY}, so a logical backup needs no position`, tPos);
        else record("position", "FAIL", "the backup reported no WAL position; a PostgreSQL plugin reports replication.lsn (and timeline) of the backup's consistent point", tPos);
      }

      // ---- catalog
      const tCat = Date.now();
      const { backups } = await repo.list();
      const backupName = backup.name;
      const entry = backups.find((b) => b.name === backupName);
      const parsed = parseBackupName(backup.name);
      const startStamp = formatStamp(new Date(backup.startedAt));
      if (!entry) {
        record("catalog", "FAIL", `backup ${backup.name} is not listed as complete (no manifest?)`, tCat);
      } else if (entry.method !== m.name || parsed?.method !== m.name) {
        record("catalog", "FAIL", `backup ${backup.name} is listed under method ${entry.method}, not ${m.name}`, tCat);
      } else if (!backup.name.startsWith(`${startStamp}-`) || entry.manifest.kind !== m.kind) {
        record("catalog", "FAIL", `backup ${backup.name} does not start with its start time ${startStamp}, or its manifest's kind ${entry.manifest.kind} is not ${m.kind}`, tCat);
      } else {
        record("catalog", "PASS", `listed as ${backup.name} (method ${entry.method}, kind ${entry.manifest.kind}); names start with the UTC start time, so they sort in time`, tCat);
      }

      // ---- restore into an empty server / data directory
      watcher.phase = "restore";
      const tRes = Date.now();
      try {
        const t = await target(datadirShape);
        await runRestore({
          repo,
          ...(datadirShape ? { datadir: t.datadir } : { target: t.endpoint }),
          selector: { kind: "name", name: backup.name },
          methodOptions,
          log,
          signal: stepSignal(),
          resolveMethod,
        });
        if (datadirShape) {
          try {
            await t.start();
          } catch (err) {
            throw failed("DatadirWontStart", `the restored data directory does not start a server: ${oneLine(err)}; log: ${(await t.logTail()).split("\n").slice(-3).join(" | ")}`);
          }
        }
        const diff = diffChecksums(sourceSums, await kit.fixture.checksums(t));
        if (diff.length > 0) {
          record(
            "restore",
            "FAIL",
            `the restore exited 0 but ${String(diff.length)} of ${String(Object.keys(sourceSums).length)} objects do not match the source: ${diff.slice(0, 6).join(", ")}${diff.length > 6 ? ", ..." : ""}; a restore must reproduce every table (row for row), view, routine, trigger and event of the backup`,
            tRes,
          );
        } else {
          record("restore", "PASS", `${String(Object.keys(sourceSums).length)} objects match the source (${m.engine === "mysql" ? "CHECKSUM TABLE per table, digests of views, routines, triggers, events" : "a checksum per table over every row, digests of the other objects"})`, tRes);
        }
        await t.destroy();
      } catch (err) {
        record("restore", "FAIL", `${oneLine(err)}${hintFor(err)}`, tRes);
      }

      // ---- a truncated stream, fed to the method's restore directly
      watcher.phase = "restore of a truncated stream";
      const tTrunc = Date.now();
      try {
        if (!entry) throw failed("NotListed", "the backup is not listed, so its stream cannot be read back");
        const raw = await readAllBytes((await openBackupInput(repo, entry)).input, 512 * 1024 * 1024);
        const half = raw.subarray(0, Math.floor(raw.length / 2));
        const t = await target(datadirShape);
        const signal = stepSignal();
        let outcome: unknown;
        try {
          if (m.restoreInto === "datadir") {
            await m.restore({ datadir: t.datadir, manifest: entry.manifest, options: methodOptions, log, signal }, Readable.from([half]));
          } else {
            await m.restore({ target: t.endpoint, manifest: entry.manifest, options: methodOptions, log, signal }, Readable.from([half]));
          }
        } catch (err) {
          outcome = err;
        }
        await t.destroy();
        if (outcome === undefined) {
          record(
            "truncated",
            "FAIL",
            `restore of the first half of the stream (${String(half.length)} of ${String(raw.length)} bytes) exited 0; read stdin to EOF and exit non-zero when the stream is incomplete (check the archive's end, e.g. tar's end-of-archive blocks or a trailer the backup writes last)`,
            tTrunc,
          );
        } else {
          record("truncated", "PASS", `restore of ${String(half.length)} of ${String(raw.length)} bytes failed as it must: ${oneLine(outcome)}`, tTrunc);
        }
      } catch (err) {
        record("truncated", "FAIL", `could not run the check: ${oneLine(err)}`, tTrunc);
      }

      // ---- a replica seeded from the backup
      watcher.phase = "replica seeding";
      const tRep = Date.now();
      if (!seedsReplicas) {
        record("replica", "SKIP", `skipped: ${NO_LOGICAL_STANDBY}`, tRep);
      } else {
        try {
          await kit.fixture.writeAfter(source);
          const t = await target(datadirShape);
          const replicateFrom: Endpoint = { ...source.endpoint, user: replication.user, password: replication.password };
          await runRestore({
            repo,
            ...(datadirShape ? { datadir: t.datadir } : { target: t.endpoint }),
            selector: { kind: "name", name: backup.name },
            replicateFrom,
            replicationTimeoutMs: 60_000,
            methodOptions,
            log,
            signal: stepSignal(),
            resolveMethod,
          });
          if (datadirShape) {
            try {
              await t.start();
            } catch (err) {
              throw failed("DatadirWontStart", `the replica's restored data directory does not start: ${oneLine(err)}`);
            }
          }
          // Wait for the write; give up early once replication has been stopped for 15 s (it stopped on an error).
          let stoppedSince: number | undefined;
          const got = await waitUntil(
            async () => {
              const running = await kit.fixture.replicating(t).catch(() => false);
              if (running) stoppedSince = undefined;
              else stoppedSince ??= Date.now();
              if (stoppedSince !== undefined && Date.now() - stoppedSince > 15_000) throw new Error("stopped");
              return running && (await kit.fixture.sawWriteAfter(t).catch(() => false));
            },
            opts.replicaTimeoutMs ?? 60_000,
            outer,
          );
          if (got) {
            record("replica", "PASS", `the replica ${datadirShape ? "started from the configured data directory, " : ""}replicates from the source and received the write made after the backup`, tRep);
          } else {
            const why = (await kit.fixture.replicationError?.(t).catch(() => undefined)) ?? "";
            const running = await kit.fixture.replicating(t).catch(() => false);
            record(
              "replica",
              "FAIL",
              running
                ? "the replica runs but did not receive the write made after the backup within the timeout: the reported position is probably later than the backup's data"
                : `the replica does not replicate${why ? `: ${why}` : ""}; ${REPLICA_HINT}`,
              tRep,
            );
          }
          await t.destroy();
        } catch (err) {
          const msg =
            isReplicatorError(err) && err.reason === "ReplicationFailed"
              ? `the replica does not replicate: ${oneLine(err)}; ${REPLICA_HINT}`
              : `${oneLine(err)}${hintFor(err)}`;
          record("replica", "FAIL", msg, tRep);
        }
      }
    } else {
      for (const id of ["position", "catalog", "restore", "truncated", "replica"] as const) record(id, "SKIP", "skipped: needs a backup", Date.now());
    }

    // ---- a wrong password
    watcher.phase = "backup with a wrong password";
    const tWrong = Date.now();
    try {
      await runBackup({
        repo,
        source: { ...source.endpoint, password: wrongPassword },
        sourceName: "kit-wrong-password",
        method: m.name,
        methodOptions,
        compression: "zstd",
        log,
        signal: stepSignal(),
        resolveMethod,
      });
      record("wrong-password", "FAIL", "backup with a wrong password succeeded: the plugin must connect with the credentials the agent gives it (REPLICATOR_DB_DEFAULTS_FILE / REPLICATOR_DB_PASSFILE) and fail when they are wrong", tWrong);
    } catch (err) {
      if (err instanceof PluginError) {
        if (!err.stderrLine) {
          record("wrong-password", "FAIL", `backup failed (exit code ${String(err.exitCode)}) but printed nothing on stderr; print one line that says what failed (e.g. the server's "Access denied" error) before exiting`, tWrong);
        } else {
          const codeNote = err.exitCode === 2 ? "" : ` (exit code ${String(err.exitCode)}; 2 would tell the operator not to retry a wrong password)`;
          record("wrong-password", "PASS", `failed with: ${err.stderrLine}${codeNote}`, tWrong);
        }
      } else if (isReplicatorError(err) && (err.reason === "PluginNoStream" || err.reason === "PluginInvalidResult")) {
        record("wrong-password", "FAIL", `backup with a wrong password exited 0 (${oneLine(err)}); exit non-zero (2 for bad input) with one line on stderr when the server refuses the credentials`, tWrong);
      } else {
        record("wrong-password", "PASS", `failed with: ${oneLine(err)}`, tWrong);
      }
    }
  } catch (err) {
    // The kit itself could not go on (a sandbox did not start...): the rest is skipped, and the report says why.
    // The first check not run fails with the reason; the others are skipped.
    const pending = CHECK_ORDER.filter((id) => !done.has(id) && id !== "secrets");
    const [first, ...rest] = pending;
    if (first) record(first, "FAIL", `the kit stopped early (not the method's fault, unless it broke the server): ${oneLine(err)}`, Date.now());
    for (const id of rest) record(id, "SKIP", "skipped: the kit stopped early", Date.now());
    notes.push(`the kit stopped early: ${oneLine(err)}`);
  } finally {
    await watcher.stop();
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  }

  if (interrupted()) throw failed("Interrupted", "interrupted; the kit's servers and files were removed");

  // ---- secrets on command lines
  const tSec = Date.now();
  if (!canWatch) {
    record("secrets", "SKIP", "skipped: no /proc on this system", tSec);
  } else {
    const onArgv = watcher.sightings.filter((s) => s.in === "cmdline");
    for (const s of watcher.sightings.filter((x) => x.in === "environ")) notes.push(`a password was in a process's environment during ${s.phase} (${s.where}); a file (REPLICATOR_DB_DEFAULTS_FILE) is safer than MYSQL_PWD/PGPASSWORD`);
    if (onArgv.length > 0) {
      record(
        "secrets",
        "FAIL",
        `a password was on a command line, visible to every user in /proc: ${onArgv.slice(0, 3).map((s) => `during ${s.phase}, pid ${String(s.pid)} \`${s.where}\``).join("; ")}; pass credentials to tools with --defaults-file=$REPLICATOR_DB_DEFAULTS_FILE (MySQL) or PGPASSFILE=$REPLICATOR_DB_PASSFILE (PostgreSQL), never as arguments`,
        tSec,
      );
    } else {
      record("secrets", "PASS", `no password in ${String(watcher.scans)} scans of every process's command line (about every 20 ms while the kit ran)`, tSec);
    }
  }
  return report();
}

// ---------------------------------------------------------------- output

/** One line per check, as the CLI prints it. */
export function formatCheck(c: CheckResult): string {
  return `${c.status} ${c.id.padEnd(15)} ${c.message}`;
}

export function formatSummary(r: Report): string {
  const what = r.mode === "builtin" ? `built-in method ${r.subject}` : `plugin ${r.method ?? r.subject}`;
  const tail = r.ok ? `${what} conforms to contract ${String(r.contract)}` : `${what} does not conform to contract ${String(r.contract)}`;
  return `${String(r.passed)} passed, ${String(r.failed)} failed, ${String(r.skipped)} skipped in ${(r.durationMs / 1000).toFixed(1)}s: ${tail}`;
}

export function knownBuiltins(): string[] {
  return builtinMethods();
}
