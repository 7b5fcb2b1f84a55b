// The `pg_basebackup` method: a physical copy of a whole PostgreSQL cluster.
//
// What a backup holds: the data directory of the source (every database,
// roles, configuration files that live in it: postgresql.conf,
// postgresql.auto.conf, pg_hba.conf), as one tar, with the WAL needed to
// make it consistent fetched into it (-X fetch), plus the backup_manifest
// pg_basebackup injects. Not included: extra tablespaces (a backup to a
// stream can hold one tablespace only; such a source is refused), files the
// server excludes (postmaster.pid, temp files, pg_replslot contents).
//
// Consistency: a checkpoint (--checkpoint=fast) starts the backup; the
// files are copied while the server runs; the WAL from the start to the end
// point, fetched at the end, makes the copy consistent when it is replayed.
// The source must keep that WAL until the end of the backup (wal_keep_size
// large enough for the backup's duration, or a WAL archive): WAL streaming
// (-X stream) cannot be combined with a tar on stdout.
//
// The user needs the REPLICATION attribute (or superuser) and a pg_hba.conf
// `host replication` line. The position recorded is the WAL end point and
// its timeline (see position.ts).
//
// Backup and restore go through the zstd tool when the agent has it, as
// `pg_basebackup ... | zstd` and `zstd -dc | tar -x` in a shell:
// pg_basebackup writes into an OS pipe to zstd (backupPiped), and zstd -d
// writes into an OS pipe to tar (startRestore); the agent sees only the
// compressed bytes (sha256, upload, download). Older backups, written by the
// agent's in-process zstd, are plain zstd frames the tool reads too.
//
// Restore: the tar is extracted into the empty data directory of a stopped
// server (system tar), which is made 0700; files take the data directory's
// owner when the restore runs as root. `--replicate-from` then writes
// standby.signal and primary_conninfo (with the replication user's password:
// postgresql.auto.conf is 0600, inside the 0700 data directory, as
// pg_basebackup -R does it) so that the server starts as a streaming standby.
import { hostname } from "node:os";
import { appendFile, chmod, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { badInput, failed, isReplicatorError } from "../../lib/errors.js";
import { spawnTool, type ToolChild } from "../../lib/exec.js";
import { extractFlushing, syncDurable } from "../../lib/durable.js";
import { feedChild, outputOf } from "../../lib/child-streams.js";
import { settleOutcome, undoOnFailure, type CleanupStack } from "../../lib/cleanup.js";
import { buildConninfo, confLine } from "../../db/postgres/conninfo.js";
import { mapChildError, pgEnv, pgQuery, serverFacts } from "../../db/postgres/client.js";
import { betterLoaderError, PG_TOOLS_HINT, pgToolErrorLine } from "../../db/postgres/stream.js";
import { describeEndpoint } from "../../db/endpoint.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import type {
  BackupContext,
  BackupMethod,
  BackupOutcome,
  DatadirRestoreContext,
  DatadirRestoreOutcome,
  PipedLoader,
  PipedSink,
  SeedContext,
} from "../contract.js";
import { streamedOrPiped } from "../piped.js";
import { parseBackupLabel, parseBasebackupStderr, parseManifestWalRange } from "./position.js";

export interface PgBasebackupOptions {
  command: string;
  /** application_name the standby reports to its primary (default: this host's name). */
  applicationName: string | undefined;
  /** A replication slot on the primary for the standby (primary_slot_name); it must exist. */
  primarySlotName: string | undefined;
}

const MYSQL_ONLY = ["databases", "lock", "users"];

export function parsePgBasebackupOptions(o: Record<string, unknown>): PgBasebackupOptions {
  for (const k of MYSQL_ONLY) {
    if (o[k] !== undefined && o[k] !== false) {
      throw badInput("InvalidOption", `option ${k} does not apply to pg_basebackup: it copies the whole cluster (every database and role) at a consistent point`);
    }
  }
  const str = (k: string): string | undefined => {
    const v = o[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v === "") throw badInput("InvalidOption", `${k} must be a non-empty string`);
    return v;
  };
  const slot = str("primarySlotName");
  if (slot !== undefined && !/^[a-z0-9_]{1,63}$/.test(slot)) {
    throw badInput("InvalidOption", `primarySlotName "${slot}" is not a replication slot name (lower-case letters, digits and _)`);
  }
  return { command: str("command") ?? "pg_basebackup", applicationName: str("applicationName"), primarySlotName: slot };
}

/** Pure: the pg_basebackup arguments (where to connect and the password are in the environment). */
export function buildBasebackupArgs(): string[] {
  return ["-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast", "-v", "--no-password", "--label=replicator"];
}

/** Pure: what configureReplica appends to postgresql.auto.conf. */
export function standbySettings(opts: {
  host: string;
  port: number;
  user: string;
  password: string | undefined;
  applicationName: string;
  primarySlotName?: string | undefined;
  comment: string;
}): string {
  const conninfo = buildConninfo([
    ["host", opts.host],
    ["port", opts.port],
    ["user", opts.user],
    ["password", opts.password],
    ["application_name", opts.applicationName],
  ]);
  const lines = [
    `# ${opts.comment.replace(/[\r\n]+/g, " ")}`,
    confLine("primary_conninfo", conninfo),
    confLine("recovery_target_timeline", "latest"),
  ];
  if (opts.primarySlotName) lines.push(confLine("primary_slot_name", opts.primarySlotName));
  return `${lines.join("\n")}\n`;
}

/** application_name: letters, digits, - and _ survive everywhere (pg_stat_replication, synchronous_standby_names). */
function defaultApplicationName(): string {
  return hostname().toLowerCase().replace(/[^a-z0-9_-]+/g, "_").slice(0, 63) || "replicator";
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(() => true, () => false);
}

/** tar's own failure, with the line that says what went wrong; a cut-short archive is a corrupt backup. */
export function tarError(err: unknown, backup: string): unknown {
  if (!isReplicatorError(err) || err.reason !== "CommandFailed" || !err.detail) return err;
  if (/Unexpected EOF/.test(err.detail)) {
    return failed("CorruptBackup", `backup ${backup}: the archive ends early (tar: Unexpected EOF in archive); the stored backup is incomplete`, { cause: err });
  }
  const line = err.detail
    .split("\n")
    .map((l) => l.trim())
    .find((l) => l && !/not recoverable|Exiting with failure status/.test(l));
  return line ? failed("CommandFailed", `tar failed to extract the base backup: ${line}`, { detail: err.detail, cause: err }) : err;
}

/**
 * One backup. Without a sink pg_basebackup's stdout comes back as a stream; with one,
 * pg_basebackup writes straight into it (an OS pipe into the agent's zstd).
 */
async function startBackup(ctx: BackupContext, sink: PipedSink | undefined): Promise<{ stream: Readable | undefined; outcome: Promise<BackupOutcome> }> {
  const opts = parsePgBasebackupOptions(ctx.options);
  const source = ctx.source;
  const facts = await serverFacts(source, "connect to the source");
  const role: BackupOutcome["role"] = facts.inRecovery ? "slave" : "master";
  const spaces = await pgQuery(source, "SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1", {
    what: "list the source's tablespaces",
  });
  if (spaces.length > 0) {
    throw badInput(
      "UnsupportedLayout",
      `source ${describeEndpoint(source)} has tablespaces outside the data directory (${spaces.map((r) => r[0] ?? "").join(", ")}); pg_basebackup can write only one tablespace to a stream, so this method cannot back it up`,
    );
  }
  const pg = await pgEnv(source);
  const cleanup: CleanupStack = [() => pg.cleanup()];
  return undoOnFailure(cleanup, () => {
    const args = buildBasebackupArgs();
    ctx.log.info({ command: opts.command, args, role, version: facts.version }, "base backup started");
    // pg_basebackup -v reports the backup's WAL positions on stderr (a few lines).
    const stderrLines: string[] = [];
    const child = spawnTool(opts.command, args, {
      env: pg.env,
      signal: ctx.signal,
      stdout: sink ? sink.stdout : "pipe",
      what: "back up the source",
      onLine: (line) => stderrLines.push(line),
      summarize: pgToolErrorLine,
      notFoundHint: PG_TOOLS_HINT,
    });
    const mapError = (err: unknown): unknown => mapChildError(err, source, "back up the source");
    // Piped: the agent never commits a run whose outcome failed. Streamed: a failed copy must not
    // look like a complete stream, so the upload fails too.
    const output = sink ? undefined : outputOf(child, mapError);
    const outcome = settleOutcome(cleanup, async (): Promise<BackupOutcome> => {
      await (output?.done ??
        child.done.catch((err: unknown) => {
          throw mapError(err);
        }));
      const p = parseBasebackupStderr(stderrLines.join("\n"));
      const warnings: string[] = [];
      let replication: ReplicationPosition | undefined;
      const lsn = p.endLsn ?? p.startLsn;
      if (lsn) {
        replication = { role, lsn, ...(p.timeline !== undefined ? { timeline: p.timeline } : {}) };
        if (!p.endLsn) warnings.push("pg_basebackup reported no WAL end point; the start point is recorded instead");
      } else {
        warnings.push("pg_basebackup reported no WAL position; the backup cannot seed a standby");
      }
      return {
        role,
        serverId: 0,
        version: facts.version,
        replication,
        details: { format: "tar", walMethod: "fetch", startLsn: p.startLsn, endLsn: p.endLsn, timeline: p.timeline },
        warnings,
      };
    });
    return { stream: output?.stream, outcome };
  });
}

/** tar, extracting the archive on its stdin into the (empty) data directory. */
function startTar(ctx: DatadirRestoreContext): ToolChild {
  // -p: the modes pg_basebackup recorded (0600/0700); --no-same-owner: the
  // files belong to whoever restores (the server's user, in an init container).
  // --ignore-zeros: tar reads its input to the end instead of stopping at the
  // first zero block, so the decompressor always reaches the end of its frame
  // (and its checksum): bytes a damaged frame decoded into garbage, in which
  // tar found a zero block of some relation file, are reported by zstd as a
  // corrupt object, not by tar as a failed extract (or by nobody).
  return spawnTool("tar", ["-x", "-p", "--no-same-owner", "--ignore-zeros", "-f", "-", "-C", ctx.datadir], {
    stdin: "pipe",
    stdout: "ignore",
    signal: ctx.signal,
    what: "extract the base backup",
  });
}

/** After tar extracted the whole archive: check it is a complete base backup, and read its position. */
async function finishRestore(ctx: DatadirRestoreContext): Promise<DatadirRestoreOutcome> {
  const dir = ctx.datadir;
  for (const f of ["PG_VERSION", "global/pg_control", "backup_label"]) {
    if (!(await exists(path.join(dir, f)))) {
      throw failed("CorruptBackup", `backup ${ctx.manifest.name} is not a PostgreSQL base backup: ${f} is missing after extraction`);
    }
  }
  // pg_basebackup (13+) writes the backup_manifest as the archive's last
  // member: without it, the archive was cut short at a member boundary
  // (which tar itself does not notice) and the WAL is missing.
  const major = Number((await readFile(path.join(dir, "PG_VERSION"), "utf8")).trim());
  if (major >= 13 && !(await exists(path.join(dir, "backup_manifest")))) {
    throw failed("CorruptBackup", `backup ${ctx.manifest.name} ends early: its last member, backup_manifest, is missing; the stored backup is incomplete`);
  }
  // (Run as root, the agent gives the files to the directory's owner when the restore is done.)
  await chmod(dir, 0o700);

  const warnings: string[] = [];
  const label = parseBackupLabel(await readFile(path.join(dir, "backup_label"), "utf8"));
  const manifestPath = path.join(dir, "backup_manifest");
  const range = (await exists(manifestPath)) ? parseManifestWalRange(await readFile(manifestPath, "utf8")) : undefined;
  const role = ctx.manifest.replication?.role ?? (label.backupFrom === "standby" ? "slave" : "master");
  let replication: ReplicationPosition | undefined;
  if (range) replication = { role, lsn: range.endLsn, timeline: range.timeline };
  else if (label.startLsn) replication = { role, lsn: label.startLsn, ...(label.startTimeline !== undefined ? { timeline: label.startTimeline } : {}) };
  const recorded = ctx.manifest.replication;
  if (replication && recorded?.lsn && recorded.lsn !== replication.lsn) {
    warnings.push(`the restored data ends at ${replication.lsn} but the manifest recorded ${recorded.lsn}; the data's position is used`);
  }
  // A backup of a standby holds its standby.signal. A restore makes a
  // server of its own (as a logical restore does); configureReplica writes
  // the signal again when --replicate-from asks for a standby.
  if (await exists(path.join(dir, "standby.signal"))) {
    await rm(path.join(dir, "standby.signal"));
    warnings.push("the backup was taken from a standby: its standby.signal was removed, so the server starts as a primary of its own (use --replicate-from for a standby)");
  }
  // Every restored file on disk before the agent removes the sentinel (as pg_basebackup -D
  // itself syncs, unless --no-sync): most of it was written back while tar extracted.
  await syncDurable(ctx, dir);
  ctx.log.info({ pgVersion: major, position: replication, backupFrom: label.backupFrom }, "base backup extracted");
  return { replication, warnings };
}

export const pgBasebackupMethod: BackupMethod = {
  name: "pg_basebackup",
  kind: "physical",
  engine: "postgresql",
  restoreInto: "datadir",
  extension: "tar",

  validateOptions(options) {
    parsePgBasebackupOptions(options);
  },

  /** pg_basebackup writes its tar straight into the agent's zstd (an OS pipe): no byte of the copy passes through the agent. */
  ...streamedOrPiped(startBackup),

  async restore(ctx: DatadirRestoreContext, input: Readable): Promise<DatadirRestoreOutcome> {
    parsePgBasebackupOptions(ctx.options);
    const tar = startTar(ctx);
    const extraction = feedChild(tar, input, betterLoaderError).catch((err: unknown) => {
      throw tarError(err, ctx.manifest.name);
    });
    await extractFlushing(ctx, ctx.datadir, extraction);
    return finishRestore(ctx);
  },

  /**
   * The piped restore: tar reads an OS pipe that the agent's zstd writes into (no byte of the
   * archive passes through the agent); `loader.done` settles when tar has extracted it, and
   * `finish()` then checks what was extracted and reads the position.
   */
  async startRestore(ctx: DatadirRestoreContext): Promise<{ loader: PipedLoader; finish(): Promise<DatadirRestoreOutcome> }> {
    parsePgBasebackupOptions(ctx.options);
    const tar = startTar(ctx);
    if (!tar.stdin) {
      await tar.done;
      throw new Error("tar started without a stdin");
    }
    const extraction = tar.done.catch((err: unknown) => {
      throw tarError(betterLoaderError(err), ctx.manifest.name);
    });
    // The loader is done when tar has exited and the background flush has stopped.
    const done = extractFlushing(ctx, ctx.datadir, extraction);
    done.catch(() => undefined);
    return {
      loader: { stdin: tar.stdin, done, kill: () => { tar.kill(); } },
      finish: () => finishRestore(ctx),
    };
  },

  async configureReplica(ctx: SeedContext): Promise<void> {
    const opts = parsePgBasebackupOptions(ctx.options);
    if (!ctx.manifest.replication?.lsn) {
      throw badInput("NoPosition", `backup ${ctx.manifest.name} recorded no WAL position; it cannot seed a standby`);
    }
    const primary = ctx.replicateFrom;
    const conf = path.join(ctx.datadir, "postgresql.auto.conf");
    const signal = path.join(ctx.datadir, "standby.signal");
    const settings = standbySettings({
      host: primary.socket ?? primary.host,
      port: primary.port,
      user: primary.user,
      password: primary.password,
      applicationName: opts.applicationName ?? defaultApplicationName(),
      primarySlotName: opts.primarySlotName,
      comment: `replicator: a standby of ${describeEndpoint(primary)}, restored from ${ctx.manifest.name} (WAL ${ctx.position.lsn ?? "?"})`,
    });
    // Later lines win over earlier ones, so the source's own settings (if it
    // was a standby itself) are overridden.
    await appendFile(conf, `\n${settings}`, { mode: 0o600 });
    await chmod(conf, 0o600);
    await writeFile(signal, "", { mode: 0o600 });
    ctx.log.info({ primary: describeEndpoint(primary), applicationName: opts.applicationName ?? defaultApplicationName() }, "standby.signal and primary_conninfo written");
  },
};
