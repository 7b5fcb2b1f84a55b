// One backup: method stream → compression → sha256 → storage, then the
// manifest (the commit point), then retention. Nothing is staged locally.
import { createHash } from "node:crypto";
import { Transform } from "node:stream";
import { badInput } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import type { Endpoint } from "../db/endpoint.js";
import type { BackupMethod } from "../plugins/contract.js";
import { getMethod } from "../plugins/registry.js";
import {
  FORMAT_VERSION,
  buildBackupName,
  type Compression,
  type Manifest,
  type ReplicationPosition,
  type RetentionPlan,
} from "../storage/catalog.js";
import type { Repository } from "../storage/repository.js";
import { compressionExtension, createCompressor } from "./compression.js";
import { ByteCounter, startProgress } from "./progress.js";
import { TOOL_NAME, TOOL_VERSION } from "./version.js";

export interface BackupRequest {
  repo: Repository;
  source: Endpoint;
  /** The name that goes into the backup name; defaults to the source host. */
  sourceName?: string | undefined;
  method: string;
  methodOptions: Record<string, unknown>;
  compression: Compression;
  /** Apply retention after a successful backup. */
  retain?: number | undefined;
  progress?: boolean;
  log: Logger;
  signal: AbortSignal;
  now?: () => Date;
  /** Resolve a method by name (the conformance kit passes third-party plugins here). */
  resolveMethod?: (name: string) => BackupMethod;
}

export interface BackupResult {
  operation: "backup";
  name: string;
  repository: string;
  method: string;
  role: string;
  size: number;
  rawSize: number;
  sha256: string;
  replication: ReplicationPosition | undefined;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  warnings: string[];
  pruned: string[];
}

export async function runBackup(req: BackupRequest): Promise<BackupResult> {
  const now = req.now ?? (() => new Date());
  const method = (req.resolveMethod ?? getMethod)(req.method);
  if (req.source.engine !== method.engine) {
    throw badInput("EngineMismatch", `method ${method.name} backs up ${method.engine} servers but --source is a ${req.source.engine} server`);
  }
  method.validateOptions(req.methodOptions);
  if (req.retain !== undefined && (!Number.isInteger(req.retain) || req.retain < 1)) {
    throw badInput("InvalidRetention", `--retain must be a whole number >= 1 (got ${req.retain})`);
  }
  await req.repo.store.check();

  const started = now();
  let name = buildBackupName(started, method.name, req.sourceName ?? req.source.host);
  // Names have one-second resolution; never write into another backup's prefix.
  for (let i = 0; await req.repo.exists(name); i++) {
    if (i > 5) throw badInput("NameTaken", `backup ${name} already exists in ${req.repo.where}`);
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
    name = buildBackupName(now(), method.name, req.sourceName ?? req.source.host);
  }
  const objectName = `data.${method.extension}${compressionExtension(req.compression)}`;
  const log = req.log.child({ backup: name });
  log.info({ repository: req.repo.where, method: method.name }, "backup started");

  const run = await method.backup({ source: req.source, options: req.methodOptions, log, signal: req.signal });
  const raw = new ByteCounter();
  const stored = new ByteCounter();
  const hash = createHash("sha256");
  const hasher = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  const stopProgress = req.progress ? startProgress(`backup ${name}`, () => raw.bytes) : () => undefined;
  const body = run.stream.pipe(raw).pipe(createCompressor(req.compression)).pipe(hasher).pipe(stored);
  // .pipe does not forward errors: forward them so the upload fails with the cause.
  for (const s of [run.stream, raw]) s.on("error", (err) => body.destroy(err));
  let put: { size: number };
  try {
    put = await req.repo.store.put(req.repo.key(name, objectName), body);
  } catch (err) {
    run.stream.destroy();
    stopProgress();
    // The method's own error (e.g. mariadb-dump's stderr) explains more than the broken pipe.
    const outcome = await run.outcome.then(() => undefined, (e: unknown) => e);
    throw outcome ?? err;
  }
  const outcome = await run.outcome.finally(stopProgress);
  const sha256 = hash.digest("hex");
  const finished = now();
  const manifest: Manifest = {
    formatVersion: FORMAT_VERSION,
    name,
    cluster: req.repo.cluster,
    method: method.name,
    kind: method.kind,
    source: {
      host: req.source.host,
      port: req.source.port,
      role: outcome.role,
      serverId: outcome.serverId,
      version: outcome.version,
    },
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    compression: req.compression,
    objects: [{ name: objectName, size: put.size || stored.bytes, sha256, rawSize: raw.bytes }],
    details: outcome.details,
    tool: { name: TOOL_NAME, version: TOOL_VERSION },
  };
  if (outcome.replication) manifest.replication = outcome.replication;
  // The commit point: a backup without a manifest does not exist.
  await req.repo.writeManifest(manifest);
  log.info({ size: stored.bytes, rawSize: raw.bytes, replication: outcome.replication }, "backup completed");

  let plan: RetentionPlan | undefined;
  if (req.retain !== undefined) {
    plan = await req.repo.prune({ retain: req.retain });
    if (plan.expire.length > 0) log.info({ deleted: plan.expire }, "retention applied");
  }
  return {
    operation: "backup",
    name,
    repository: req.repo.where,
    method: method.name,
    role: outcome.role,
    size: stored.bytes,
    rawSize: raw.bytes,
    sha256,
    replication: outcome.replication,
    startedAt: manifest.startedAt,
    finishedAt: manifest.finishedAt,
    durationMs: finished.getTime() - started.getTime(),
    warnings: outcome.warnings,
    pruned: plan?.expire ?? [],
  };
}
