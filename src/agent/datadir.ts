// A physical restore into the data directory of a stopped server.
//
// The directory must be empty (a lost+found from a fresh filesystem is
// fine). While the restore works, a sentinel file sits at the top of the
// directory; a directory that holds it is an interrupted restore, and is
// wiped and redone. The sentinel is removed last, after the method has
// prepared the data and written the replica configuration, so a server
// container that checks for it never starts on half-restored data.
import { constants } from "node:fs";
import { lchown, lstat, mkdir, open, readdir, rm, stat, statfs } from "node:fs/promises";
import path from "node:path";
import { badInput } from "../lib/errors.js";
import { describeEndpoint } from "../db/endpoint.js";
import type { BackupMethod, DatadirRestoreOutcome } from "../plugins/contract.js";
import type { BackupEntry } from "../storage/catalog.js";
import { formatBytes } from "../storage/catalog.js";
import { loadPiped, loadVerified, openBackupInput, partialTarget, type RestoreRequest, type RestoreResult } from "./restore.js";
import { zstdToolAvailable } from "./compression.js";
import { startProgress } from "./progress.js";

export const DATADIR_SENTINEL = ".replicator-restore-in-progress";
const IGNORED = new Set(["lost+found"]);

export interface DatadirState {
  exists: boolean;
  /** An interrupted restore left its sentinel here. */
  redo: boolean;
  /** Entries that make the directory non-empty (sentinel and lost+found aside). */
  entries: string[];
}

export async function inspectDatadir(dir: string): Promise<DatadirState> {
  let names: string[];
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw badInput("DatadirNotDirectory", `--datadir ${dir} is not a directory`);
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { exists: false, redo: false, entries: [] };
    throw err;
  }
  return {
    exists: true,
    redo: names.includes(DATADIR_SENTINEL),
    entries: names.filter((n) => n !== DATADIR_SENTINEL && !IGNORED.has(n)).sort(),
  };
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeSentinel(dir: string, backup: string): Promise<void> {
  const fh = await open(path.join(dir, DATADIR_SENTINEL), "w", 0o600);
  try {
    await fh.writeFile(`restoring ${backup} since ${new Date().toISOString()}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fsyncDir(dir);
}

/** chown -R without following links. */
async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  await lchown(dir, uid, gid);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) await chownTree(p, uid, gid);
    else await lchown(p, uid, gid);
  }
}

/**
 * Checked before the sentinel is written: the filesystem must hold the
 * backup's raw size (what the method extracts; prepare works in place).
 */
async function requireSpace(dir: string, chosen: BackupEntry): Promise<void> {
  const need = chosen.manifest.objects.reduce((n, o) => n + (o.rawSize ?? o.size), 0);
  const fs = await statfs(dir);
  const free = fs.bavail * fs.bsize;
  if (free < need) {
    throw badInput(
      "NoSpace",
      `data directory ${dir} has ${formatBytes(free)} free but backup ${chosen.name} needs ${formatBytes(need)} unpacked; grow the volume or free space, then run the restore again`,
    );
  }
}

export async function restoreDatadir(
  req: RestoreRequest & { datadir: string; method: BackupMethod; chosen: BackupEntry },
): Promise<RestoreResult> {
  const { method, chosen, datadir } = req;
  if (method.restoreInto !== "datadir") throw new Error("unreachable");
  const t0 = Date.now();
  const warnings: string[] = [];
  const manifest = chosen.manifest;
  const dir = path.resolve(datadir);
  const log = req.log.child({ backup: chosen.name, datadir: dir });

  const replay = req.datadirReplay;
  const withServer = method.withTemporaryServer?.bind(method);
  if (replay && !withServer) {
    throw badInput("NotSupported", `backup ${chosen.name} (${method.name}): its method runs no temporary server on a restored data directory, so archived binlogs cannot be replayed into it`);
  }
  // Before anything is written: the temporary server (replay, replica configuration) can run here.
  if (replay || req.replicateFrom) await method.checkTemporaryServer?.(req.methodOptions ?? {}, req.signal);
  const state = await inspectDatadir(dir);
  if (state.redo) {
    warnings.push("the data directory holds an unfinished restore (its sentinel was found); it was wiped and the restore redone");
    for (const e of state.entries) await rm(path.join(dir, e), { recursive: true, force: true });
  } else if (state.entries.length > 0) {
    const shown = state.entries.slice(0, 5).join(", ") + (state.entries.length > 5 ? ", ..." : "");
    throw badInput(
      "DatadirNotEmpty",
      `data directory ${dir} is not empty (${state.entries.length} entries: ${shown}); a physical restore needs the empty data directory of a stopped server`,
    );
  }
  if (!state.exists) await mkdir(dir, { recursive: true, mode: 0o750 });
  await requireSpace(dir, chosen);
  // Run as root (an init container without runAsUser, a DBA with sudo), the
  // files would be root's and the server could not open them: they go to
  // whoever owns the data directory.
  const owner = await lstat(dir);
  const chownTo = process.getuid?.() === 0 && owner.uid !== 0 ? { uid: owner.uid, gid: owner.gid } : undefined;
  await writeSentinel(dir, chosen.name);

  log.info({ object: manifest.objects[0]?.name, size: manifest.objects[0]?.size }, "restore started");
  const ctx = { datadir: dir, manifest, options: req.methodOptions ?? {}, log, signal: req.signal };
  // Piped when the method can (the zstd tool writes into its extractor), else through the agent.
  const startRestore = manifest.compression === "zstd" && method.startRestore && (await zstdToolAvailable(log)) ? method.startRestore.bind(method) : undefined;
  let outcome;
  let rawSize: number;
  try {
    if (startRestore) {
      let finish: (() => Promise<DatadirRestoreOutcome>) | undefined;
      rawSize = await loadPiped(req.repo, chosen, async (c: typeof ctx) => {
        const r = await startRestore(c);
        finish = () => r.finish();
        return r.loader;
      }, ctx, req.progress === true);
      if (!finish) throw new Error("unreachable: a piped restore that loaded has its finish step");
      outcome = await finish();
    } else {
      const v = await openBackupInput(req.repo, chosen);
      const stopProgress = req.progress ? startProgress(`restore ${chosen.name}`, () => v.counter.bytes) : () => undefined;
      try {
        outcome = await loadVerified(v, (input) => method.restore(ctx, input), chosen.name);
      } finally {
        stopProgress();
      }
      rawSize = v.counter.bytes;
    }
  } catch (err) {
    throw partialTarget(err, `data directory ${dir}`, "its sentinel marks it: run the same restore again (it wipes the directory and redoes it), and do not start the server on it");
  }
  warnings.push(...outcome.warnings);
  let position = outcome.replication ?? manifest.replication;
  log.info({ rawSize, position, piped: startRestore !== undefined }, "data directory prepared");
  if (replay && withServer) {
    const from = position;
    try {
      position = await withServer({ datadir: dir, purpose: "to replay the archived binlogs", options: req.methodOptions ?? {}, log, signal: req.signal }, (server) => replay(server, from));
    } catch (err) {
      throw partialTarget(err, `data directory ${dir}`, `it holds backup ${chosen.name} and possibly part of the replay; its sentinel marks it: do not start a server on it; run the same restore again (it wipes the directory and redoes it)`);
    }
    log.info({ position }, "archived binlogs replayed");
  }

  const replicateFrom = req.replicateFrom;
  if (replicateFrom) {
    if (!position) throw badInput("NoPosition", `backup ${chosen.name} holds no replication position; it cannot seed a replica`);
    await method.configureReplica({ datadir: dir, manifest, position, replicateFrom, options: req.methodOptions ?? {}, log, signal: req.signal });
    log.info({ master: describeEndpoint(replicateFrom) }, "replica configured; it replicates when the server starts");
  }
  // What the method and its replica configuration wrote as root goes to the directory's owner, once.
  if (chownTo) await chownTree(dir, chownTo.uid, chownTo.gid);
  await rm(path.join(dir, DATADIR_SENTINEL), { force: true });
  await fsyncDir(dir);
  const result: RestoreResult = {
    operation: "restore",
    name: chosen.name,
    repository: req.repo.where,
    method: manifest.method,
    target: dir,
    rawSize,
    replication: position,
    replicating: false,
    replicaConfigured: replicateFrom !== undefined,
    durationMs: Date.now() - t0,
    warnings,
  };
  if (replicateFrom) result.replicatingFrom = describeEndpoint(replicateFrom);
  return result;
}
