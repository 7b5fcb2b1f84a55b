// A BackupMethod built from an executable: the process-level plugin contract,
// version 1 (docs/plugins.md). A third party writes `PLUGIN info|backup|
// restore|configure-replica` in any language; the agent keeps compression,
// sha256, storage, the manifest (the commit point), retention, leases and the
// result line, exactly as for a built-in method.
//
// Per run the agent makes a private 0700 directory holding the credentials
// file(s), the manifest (restore), the result file the plugin writes, and a
// scratch directory (REPLICATOR_TMPDIR); it is removed when the run ends.
import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { PassThrough, Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badInput, failed, ReplicatorError } from "../../lib/errors.js";
import type { Logger } from "../../lib/log.js";
import type { Manifest } from "../../storage/catalog.js";
import type {
  BackupContext,
  BackupMethod,
  BackupOutcome,
  BackupRun,
  DatadirRestoreContext,
  DatadirRestoreMethod,
  DatadirRestoreOutcome,
  RestoreContext,
  SeedContext,
  ServerRestoreMethod,
} from "../contract.js";
import { builtinMethods, getMethod } from "../registry.js";
import { makePrivateDir } from "../../db/defaults-file.js";
import { connectionEnv } from "./credentials.js";
import {
  CONTRACT_VERSION,
  ENV,
  EXIT_BAD_INPUT,
  lastLine,
  RESERVED_METHOD_NAMES,
  validateBackupResult,
  validateDatadirRestoreResult,
  validateInfo,
  type PluginInfo,
  type Subcommand,
} from "./protocol.js";
import { runnerFor, startPlugin, type Exit, type PluginRunner } from "./runner.js";

export { runnerFor, looksLikeImage, findContainerEngine, type PluginRunner } from "./runner.js";
export type { PluginInfo } from "./protocol.js";

/** A plugin run that did not succeed: the one-line message quotes the plugin's last stderr line. */
export class PluginError extends ReplicatorError {
  constructor(
    kind: "BadInput" | "Failed",
    reason: string,
    message: string,
    readonly plugin: string,
    readonly subcommand: Subcommand,
    readonly exitCode: number | null,
    readonly signal: NodeJS.Signals | null,
    /** The plugin's last stderr line ("" when it printed nothing). */
    readonly stderrLine: string,
    opts: { detail?: string; cause?: unknown } = {},
  ) {
    super(kind, reason, message, opts);
  }
}

const VERB: Record<Subcommand, string> = {
  info: "describe itself (info)",
  backup: "back up",
  restore: "restore",
  "configure-replica": "configure the replica",
};

function exitError(name: string, sub: Subcommand, x: Exit, aborted: boolean): PluginError {
  const line = lastLine(x.stderr);
  const detail = x.stderr.slice(-4000);
  if (x.spawnError) {
    const code = x.spawnError.code;
    const why = code === "ENOENT" ? "it does not exist (or is not on PATH)" : code === "EACCES" ? "it is not executable (chmod +x)" : x.spawnError.message;
    return new PluginError("BadInput", "PluginNotFound", `cannot run plugin ${name}: ${why}`, name, sub, null, null, "", { cause: x.spawnError });
  }
  const said = line ? `: ${line}` : " and printed nothing on stderr";
  if (aborted || x.signal) {
    const how = aborted ? "was stopped (the operation was aborted)" : `was killed by ${x.signal ?? "a signal"}`;
    return new PluginError("Failed", "PluginFailed", `plugin ${name} ${how} while it ran ${sub}${line ? `; its last line: ${line}` : ""}`, name, sub, x.code, x.signal, line, { detail });
  }
  if (x.code === EXIT_BAD_INPUT) {
    return new PluginError("BadInput", "PluginBadInput", `plugin ${name} refused to ${VERB[sub]} (bad input, exit code 2)${said}`, name, sub, x.code, null, line, { detail });
  }
  return new PluginError("Failed", "PluginFailed", `plugin ${name} failed to ${VERB[sub]} (exit code ${String(x.code)})${said}`, name, sub, x.code, null, line, { detail });
}

interface RunDir {
  dir: string;
  tmp: string;
  resultFile: string;
  cleanup(): Promise<void>;
}

/** A private run directory (0700, named after this process, removed at exit, swept after a SIGKILL): it holds the plugin's credential files. */
async function makeRunDir(): Promise<RunDir> {
  const d = await makePrivateDir("replicator-plugin");
  const tmp = path.join(d.path, "tmp");
  await mkdir(tmp, { mode: 0o700 });
  return { dir: d.path, tmp, resultFile: path.join(d.path, "result.json"), cleanup: () => d.remove() };
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}

/** Counts bytes as they pass. */
class Counter extends Transform {
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null, data?: Buffer) => void): void {
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

export interface ExecMethodOptions {
  runner: PluginRunner;
  info: PluginInfo;
  /** Kill a run that takes longer (default: none; the Job's deadline applies). */
  timeoutMs?: number | undefined;
}

/** What a plugin run shares: env, its directory, the stderr log, kill on abort. */
class Runs {
  constructor(
    readonly runner: PluginRunner,
    readonly info: PluginInfo,
    readonly timeoutMs: number | undefined,
  ) {}

  baseEnv(dir: RunDir, options: Record<string, unknown>): Record<string, string> {
    return {
      [ENV.contract]: String(CONTRACT_VERSION),
      [ENV.method]: this.info.name,
      [ENV.options]: JSON.stringify(options),
      [ENV.resultFile]: dir.resultFile,
      [ENV.tmpdir]: dir.tmp,
      TMPDIR: dir.tmp,
    };
  }

  start(sub: Subcommand, env: Record<string, string>, mounts: string[], io: { stdin: "pipe" | "ignore"; stdout: "pipe" | "ignore" }, log: Logger, signal: AbortSignal) {
    const plog = log.child({ plugin: this.info.name, run: sub });
    plog.debug({ command: this.runner.describe, env: Object.keys(env) }, "plugin started");
    return startPlugin(this.runner, sub, { env, mounts, ...io }, {
      signal,
      timeoutMs: this.timeoutMs,
      onLine: (line) => { plog.info({ stderr: line }, "plugin"); },
    });
  }
}

function checkJsonOptions(options: Record<string, unknown>): void {
  try {
    JSON.stringify(options);
  } catch (err) {
    throw badInput("InvalidOption", `method options must be JSON (they reach the plugin as ${ENV.options}): ${(err as Error).message}`);
  }
}

async function backup(r: Runs, ctx: BackupContext): Promise<BackupRun> {
  const name = r.info.name;
  const dir = await makeRunDir();
  try {
    const env = { ...r.baseEnv(dir, ctx.options), ...(await connectionEnv("REPLICATOR_DB", ctx.source, dir.dir)) };
    const p = r.start("backup", env, [dir.dir], { stdin: "ignore", stdout: "pipe" }, ctx.log, ctx.signal);
    const counter = new Counter();
    const out = new PassThrough({ highWaterMark: 1024 * 1024 });
    const piping = p.stdout
      ? pipeline(p.stdout, counter, out).catch((err: unknown) => {
          p.kill();
          out.destroy(err as Error);
          throw err;
        })
      : Promise.resolve();
    const outcome = (async (): Promise<BackupOutcome> => {
      try {
        const [x, piped] = await Promise.all([p.exit, piping.then(() => undefined, (e: unknown) => e)]);
        if (x.spawnError || x.code !== 0 || x.signal) throw exitError(name, "backup", x, ctx.signal.aborted);
        if (piped) throw asError(piped);
        if (counter.bytes === 0) {
          throw failed("PluginNoStream", `plugin ${name} exited 0 but wrote no backup stream on stdout; a backup writes its raw bytes to stdout (logs go to stderr)`);
        }
        const text = await readOptional(dir.resultFile);
        if (text === undefined) {
          throw badInput("PluginInvalidResult", `plugin ${name} exited 0 but wrote no result to ${ENV.resultFile}; write {"role":...,"serverId":...,"version":...,"replication":{...}} there before exiting`);
        }
        const v = validateBackupResult(text, r.info.engine);
        if (!v.ok) throw badInput("PluginInvalidResult", `plugin ${name} wrote an invalid result: ${v.error}`);
        const res = v.value;
        return {
          role: res.role,
          serverId: res.serverId,
          version: res.version,
          replication: res.replication,
          details: { ...(res.details ?? {}), plugin: { name, ...(r.info.version ? { version: r.info.version } : {}), contract: CONTRACT_VERSION } },
          warnings: res.warnings ?? [],
        };
      } finally {
        await dir.cleanup();
      }
    })();
    outcome.catch(() => undefined);
    return { stream: out, outcome };
  } catch (err) {
    await dir.cleanup();
    throw err;
  }
}

/** Feed `input` to a plugin's stdin and wait for it; a plugin that stops reading early and exits 0 fails. */
async function feed(r: Runs, sub: Subcommand, p: ReturnType<Runs["start"]>, input: Readable, signal: AbortSignal): Promise<void> {
  const name = r.info.name;
  const counter = new Counter();
  const stdin = p.stdin;
  if (!stdin) throw new Error("plugin stdin is not a pipe");
  // A plugin that exits early closes its stdin: EPIPE is expected then; its exit code says why.
  stdin.on("error", () => undefined);
  const feeding = pipeline(input, counter, stdin).then(
    () => undefined,
    (err: unknown) => {
      p.kill();
      return err;
    },
  );
  const [x, fed] = await Promise.all([p.exit, feeding]);
  // A corrupt or truncated stored object is the real cause when both fail.
  if (fed && (fed as { reason?: string }).reason === "CorruptBackup") throw asError(fed);
  if (x.spawnError || x.code !== 0 || x.signal) throw exitError(name, sub, x, signal.aborted);
  if (fed) {
    const code = (fed as NodeJS.ErrnoException).code;
    if (code === "EPIPE" || code === "ERR_STREAM_DESTROYED" || code === "ERR_STREAM_PREMATURE_CLOSE") {
      throw failed(
        "PluginIncompleteRead",
        `plugin ${name} exited 0 after reading only ${counter.bytes} bytes of the stream; a restore must read stdin to EOF (and fail when the stream is incomplete)`,
      );
    }
    throw asError(fed);
  }
}

async function writeManifest(dir: RunDir, manifest: Manifest): Promise<Record<string, string>> {
  const file = path.join(dir.dir, "manifest.json");
  await writeFile(file, `${JSON.stringify(manifest)}\n`, { mode: 0o600 });
  return { [ENV.manifestFile]: file };
}

async function restoreServer(r: Runs, ctx: RestoreContext, input: Readable): Promise<void> {
  const dir = await makeRunDir();
  try {
    const env = { ...r.baseEnv(dir, ctx.options), ...(await connectionEnv("REPLICATOR_DB", ctx.target, dir.dir)), ...(await writeManifest(dir, ctx.manifest)) };
    const p = r.start("restore", env, [dir.dir], { stdin: "pipe", stdout: "ignore" }, ctx.log, ctx.signal);
    await feed(r, "restore", p, input, ctx.signal);
  } finally {
    await dir.cleanup();
  }
}

async function restoreDatadir(r: Runs, ctx: DatadirRestoreContext, input: Readable): Promise<DatadirRestoreOutcome> {
  const dir = await makeRunDir();
  try {
    const env = { ...r.baseEnv(dir, ctx.options), [ENV.datadir]: ctx.datadir, ...(await writeManifest(dir, ctx.manifest)) };
    const p = r.start("restore", env, [dir.dir, ctx.datadir], { stdin: "pipe", stdout: "ignore" }, ctx.log, ctx.signal);
    await feed(r, "restore", p, input, ctx.signal);
    const text = await readOptional(dir.resultFile);
    if (text === undefined) return { warnings: [] };
    const v = validateDatadirRestoreResult(text, r.info.engine);
    if (!v.ok) throw badInput("PluginInvalidResult", `plugin ${r.info.name} wrote an invalid restore result: ${v.error}`);
    return { ...(v.value.replication ? { replication: v.value.replication } : {}), warnings: v.value.warnings ?? [] };
  } finally {
    await dir.cleanup();
  }
}

async function configureReplica(r: Runs, ctx: SeedContext): Promise<void> {
  const dir = await makeRunDir();
  try {
    const env = {
      ...r.baseEnv(dir, ctx.options),
      [ENV.datadir]: ctx.datadir,
      [ENV.position]: JSON.stringify(ctx.position),
      ...(await writeManifest(dir, ctx.manifest)),
      ...(await connectionEnv("REPLICATOR_MASTER", ctx.replicateFrom, dir.dir)),
    };
    const p = r.start("configure-replica", env, [dir.dir, ctx.datadir], { stdin: "ignore", stdout: "ignore" }, ctx.log, ctx.signal);
    const x = await p.exit;
    if (x.spawnError || x.code !== 0 || x.signal) throw exitError(r.info.name, "configure-replica", x, ctx.signal.aborted);
  } finally {
    await dir.cleanup();
  }
}

/** Build the method from a plugin's validated `info`. */
export function execMethod(opts: ExecMethodOptions): BackupMethod {
  const r = new Runs(opts.runner, opts.info, opts.timeoutMs);
  const base = {
    name: opts.info.name,
    kind: opts.info.kind,
    engine: opts.info.engine,
    extension: opts.info.extension,
    validateOptions: checkJsonOptions,
    backup: (ctx: BackupContext) => backup(r, ctx),
  };
  if (opts.info.restoreInto === "datadir") {
    const m: DatadirRestoreMethod = {
      ...base,
      restoreInto: "datadir",
      restore: (ctx, input) => restoreDatadir(r, ctx, input),
      configureReplica: (ctx) => configureReplica(r, ctx),
    };
    return m;
  }
  const m: ServerRestoreMethod = { ...base, restoreInto: "server", restore: (ctx, input) => restoreServer(r, ctx, input) };
  return m;
}

export interface LoadedPlugin {
  method: BackupMethod;
  info: PluginInfo;
  runner: PluginRunner;
}

/** Run `PLUGIN info`, validate it, and build the method. */
export async function loadPlugin(
  runner: PluginRunner,
  opts: { log: Logger; signal?: AbortSignal | undefined; timeoutMs?: number | undefined },
): Promise<LoadedPlugin> {
  const who = runner.describe;
  const p = startPlugin(runner, "info", { env: { [ENV.contract]: String(CONTRACT_VERSION) }, mounts: [], stdin: "ignore", stdout: "pipe" }, {
    signal: opts.signal,
    timeoutMs: 60_000,
    onLine: (line) => { opts.log.debug({ plugin: who, stderr: line }, "plugin info"); },
  });
  let stdout = "";
  p.stdout?.setEncoding("utf8");
  p.stdout?.on("data", (c: string) => {
    stdout += c;
    if (stdout.length > 64 * 1024) p.kill(0);
  });
  const x = await p.exit;
  if (x.spawnError || x.code !== 0 || x.signal) throw exitError(who, "info", x, opts.signal?.aborted ?? false);
  const v = validateInfo(stdout, [...builtinMethods(), ...RESERVED_METHOD_NAMES]);
  if (!v.ok) throw badInput("PluginInvalidInfo", `plugin ${who} printed invalid info: ${v.error}`);
  return { info: v.value, runner, method: execMethod({ runner, info: v.value, timeoutMs: opts.timeoutMs }) };
}

/** The plugin named by `--plugin` or REPLICATOR_PLUGIN, if any. */
export function pluginCommand(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = flag ?? env.REPLICATOR_PLUGIN;
  return v === undefined || v.trim() === "" ? undefined : v;
}

/** Load the plugin given by `--plugin CMD` / REPLICATOR_PLUGIN (an executable; images only in the kit). */
export async function loadPluginCommand(command: string, opts: { log: Logger; signal?: AbortSignal }): Promise<LoadedPlugin> {
  return loadPlugin(runnerFor(command, { allowImage: false }), opts);
}

/**
 * Resolve a backup's method: the plugin when its name matches, else a
 * built-in; otherwise say which plugin made the backup and how to pass it.
 */
export function pluginResolver(plugin: LoadedPlugin | undefined): (name: string, backup?: string) => BackupMethod {
  return (name, backup) => {
    if (plugin && name === plugin.info.name) return plugin.method;
    if (builtinMethods().includes(name)) return getMethod(name);
    const what = backup ? `backup ${backup} was made by plugin ${name}` : `backups of method ${name} are made by a plugin (${name} is not built in: ${builtinMethods().join(", ")})`;
    if (plugin) {
      throw badInput(
        "PluginMismatch",
        `${what}, but the plugin given (${plugin.runner.describe}) is ${plugin.info.name}; pass --plugin (or REPLICATOR_PLUGIN) with the command of plugin ${name}`,
      );
    }
    throw badInput("PluginRequired", `${what}; pass --plugin with that plugin's command (or set REPLICATOR_PLUGIN)`);
  };
}
