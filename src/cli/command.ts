// The `replicator` command (also installed as `kubectl-replicator`).
// Exit codes: 0 done, 2 bad input (do not retry), 1 failure.
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs, type ParseArgsConfig } from "node:util";
import { TOOL_VERSION } from "../version.js";
import { describeEndpoint } from "../db/endpoint.js";
import { failIfUnsettled } from "../lib/unsettled.js";
import { badInput, exitCodeFor, failed, isReplicatorError, oneLine } from "../lib/errors.js";
import { createLogger, type Logger } from "../lib/log.js";
import type { DatadirReplay } from "../agent/restore.js";
import type { LoadedPlugin } from "../plugins/exec/index.js";
import { formatBytes, formatPosition, parseTime, type Selector } from "../storage/catalog.js";
import { boundedList } from "../storage/object-store.js";
import { loadManifestCache, manifestCacheDir, manifestCacheFile, saveManifestCache } from "../storage/manifest-cache.js";
import { openRepository } from "../storage/open.js";
import { Repository, type Listing } from "../storage/repository.js";
import { renderTable } from "./table.js";
import { endpointFrom, findConfigPath, loadConfigFile, requireSetting, resolveSettings, type Settings } from "./config.js";

// The methods, the database client, plugins and PITR are imported by the
// commands that use them (below), not here: `list`, `verify`, `delete` and
// `--version` do not load them (about 0.3 s of start-up on a busy machine).
const agentBackup = (): Promise<typeof import("../agent/backup.js")> => import("../agent/backup.js");
const agentRestore = (): Promise<typeof import("../agent/restore.js")> => import("../agent/restore.js");
const agentProvision = (): Promise<typeof import("../agent/provision.js")> => import("../agent/provision.js");
const dbConnection = (): Promise<typeof import("../db/connection.js")> => import("../db/connection.js");
const dbReplication = (): Promise<typeof import("../db/replication.js")> => import("../db/replication.js");
const plugins = (): Promise<typeof import("../plugins/exec/index.js")> => import("../plugins/exec/index.js");
const pitrCli = (): Promise<typeof import("../pitr/cli.js")> => import("../pitr/cli.js");
const pitrRetention = (): Promise<typeof import("../pitr/retention.js")> => import("../pitr/retention.js");

const USAGE = `replicator ${TOOL_VERSION}: backup, restore and slave provisioning for MySQL/MariaDB

Usage:
  replicator backup  [--source URL] [--repository URL] [--cluster NAME] [--method NAME] [--retain N] [--json]
  replicator restore [--target URL | --datadir DIR] [--repository URL] [--cluster NAME] [--backup NAME | --before TIME]
                     [--replicate-from URL [--dry-run]] [--force] [--json]
                     (--replicate-from: when the master has purged binlogs the backup needs, the binlog archive bridges them)
  replicator restore --until TIME | --until-gtid GTID --target URL | --datadir DIR [--repository URL] [--cluster NAME] [--dry-run] [--json]
                     (point in time: the newest backup before it, then the archived binlogs up to it)
  replicator binlog-archive [--source URL] [--repository URL] [--cluster NAME] [--once] [--flush-interval SECONDS] [--json]
                     (copies the master's binlogs into <repository>/<cluster>/binlogs/<server_id>/)
  replicator list    [--repository URL] [--cluster NAME] [--json]
  replicator prune   --retain N [--repository URL] [--cluster NAME] [--dry-run] [--json]
  replicator verify  [NAME] [--repository URL] [--cluster NAME] [--json]
  replicator delete  NAME [--repository URL] [--cluster NAME] [--force]
  replicator offline|online [--target mysql://USER@HOST:PORT]
  replicator plugin-test COMMAND|IMAGE | --method NAME [--json]
  replicator provision --datadir DIR --plan-file FILE [--plan-timeout SECONDS] [--plugin CMD]
                     (the init container of a self-provisioning slave; see docs/provisioning.md)

Servers: mysql://USER@HOST:PORT (MySQL/MariaDB) or postgresql://USER@HOST:PORT/DB.
Methods: mysqldump (default for mysql://), mysqldump_parallel (several dump processes from
one snapshot, loaded by several connections), mariabackup (physical), pg_dump (default for
postgresql://), pg_basebackup (physical). Logical backups restore into a running server
(--target); physical ones into the empty data directory of a stopped server (--datadir),
which --replicate-from configures to replicate when the server starts.
Repositories: s3://bucket/prefix (credentials from the AWS SDK chain; --s3-endpoint for
S3-compatible stores) or file:///abs/path.
Passwords: REPLICATOR_DB_PASSWORD or --password-file (database user),
REPLICATOR_REPLICATION_PASSWORD or --replication-password-file (--replicate-from user).
Config: --config FILE, $REPLICATOR_CONFIG, or ./replicator.yaml.

Backup options: --lock auto|single-transaction|ftwrl  --databases a,b  --users
                --compression zstd|gzip|none  --source-name NAME
                --threads N (mysqldump_parallel: dump processes at once)
Restore options: --skip-binlog-check  --replication-timeout SECONDS
                 --databases a,b | --tables db.t,db.u (a mysqldump_parallel backup: load only those)
Plugins: --plugin CMD (or REPLICATOR_PLUGIN) backs up with, and restores backups of, a
         third-party method (docs/plugins.md); \`plugin-test\` checks one against the contract.
Global: --config FILE  --log-level LEVEL  --no-progress  --help  --version`;

const options = {
  config: { type: "string" },
  repository: { type: "string", short: "r" },
  cluster: { type: "string", short: "c" },
  source: { type: "string" },
  "source-name": { type: "string" },
  target: { type: "string" },
  method: { type: "string" },
  plugin: { type: "string" },
  retain: { type: "string" },
  json: { type: "boolean" },
  backup: { type: "string" },
  before: { type: "string" },
  "replicate-from": { type: "string" },
  datadir: { type: "string" },
  "plan-file": { type: "string" },
  "plan-timeout": { type: "string" },
  force: { type: "boolean" },
  lock: { type: "string" },
  databases: { type: "string" },
  tables: { type: "string" },
  threads: { type: "string" },
  users: { type: "boolean" },
  compression: { type: "string" },
  "s3-endpoint": { type: "string" },
  "s3-region": { type: "string" },
  "password-file": { type: "string" },
  "replication-password-file": { type: "string" },
  "skip-binlog-check": { type: "boolean" },
  "replication-timeout": { type: "string" },
  "expected-size": { type: "string" },
  "dry-run": { type: "boolean" },
  until: { type: "string" },
  "until-gtid": { type: "string" },
  once: { type: "boolean" },
  "flush-interval": { type: "string" },
  "log-level": { type: "string" },
  "no-progress": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
} satisfies ParseArgsConfig["options"];

type Values = ReturnType<typeof parseArgs<{ options: typeof options; allowPositionals: true }>>["values"];
type Option = keyof typeof options;

const COMMANDS = ["backup", "restore", "provision", "list", "prune", "verify", "delete", "offline", "online", "plugin-test", "binlog-archive", "help", "version"] as const;
type Command = (typeof COMMANDS)[number];

/** Every command's JSON output (`--json`) carries this; bumped when a field changes meaning or goes away. */
export const JSON_FORMAT_VERSION = 1;

/** Options every command takes. */
const GLOBAL_OPTIONS: readonly Option[] = ["config", "json", "log-level", "no-progress", "help", "version"];
const REPOSITORY_OPTIONS: readonly Option[] = ["repository", "cluster", "s3-endpoint", "s3-region"];

/**
 * The flags each command uses. One option table serves the parser, so a flag
 * a command does not use is refused here instead of being silently ignored
 * (e.g. `restore --databases a` would otherwise load every database).
 */
const COMMAND_OPTIONS: Record<Exclude<Command, "help" | "version">, readonly Option[]> = {
  "plugin-test": ["method"],
  backup: [...REPOSITORY_OPTIONS, "source", "source-name", "method", "plugin", "retain", "lock", "databases", "threads", "users", "compression", "password-file", "expected-size"],
  restore: [...REPOSITORY_OPTIONS, "target", "datadir", "backup", "before", "replicate-from", "plugin", "force", "password-file", "replication-password-file", "skip-binlog-check", "replication-timeout", "until", "until-gtid", "dry-run", "databases", "tables"],
  "binlog-archive": [...REPOSITORY_OPTIONS, "source", "password-file", "once", "flush-interval"],
  provision: ["datadir", "plan-file", "plan-timeout", "plugin", "replication-password-file", "s3-endpoint", "s3-region"],
  list: [...REPOSITORY_OPTIONS],
  prune: [...REPOSITORY_OPTIONS, "retain", "dry-run"],
  verify: [...REPOSITORY_OPTIONS],
  delete: [...REPOSITORY_OPTIONS, "force"],
  offline: ["target", "source", "password-file"],
  online: ["target", "source", "password-file"],
};

const WHY_NOT: Partial<Record<Option, string>> = {
  databases: "it chooses what a backup holds",
  tables: "it chooses what a restore loads",
  threads: "it chooses how a backup is made",
  lock: "it chooses how a backup is made",
  users: "it chooses what a backup holds",
  compression: "a restore reads the compression from the backup's manifest",
  "source-name": "it names new backups",
  method: "a restore takes the method from the backup's manifest",
  retain: "retention runs after `backup --retain N` or with `replicator prune --retain N`",
};

export function checkCommandOptions(command: Command, values: Record<string, unknown>): void {
  if (command === "help" || command === "version") return;
  const allowed = new Set<string>([...GLOBAL_OPTIONS, ...COMMAND_OPTIONS[command]]);
  for (const [flag, value] of Object.entries(values)) {
    if (value === undefined || allowed.has(flag)) continue;
    const why = WHY_NOT[flag as Option];
    throw badInput(
      "InvalidArguments",
      `--${flag} is not an option of \`replicator ${command}\`${why ? ` (${why})` : ""}; see \`replicator --help\``,
    );
  }
}

interface Ctx {
  values: Values;
  positionals: string[];
  settings: Settings;
  log: Logger;
  signal: AbortSignal;
  out: (line: string) => void;
}

function parse(argv: string[]): { command: Command; values: Values; positionals: string[] } {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw badInput("InvalidArguments", `${oneLine(err)}; see \`replicator --help\``);
  }
  const [first, ...rest] = parsed.positionals;
  if (parsed.values.version) return { command: "version", values: parsed.values, positionals: [] };
  if (parsed.values.help || first === undefined) return { command: "help", values: parsed.values, positionals: [] };
  if (!(COMMANDS as readonly string[]).includes(first)) {
    throw badInput("UnknownCommand", `unknown command "${first}"; commands: ${COMMANDS.filter((c) => c !== "help" && c !== "version").join(", ")}`);
  }
  checkCommandOptions(first as Command, parsed.values);
  return { command: first as Command, values: parsed.values, positionals: rest };
}

async function repositoryOf(ctx: Ctx): Promise<Repository> {
  const url = requireSetting(ctx.settings.repository, "--repository", "repository");
  return new Repository(await openRepository(url, ctx.settings.s3), ctx.settings.cluster);
}

/**
 * The listing of list and verify, through the manifest cache file
 * (storage/manifest-cache.ts; REPLICATOR_MANIFEST_CACHE=off skips it). A cache
 * that cannot be written costs speed only.
 */
async function listCached(ctx: Ctx, repo: Repository): Promise<Listing> {
  const dir = manifestCacheDir();
  if (!dir) return repo.list();
  const scope = { identity: repo.store.identity, cluster: repo.cluster };
  const file = manifestCacheFile(dir, scope);
  const manifestCache = await loadManifestCache(file, scope);
  const debug = (detail: Record<string, unknown>, msg: string): void => {
    ctx.log.debug(detail, msg);
  };
  const listing = await new Repository(repo.store, repo.cluster, { manifestCache, debug }).list();
  await saveManifestCache(file, scope, manifestCache).catch((err: unknown) => {
    ctx.log.debug({ file, err: oneLine(err) }, "manifest cache not written");
  });
  return listing;
}

function methodOptionsOf(ctx: Ctx): Record<string, unknown> {
  const o: Record<string, unknown> = { ...ctx.settings.methodOptions };
  if (ctx.values.lock !== undefined) o.lock = ctx.values.lock;
  if (ctx.values.databases !== undefined) o.databases = ctx.values.databases;
  if (ctx.values.threads !== undefined) o.threads = ctx.values.threads;
  if (ctx.values.users) o.users = true;
  return o;
}

/** A restore's options: the method's settings, and which databases or tables to load (from the command line only, never from a backup setting). */
function restoreOptionsOf(ctx: Ctx): Record<string, unknown> {
  const o = methodOptionsOf(ctx);
  delete o.databases;
  if (ctx.values.databases !== undefined) o.restoreDatabases = ctx.values.databases;
  if (ctx.values.tables !== undefined) o.restoreTables = ctx.values.tables;
  return o;
}

function noPositionals(ctx: Ctx, command: string): void {
  if (ctx.positionals.length > 0) {
    throw badInput("InvalidArguments", `unexpected argument "${ctx.positionals[0] ?? ""}" for ${command}; see \`replicator --help\``);
  }
}

function showProgress(ctx: Ctx): boolean {
  return !ctx.values.json && !ctx.values["no-progress"] && process.stderr.isTTY;
}

async function cmdBackup(ctx: Ctx): Promise<unknown> {
  noPositionals(ctx, "backup");
  const source = endpointFrom(requireSetting(ctx.settings.source, "--source", "source"), "--source", ctx.settings.dbPassword(), process.env.REPLICATOR_DB_USER);
  const repo = await repositoryOf(ctx);
  const plugin = await pluginOf(ctx);
  const [{ runBackup }, { pluginResolver }] = await Promise.all([agentBackup(), plugins()]);
  if (plugin && ctx.settings.method && ctx.settings.method !== plugin.info.name) {
    ctx.log.warn({ method: ctx.settings.method, plugin: plugin.info.name }, `method ${ctx.settings.method} ignored: backing up with plugin ${plugin.info.name}`);
  }
  const r = await runBackup({
    repo,
    source,
    sourceName: ctx.values["source-name"],
    expectedSize: ctx.values["expected-size"] !== undefined ? parseSize(ctx.values["expected-size"], "--expected-size") : undefined,
    method: plugin?.info.name ?? ctx.settings.method ?? (source.engine === "postgresql" ? "pg_dump" : "mysqldump"),
    resolveMethod: plugin ? pluginResolver(plugin) : undefined,
    methodOptions: methodOptionsOf(ctx),
    compression: ctx.settings.compression,
    retain: ctx.settings.retain,
    progress: showProgress(ctx),
    log: ctx.log,
    signal: ctx.signal,
  });
  if (!ctx.values.json) {
    ctx.out(`backup ${r.name} completed: ${formatBytes(r.size)} stored (${formatBytes(r.rawSize)} raw) in ${(r.durationMs / 1000).toFixed(1)}s`);
    ctx.out(`  repository ${r.repository}`);
    ctx.out(`  source     ${describeEndpoint(source)} (${r.role}), position ${formatPosition(r.replication)}`);
    for (const w of r.warnings) ctx.out(`  warning: ${w}`);
    if (r.pruned.length > 0) ctx.out(`  retention deleted: ${r.pruned.join(", ")}`);
    if (r.prunedBinlogs.length > 0) ctx.out(`  retention deleted archived binlogs: ${r.prunedBinlogs.join(", ")}`);
  }
  return r;
}

async function cmdRestore(ctx: Ctx): Promise<unknown> {
  noPositionals(ctx, "restore");
  if (ctx.values.backup && ctx.values.before) {
    throw badInput("InvalidArguments", "--backup and --before are mutually exclusive; name one backup, or a time");
  }
  const { restoreUntilCommand, untilTarget } = await pitrCli();
  const until = untilTarget(ctx.values.until, ctx.values["until-gtid"]);
  if (until && (ctx.values.backup || ctx.values.before)) {
    throw badInput("InvalidArguments", "--until/--until-gtid choose the backup themselves and do not combine with --backup or --before");
  }
  if (until && ctx.settings.replicateFrom) {
    // A slave of the master must end up at the master's present, not at a point before it.
    throw badInput("InvalidArguments", "--until/--until-gtid restore to a point in the past and do not combine with --replicate-from, which seeds a slave at the master's present; drop --until to seed a slave, or drop --replicate-from to restore to the point");
  }
  if (!until && ctx.values["dry-run"] && !ctx.settings.replicateFrom) {
    throw badInput("InvalidArguments", "restore --dry-run prints the plan of a point-in-time restore (give --until TIME or --until-gtid GTID) or of a seed (give --replicate-from URL)");
  }
  const selector: Selector = ctx.values.backup
    ? { kind: "name", name: ctx.values.backup }
    : ctx.values.before
      ? { kind: "before", time: parseTime(ctx.values.before) }
      : { kind: "latest" };
  const datadir = ctx.values.datadir ?? process.env.REPLICATOR_DATADIR;
  const target = ctx.settings.target
    ? endpointFrom(ctx.settings.target, "--target", ctx.settings.dbPassword(), process.env.REPLICATOR_DB_USER)
    : undefined;
  if (!target && !datadir) {
    throw badInput("MissingSetting", "restore needs --target URL (a running server, for logical backups) or --datadir DIR (a stopped server's data directory, for physical backups)");
  }
  const replicateFrom = ctx.settings.replicateFrom
    ? endpointFrom(ctx.settings.replicateFrom, "--replicate-from", ctx.settings.replicationPassword(), process.env.REPLICATOR_REPLICATION_USER)
    : undefined;
  let timeoutMs: number | undefined;
  if (ctx.values["replication-timeout"] !== undefined) {
    const s = Number(ctx.values["replication-timeout"]);
    if (!Number.isFinite(s) || s <= 0) throw badInput("InvalidArguments", "--replication-timeout must be a positive number of seconds");
    timeoutMs = s * 1000;
  }
  const repo = await repositoryOf(ctx);
  const [{ runRestore }, { pluginResolver }] = await Promise.all([agentRestore(), plugins()]);
  const request = {
    repo,
    resolveMethod: pluginResolver(await pluginOf(ctx)),
    target,
    datadir,
    selector,
    replicateFrom,
    force: ctx.values.force ?? false,
    skipBinlogCheck: ctx.values["skip-binlog-check"] ?? false,
    replicationTimeoutMs: timeoutMs,
    // A seed's plan (--replicate-from): the checks, and the binlog archive's bridge when the master has purged binlogs.
    dryRun: !until && (ctx.values["dry-run"] ?? false),
    methodOptions: restoreOptionsOf(ctx),
    progress: showProgress(ctx),
    log: ctx.log,
    signal: ctx.signal,
  };
  if (until) {
    const restoreBackup = (name: string, datadirReplay?: DatadirReplay): ReturnType<typeof runRestore> => runRestore({ ...request, selector: { kind: "name", name }, datadirReplay });
    return restoreUntilCommand({ repo, target, datadir, until, dryRun: ctx.values["dry-run"] ?? false, restoreBackup, json: ctx.values.json ?? false, out: ctx.out, log: ctx.log, signal: ctx.signal });
  }
  const r = await runRestore(request);
  if (!ctx.values.json && r.dryRun) {
    ctx.out(`plan: restore ${r.name} into ${r.target} (position ${formatPosition(r.replication)}), then replicate from ${r.replicatingFrom ?? "?"}`);
    const b = r.bridge;
    if (b) {
      ctx.out(`  the master has purged binlogs the backup needs (its oldest, ${b.masterOldestBinlog}, begins after GTID ${b.masterOldestStart}): first replay the archived binlogs ${b.binlogs.join(", ")} of ${b.archive}`);
      ctx.out(`  from the first transaction after GTID ${b.backupPosition} through GTID ${b.slavePos}, then replicate from gtid_slave_pos ${b.slavePos}`);
    }
    for (const w of r.warnings) ctx.out(`  warning: ${w}`);
  } else if (!ctx.values.json) {
    ctx.out(`restored ${r.name} into ${r.target}: ${formatBytes(r.rawSize)} in ${(r.durationMs / 1000).toFixed(1)}s`);
    ctx.out(`  position ${formatPosition(r.replication)}`);
    if (r.replicaConfigured) ctx.out(`  configured to replicate from ${r.replicatingFrom ?? "?"} when the server starts`);
    if (r.bridge) ctx.out(`  the master had purged binlogs the backup needs: replayed ${r.bridge.transactions ?? "?"} transaction(s) from ${r.bridge.binlogs.join(", ")} of the binlog archive, through GTID ${r.bridge.slavePos}`);
    if (r.replicating) ctx.out(`  replicating from ${r.replicatingFrom ?? "?"}; seconds behind master: ${r.secondsBehindMaster ?? "unknown"}`);
    for (const w of r.warnings) ctx.out(`  warning: ${w}`);
  }
  return r;
}

async function cmdProvision(ctx: Ctx): Promise<unknown> {
  noPositionals(ctx, "provision");
  const datadir = requireSetting(ctx.values.datadir ?? process.env.REPLICATOR_DATADIR, "--datadir", "datadir");
  const planFile = requireSetting(ctx.values["plan-file"] ?? process.env.REPLICATOR_PLAN_FILE, "--plan-file", "plan file");
  const timeoutText = ctx.values["plan-timeout"] ?? "3600";
  const timeout = Number(timeoutText);
  if (!Number.isFinite(timeout) || timeout <= 0) throw badInput("InvalidArguments", `--plan-timeout must be a positive number of seconds (got "${timeoutText}")`);
  const [{ runProvision }, { pluginResolver }] = await Promise.all([agentProvision(), plugins()]);
  const r = await runProvision({
    datadir,
    planFile,
    timeoutMs: timeout * 1000,
    masterFrom: (url) => endpointFrom(url, "the plan's master", ctx.settings.replicationPassword(), process.env.REPLICATOR_REPLICATION_USER),
    resolveMethod: pluginResolver(await pluginOf(ctx)),
    s3: ctx.settings.s3,
    log: ctx.log,
    signal: ctx.signal,
  });
  if (!ctx.values.json) {
    ctx.out(r.action === "restored" ? `provisioned ${datadir} from ${r.name ?? "?"} at ${r.position ?? "-"} in ${(r.durationMs / 1000).toFixed(1)}s` : `nothing to provision: ${r.reason ?? ""}`);
    for (const w of r.warnings) ctx.out(`  warning: ${w}`);
  }
  return r;
}

/** The plugin named by --plugin or REPLICATOR_PLUGIN, after its `info` was checked. */
async function pluginOf(ctx: Ctx): Promise<LoadedPlugin | undefined> {
  const { loadPluginCommand, pluginCommand } = await plugins();
  const cmd = pluginCommand(ctx.values.plugin);
  return cmd ? loadPluginCommand(cmd, { log: ctx.log, signal: ctx.signal }) : undefined;
}

async function cmdList(ctx: Ctx): Promise<unknown> {
  noPositionals(ctx, "list");
  const repo = await repositoryOf(ctx);
  await repo.store.check();
  const { backups, incomplete, corrupt } = await listCached(ctx, repo);
  const items = backups.map((b) => ({
    name: b.name,
    method: b.method,
    source: b.source,
    role: b.manifest.source.role,
    size: b.size,
    compression: b.manifest.compression,
    startedAt: b.manifest.startedAt,
    finishedAt: b.manifest.finishedAt,
    replication: b.manifest.replication,
  }));
  const unusable = corrupt.map((c) => ({ name: c.name, reason: c.reason, error: c.error }));
  if (ctx.values.json) return { operation: "list", repository: repo.where, backups: items, incomplete: incomplete.map((i) => i.name), unusable };
  if (items.length === 0) {
    ctx.out(`no backups in ${repo.where}`);
  } else {
    ctx.out(
      renderTable([
        ["NAME", "METHOD", "ROLE", "SIZE", "POSITION", "FINISHED"],
        ...items.map((b) => [b.name, b.method, b.role, formatBytes(b.size), formatPosition(b.replication), b.finishedAt]),
      ]),
    );
  }
  if (incomplete.length > 0) process.stderr.write(`${incomplete.length} incomplete backup(s) hidden (no manifest); \`replicator prune\` removes them after 6h\n`);
  for (const c of unusable) process.stderr.write(`warning: ${c.name} is unusable (${c.reason}): ${c.error}\n`);
  return undefined;
}

async function cmdPrune(ctx: Ctx): Promise<unknown> {
  noPositionals(ctx, "prune");
  const retain = requireSetting(ctx.settings.retain, "--retain N", "retain");
  const repo = await repositoryOf(ctx);
  await repo.store.check();
  const dryRun = ctx.values["dry-run"] ?? false;
  const { pruneWithArchive } = await pitrRetention();
  // The whole binlog archive is read first: a fault there deletes nothing at all.
  const { plan, binlogs } = await pruneWithArchive(repo, { retain, dryRun });
  if (!ctx.values.json) {
    const verb = dryRun ? "would delete" : "deleted";
    ctx.out(plan.expire.length > 0 ? `${verb} ${plan.expire.length} backup(s): ${plan.expire.join(", ")}` : `nothing to delete (keeping ${retain})`);
    if (plan.abandon.length > 0) ctx.out(`${verb} ${plan.abandon.length} incomplete backup(s): ${plan.abandon.join(", ")}`);
    if (plan.keptInUse.length > 0) ctx.out(`kept (in use by a restore): ${plan.keptInUse.join(", ")}`);
    for (const u of plan.unusable) ctx.out(`kept, not counted (unusable, ${u.reason}): ${u.name}: ${u.error}`);
    if (binlogs.deleted.length > 0) {
      ctx.out(`${verb} ${binlogs.deleted.length} archived binlog(s) before ${binlogs.plan.oldest?.name ?? "?"} (GTID ${binlogs.plan.oldest?.position ?? "?"}): ${binlogs.deleted.map((b) => `${b.serverId}/${b.file}`).join(", ")}`);
    }
    for (const h of binlogs.plan.heldBack) ctx.out(`binlog archive: ${h}`);
  }
  return {
    operation: "prune",
    retain,
    deleted: plan.expire,
    abandoned: plan.abandon,
    keptInUse: plan.keptInUse,
    unusable: plan.unusable.map((u) => ({ name: u.name, reason: u.reason, error: u.error })),
    binlogsDeleted: binlogs.deleted.map((b) => ({ serverId: b.serverId, file: b.file, lastGtid: b.lastGtid, endState: b.endState, lastEventTime: b.lastEventTime })),
    binlogsKeptFrom: binlogs.plan.oldest,
    binlogsHeldBack: binlogs.plan.heldBack,
    dryRun,
  };
}

async function cmdVerify(ctx: Ctx): Promise<unknown> {
  if (ctx.positionals.length > 1) throw badInput("InvalidArguments", "verify takes at most one backup name");
  const repo = await repositoryOf(ctx);
  await repo.store.check();
  let names: string[];
  let unusable: { name: string; reason: string; error: string }[] = [];
  if (ctx.positionals[0]) names = [ctx.positionals[0]];
  else {
    const { backups, corrupt } = await listCached(ctx, repo);
    unusable = corrupt.map((c) => ({ name: c.name, reason: c.reason, error: c.error }));
    if (backups.length === 0 && unusable.length === 0) throw badInput("NoBackup", `no complete backup in ${repo.where}; run \`replicator backup\` first`);
    names = backups.map((b) => b.name);
    if (!ctx.values.json) for (const u of unusable) ctx.out(`FAILED  ${u.name}/manifest.json: ${u.reason}: ${u.error}`);
  }
  const results = [];
  for (const n of names) {
    const r = await repo.verify(n);
    results.push(r);
    if (!ctx.values.json) {
      for (const o of r.objects) ctx.out(`${o.ok ? "ok     " : "FAILED "} ${n}/${o.name} ${formatBytes(o.size)}${o.error ? `: ${o.error}` : ""}`);
    }
  }
  const bad = [
    ...results.flatMap((r) => r.objects.filter((o) => !o.ok).map((o) => `${r.name}/${o.name}`)),
    ...unusable.map((u) => `${u.name}/manifest.json`),
  ];
  const summary = { operation: "verify", ok: bad.length === 0, backups: results, unusable };
  if (bad.length > 0) {
    if (ctx.values.json) ctx.out(JSON.stringify({ formatVersion: JSON_FORMAT_VERSION, ...summary }));
    const err = Object.assign(
      failed("VerifyFailed", `verification failed for ${boundedList(bad, 5)}: the stored objects or manifests do not match; \`replicator verify --json\` lists each one`),
      { printed: true },
    );
    throw err;
  }
  return summary;
}

async function cmdDelete(ctx: Ctx): Promise<unknown> {
  const name = ctx.positionals[0];
  if (!name || ctx.positionals.length > 1) throw badInput("InvalidArguments", "delete takes exactly one backup name; `replicator list` shows them");
  const repo = await repositoryOf(ctx);
  await repo.store.check();
  await repo.delete(name, { force: ctx.values.force ?? false });
  if (!ctx.values.json) ctx.out(`deleted ${name}`);
  return { operation: "delete", name };
}

async function cmdOffOnline(ctx: Ctx, online: boolean): Promise<unknown> {
  noPositionals(ctx, online ? "online" : "offline");
  const url = ctx.settings.target ?? ctx.settings.source;
  const target = endpointFrom(requireSetting(url, "--target", "target"), "--target", ctx.settings.dbPassword(), process.env.REPLICATOR_DB_USER);
  const [{ withConn }, { setOffline, setOnline }] = await Promise.all([dbConnection(), dbReplication()]);
  const r = await withConn(target, online ? "bring the server online" : "take the server offline", (c) => (online ? setOnline(c) : setOffline(c)));
  if (!ctx.values.json) ctx.out(`${describeEndpoint(target)} (${r.role}): ${r.action}`);
  return { operation: online ? "online" : "offline", target: describeEndpoint(target), ...r };
}

/** `200G`, `1.5T`, `500000000`: a byte count for a size hint. */
export function parseSize(text: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$/i.exec(text.trim());
  if (!m?.[1]) throw badInput("InvalidArguments", `${flag} must be a size such as 500G, 2T or a number of bytes (got "${text}")`);
  const mult = { "": 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[(m[2] ?? "").toLowerCase() as "" | "k" | "m" | "g" | "t" | "p"];
  return Math.ceil(Number(m[1]) * mult);
}

/** The commands whose result (or one-line error) is the container's termination message: Jobs, the init container, the archiver's Deployment (its gap line). */
const TERMINATION_LOGGED = new Set(["backup", "restore", "provision", "binlog-archive"]);

/** Write the result for Kubernetes' termination message (at most 4 KiB). */
function writeTerminationLog(payload: unknown): void {
  const file = process.env.REPLICATOR_TERMINATION_LOG ?? (existsSync("/dev/termination-log") ? "/dev/termination-log" : undefined);
  if (!file) return;
  let text = JSON.stringify(payload);
  if (text.length > 4000) text = JSON.stringify({ ...(payload as object), warnings: undefined, truncated: true }).slice(0, 4000);
  try {
    writeFileSync(file, text);
  } catch {
    // Not in a container, or not writable: the result still goes to stdout.
  }
}

export async function main(argv: string[]): Promise<number> {
  const out = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  let log: Logger | undefined;
  let json = false;
  let command: Command | undefined;
  try {
    const parsed = parse(argv);
    command = parsed.command;
    json = parsed.values.json ?? false;
    if (command === "help") {
      out(USAGE);
      return 0;
    }
    if (command === "version") {
      out(TOOL_VERSION);
      return 0;
    }
    if (command === "plugin-test") {
      const { pluginTest } = await import("./plugin-test.js");
      return await pluginTest({ positionals: parsed.positionals, method: parsed.values.method, json, logLevel: parsed.values["log-level"], out });
    }
    log = createLogger({ level: parsed.values["log-level"] });
    const configPath = findConfigPath(parsed.values.config, process.env, process.cwd());
    const cfg = loadConfigFile(configPath, parsed.values.config !== undefined || process.env.REPLICATOR_CONFIG !== undefined);
    const settings = resolveSettings(
      {
        cluster: parsed.values.cluster,
        repository: parsed.values.repository,
        source: parsed.values.source,
        target: parsed.values.target,
        method: parsed.values.method,
        compression: parsed.values.compression,
        retain: parsed.values.retain,
        replicateFrom: parsed.values["replicate-from"],
        s3Endpoint: parsed.values["s3-endpoint"],
        s3Region: parsed.values["s3-region"],
        passwordFile: parsed.values["password-file"],
        replicationPasswordFile: parsed.values["replication-password-file"],
      },
      cfg,
      process.env,
      configPath,
    );
    const abort = new AbortController();
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      signals++;
      if (signals > 1) process.exit(sig === "SIGINT" ? 130 : 143);
      process.stderr.write(`\n${sig}: stopping (replication on a slave source is restarted first); again to force\n`);
      abort.abort(new Error(`interrupted by ${sig}`));
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const ctx: Ctx = { values: parsed.values, positionals: parsed.positionals, settings, log, signal: abort.signal, out };
    let result: unknown;
    switch (command) {
      case "backup":
        result = await cmdBackup(ctx);
        break;
      case "restore":
        result = await cmdRestore(ctx);
        break;
      case "provision":
        result = await cmdProvision(ctx);
        break;
      case "list":
        result = await cmdList(ctx);
        break;
      case "prune":
        result = await cmdPrune(ctx);
        break;
      case "verify":
        result = await cmdVerify(ctx);
        break;
      case "delete":
        result = await cmdDelete(ctx);
        break;
      case "offline":
        result = await cmdOffOnline(ctx, false);
        break;
      case "online":
        result = await cmdOffOnline(ctx, true);
        break;
      case "binlog-archive": {
        noPositionals(ctx, "binlog-archive");
        const master = endpointFrom(requireSetting(ctx.settings.source, "--source", "source"), "--source", ctx.settings.dbPassword(), process.env.REPLICATOR_DB_USER);
        const { binlogArchiveCommand } = await pitrCli();
        result = await binlogArchiveCommand({ repo: await repositoryOf(ctx), master, once: ctx.values.once ?? false, flushInterval: ctx.values["flush-interval"], json, out, log, signal: abort.signal });
        break;
      }
    }
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    // A signal is how the long-running archiver is meant to stop (a Deployment's
    // pod ending): once it has flushed and returned, that is success.
    if (abort.signal.aborted && command !== "binlog-archive") throw badInput("Interrupted", "interrupted");
    if (json && result !== undefined) out(JSON.stringify({ ok: true, formatVersion: JSON_FORMAT_VERSION, ...(result as object) }));
    if (result !== undefined && TERMINATION_LOGGED.has(command)) writeTerminationLog({ ok: true, ...(result as object) });
    return 0;
  } catch (err) {
    const code = exitCodeFor(err);
    const message = oneLine(err);
    const reason = isReplicatorError(err) ? err.reason : "Error";
    log?.debug({ err, detail: isReplicatorError(err) ? err.detail : undefined }, "command failed");
    if (isReplicatorError(err) && err.detail) log?.error({ reason, detail: err.detail }, "failure detail");
    const printed = (err as { printed?: boolean }).printed === true;
    if (json && !printed) out(JSON.stringify({ ok: false, formatVersion: JSON_FORMAT_VERSION, reason, error: message }));
    process.stderr.write(`replicator${command && command !== "help" ? ` ${command}` : ""}: ${message}\n`);
    if (command !== undefined && TERMINATION_LOGGED.has(command)) writeTerminationLog({ ok: false, reason, error: message });
    return code;
  }
}

/** Installed as kubectl-replicator (or REPLICATOR_MODE=cluster): the cluster face. */
function isClusterMode(): boolean {
  return path.basename(process.argv[1] ?? "").startsWith("kubectl-replicator") || process.env.REPLICATOR_MODE === "cluster";
}

// Cluster mode (and client-node) is loaded only when used: it costs start-up time.
const entry = isClusterMode()
  ? import("./cluster.js").then(({ clusterMain }) => clusterMain(process.argv.slice(2), (l) => { process.stdout.write(`${l}\n`); })).catch((err: unknown) => {
      process.stderr.write(`kubectl replicator: ${oneLine(err)}\n`);
      return exitCodeFor(err);
    })
  : main(process.argv.slice(2));

// A command that ends without settling (nothing left to wait on) must not pass for a success.
failIfUnsettled(entry, isClusterMode() ? "kubectl replicator" : "replicator");
entry.then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`replicator: internal error: ${oneLine(err)}\n`);
    process.exitCode = 1;
  },
);
