// Restore of a mariabackup stream into the empty data directory of a stopped
// server: extract into <datadir>/.replicator-staging, prepare there, rename
// every entry into place (same filesystem, so nothing is copied twice), and
// read the position from the restored data.
//
// The agent's sentinel file sits at the top of the data directory for the
// whole restore; only the staging directory and the entries moved out of it
// are touched here.
import { lstat, mkdir, readdir, readFile, rename, rm, rmdir } from "node:fs/promises";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { failed, isReplicatorError } from "../../lib/errors.js";
import type { Manifest, ReplicationPosition } from "../../storage/catalog.js";
import { extractFlushing, syncDurable, syncFileSystem } from "../../lib/durable.js";
import type { DatadirRestoreContext, DatadirRestoreOutcome, PipedLoader } from "../contract.js";
import { isReplicationStateFile, isStreamReadError, lastErrorLine, parseBinlogInfo, parseSlaveInfo, type MariabackupOptions } from "./parse.js";
import { runTool, type Tool } from "./proc.js";

export const STAGING_DIR = ".replicator-staging";
const CHECKPOINTS = ["mariadb_backup_checkpoints", "xtrabackup_checkpoints"];
const BINLOG_INFO = ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"];
const SLAVE_INFO = ["mariadb_backup_slave_info", "xtrabackup_slave_info"];

/** Read a file, or undefined when it is not there. */
export async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

async function readFirst(dir: string, names: string[]): Promise<{ name: string; text: string } | undefined> {
  for (const name of names) {
    const text = await readOptional(path.join(dir, name));
    if (text !== undefined) return { name, text };
  }
  return undefined;
}

async function exists(p: string): Promise<boolean> {
  return lstat(p).then(() => true, (err: unknown) => {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  });
}

/** Wait until `w` takes more data; false when it closed or failed instead. */
function writable(w: Writable): Promise<boolean> {
  // Gone already: no event will come. (A child's stdin is destroyed, without an error, when the child exits.)
  if (w.destroyed || w.writableEnded) return Promise.resolve(false);
  return new Promise((resolve) => {
    const settle = (ok: boolean): void => {
      w.off("drain", onDrain);
      w.off("close", onGone);
      w.off("error", onGone);
      resolve(ok);
    };
    const onDrain = (): void => { settle(true); };
    const onGone = (): void => { settle(false); };
    w.on("drain", onDrain);
    w.on("close", onGone);
    w.on("error", onGone);
  });
}

/**
 * Feed the verified input to mbstream. If mbstream gives up on the stream
 * (a corrupt or truncated chunk), keep reading the input to its end: the
 * agent checks size and sha256 at the end, and "the stored object is corrupt"
 * is the better answer than mbstream's complaint about garbage. The same when
 * mbstream exits 0 before the end (a damaged byte can read as the stream's
 * end): the rest is read so that the check has its say, and the early exit is
 * reported (`stoppedEarly`) even when the check passes, since what mbstream
 * extracted is then not the whole backup.
 */
export async function feedMbstream(input: Readable, child: Tool): Promise<{ stoppedEarly: boolean }> {
  const stdin = child.stdin as Writable;
  let broken = false;
  stdin.on("error", () => { broken = true; });
  let keepDraining: boolean | undefined;
  for await (const chunk of input as AsyncIterable<Buffer>) {
    // A write into a destroyed stdin (mbstream exited) is lost without an "error": it counts as broken too.
    if (!broken && stdin.destroyed) broken = true;
    if (!broken) {
      if (!stdin.write(chunk) && !(await writable(stdin))) broken = true;
      if (!stdin.writable) broken = true;
    }
    if (broken) {
      keepDraining ??= await child.done.then(
        () => true,
        () => isStreamReadError(lastErrorLine(child.tail())),
      );
      if (!keepDraining) break;
    }
  }
  if (!broken) stdin.end();
  return { stoppedEarly: broken && (await child.done.then(() => true, () => false)) };
}

function startMbstream(ctx: DatadirRestoreContext, opts: MariabackupOptions, staging: string): Tool {
  return runTool(opts.mbstreamCommand, ["-x", "-C", staging, ...(opts.parallel ? [`--parallel=${opts.parallel}`] : [])], {
    what: "extract the backup stream",
    stdin: "pipe",
    stdout: "ignore",
    signal: ctx.signal,
  });
}

async function extract(ctx: DatadirRestoreContext, input: Readable, opts: MariabackupOptions, staging: string): Promise<void> {
  const child = startMbstream(ctx, opts, staging);
  let fed: { stoppedEarly: boolean };
  try {
    fed = await feedMbstream(input, child);
  } catch (err) {
    // The input failed (a corrupt object, storage gone): that is the answer.
    child.kill();
    await child.done.catch(() => undefined);
    throw err;
  }
  await extracted(ctx, child);
  if (fed.stoppedEarly) {
    throw failed(
      "CorruptBackup",
      `backup ${ctx.manifest.name} is not a valid mariabackup stream: mbstream took it as ended before its last byte; it matched its manifest's checksum, so it was written damaged`,
    );
  }
}

/** mbstream's exit: a stream it cannot read, which matched its checksum, was written damaged. */
async function extracted(ctx: DatadirRestoreContext, child: Tool): Promise<void> {
  try {
    await child.done;
  } catch (err) {
    const line = lastErrorLine(child.tail());
    if (isReplicatorError(err) && err.reason === "CommandFailed" && isStreamReadError(line)) {
      throw failed(
        "CorruptBackup",
        `backup ${ctx.manifest.name} is not a valid mariabackup stream (mbstream: ${line}); it matched its manifest's checksum, so it was written damaged`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** The position recorded in the restored data itself, in the terms the manifest uses. */
export function positionFromInfo(
  manifest: Manifest,
  binlogInfo: string | undefined,
  slaveInfo: string | undefined,
  warnings: string[],
): ReplicationPosition | undefined {
  const recorded = manifest.replication;
  if (manifest.source.role === "slave") {
    if (slaveInfo === undefined) return undefined;
    const s = parseSlaveInfo(slaveInfo);
    if (!s.coordinates) {
      warnings.push("the backup's slave info holds no position for the default replication connection; the manifest's position is used");
      return undefined;
    }
    const pos: ReplicationPosition = { role: "slave", ...s.coordinates };
    if (recorded?.masterHost) pos.masterHost = recorded.masterHost;
    if (recorded?.masterPort) pos.masterPort = recorded.masterPort;
    if (recorded?.sourceServerId) pos.sourceServerId = recorded.sourceServerId;
    return pos;
  }
  if (binlogInfo === undefined) return undefined;
  const b = parseBinlogInfo(binlogInfo);
  if (!b) return undefined;
  const pos: ReplicationPosition = { role: "master", file: b.file, position: b.position };
  if (b.gtid) pos.gtid = b.gtid;
  else if (recorded?.gtid && recorded.file === b.file && recorded.position === b.position) pos.gtid = recorded.gtid;
  const serverId = recorded?.sourceServerId ?? manifest.source.serverId;
  if (serverId !== undefined) pos.sourceServerId = serverId;
  return pos;
}

async function makeStaging(ctx: DatadirRestoreContext): Promise<string> {
  const staging = path.join(ctx.datadir, STAGING_DIR);
  await rm(staging, { recursive: true, force: true });
  await mkdir(staging, { mode: 0o700 });
  return staging;
}

export async function restoreStream(ctx: DatadirRestoreContext, input: Readable, opts: MariabackupOptions): Promise<DatadirRestoreOutcome> {
  const staging = await makeStaging(ctx);
  await extractFlushing(ctx, staging, extract(ctx, input, opts, staging));
  return finishRestore(ctx, opts, staging);
}

/**
 * The piped restore: mbstream reads an OS pipe that the agent's zstd writes into (no byte of the
 * stream passes through the agent); `loader.done` settles when it has extracted everything, and
 * `finish()` then prepares the data and moves it into place.
 */
export async function startPipedRestore(ctx: DatadirRestoreContext, opts: MariabackupOptions): Promise<{ loader: PipedLoader; finish(): Promise<DatadirRestoreOutcome> }> {
  const staging = await makeStaging(ctx);
  const child = startMbstream(ctx, opts, staging);
  if (!child.stdin) {
    await child.done;
    throw new Error(`${opts.mbstreamCommand} started without a stdin`);
  }
  // The loader is done when mbstream has exited and the background flush has stopped.
  const done = extractFlushing(ctx, staging, extracted(ctx, child));
  done.catch(() => undefined);
  return {
    loader: { stdin: child.stdin, done, kill: () => { child.kill(); } },
    finish: () => finishRestore(ctx, opts, staging),
  };
}

async function finishRestore(ctx: DatadirRestoreContext, opts: MariabackupOptions, staging: string): Promise<DatadirRestoreOutcome> {
  const warnings: string[] = [];
  if (!(await readFirst(staging, CHECKPOINTS))) {
    throw failed(
      "CorruptBackup",
      `backup ${ctx.manifest.name} holds no mariabackup data (the stream has no ${CHECKPOINTS.join(" or ")}); it is not a complete mariabackup backup`,
    );
  }
  ctx.log.info({ staging }, "backup extracted; preparing");
  // What the extraction left unwritten goes to disk beside prepare (which reads those pages from
  // the page cache and works mostly in memory), not after it.
  const flushing = syncFileSystem(ctx, staging).catch(() => false);

  // --prepare reads the InnoDB layout of the source from backup-my.cnf, and nothing else.
  const cnf = path.join(staging, "backup-my.cnf");
  const prepare = runTool(
    opts.mariabackupCommand,
    [
      (await exists(cnf)) ? `--defaults-file=${cnf}` : "--no-defaults",
      "--prepare",
      `--target-dir=${staging}`,
      ...(opts.useMemory ? [`--use-memory=${opts.useMemory}`] : []),
    ],
    { what: "prepare the restored data", stdout: "ignore", signal: ctx.signal },
  );
  try {
    await prepare.done;
  } finally {
    await flushing;
  }

  const replication = positionFromInfo(
    ctx.manifest,
    (await readFirst(staging, BINLOG_INFO))?.text,
    (await readFirst(staging, SLAVE_INFO))?.text,
    warnings,
  );

  // The source's replication state is not the new server's (mariabackup
  // 10.11 never streams it; a stream from elsewhere might).
  const names = await readdir(staging);
  const dropped = names.filter(isReplicationStateFile);
  for (const n of dropped) await rm(path.join(staging, n), { recursive: true, force: true });
  if (dropped.length > 0) warnings.push(`left out the source's replication state files: ${dropped.join(", ")}`);

  for (const n of names.filter((x) => !dropped.includes(x))) {
    const to = path.join(ctx.datadir, n);
    if (await exists(to)) throw failed("RestoreFailed", `cannot move ${n} into ${ctx.datadir}: something is already there`);
    await rename(path.join(staging, n), to);
  }
  await rmdir(staging);
  await syncDurable(ctx, ctx.datadir);
  return { replication, warnings };
}
