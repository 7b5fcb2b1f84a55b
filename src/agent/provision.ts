// `replicator provision`: the init container of a self-provisioning slave.
//
// It runs before the database server starts, on the pod's data volume:
// 1. A data directory that already holds data (and no restore sentinel) is
//    left alone: a restarted pod, or the master's own data.
// 2. Otherwise it waits for the operator's plan, the pod annotation
//    replicator.dev/provision-plan mounted through a downward-API volume.
// 3. A "restore" plan restores the named physical backup into the data
//    directory and writes the replica configuration, so the server that
//    starts next replicates from the master. A "none" plan ends at once:
//    the master, or a logical backup the operator loads once the server runs.
// The operator marks the PVC only once the started server replicates.
import { readFile } from "node:fs/promises";
import { setTimeout as delay } from "node:timers/promises";
import { provisionPlanSchema, type ProvisionPlanDoc } from "../api/provision-plan.js";
import { badInput, failed } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import type { Endpoint } from "../db/endpoint.js";
import type { BackupMethod } from "../plugins/contract.js";
import { openRepository, type S3Settings } from "../storage/open.js";
import { Repository } from "../storage/repository.js";
import { positionText } from "../storage/catalog.js";
import { inspectDatadir } from "./datadir.js";
import { runRestore } from "./restore.js";

export interface ProvisionRequest {
  datadir: string;
  planFile: string;
  timeoutMs: number;
  /** The master endpoint from the plan's URL, with the replication user's credentials. */
  masterFrom: (url: string) => Endpoint;
  s3: S3Settings;
  /** Resolves methods (a datadir plugin's backups, with --plugin / REPLICATOR_PLUGIN). */
  resolveMethod?: ((name: string, backup?: string) => BackupMethod) | undefined;
  log: Logger;
  signal: AbortSignal;
  pollMs?: number;
  /** How often a note says what the container still waits for (default 15 s). */
  noteEveryMs?: number;
}

export interface ProvisionResult {
  operation: "provision";
  /** restored: the backup is in the data directory; skipped: nothing to do here. */
  action: "restored" | "skipped";
  reason?: string;
  name?: string;
  position?: string;
  durationMs: number;
  warnings: string[];
}

/** Parse the plan file's text; "" means the operator has not decided yet. */
export function parsePlan(text: string, file: string): ProvisionPlanDoc | undefined {
  if (text.trim() === "") return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badInput("InvalidPlan", `provision plan ${file} is not JSON; the replicator.dev/provision-plan annotation is written by the operator, do not edit it`);
  }
  const r = provisionPlanSchema.safeParse(json);
  if (!r.success) throw badInput("InvalidPlan", `provision plan ${file} is invalid at ${r.error.issues[0]?.path.join(".") ?? ""}: ${r.error.issues[0]?.message ?? ""}`);
  return r.data;
}

async function waitForPlan(req: ProvisionRequest, log: Logger): Promise<ProvisionPlanDoc> {
  const started = Date.now();
  const every = req.noteEveryMs ?? 15_000;
  let lastNote = -Infinity;
  for (;;) {
    let text = "";
    try {
      text = await readFile(req.planFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    const plan = parsePlan(text, req.planFile);
    if (plan) {
      log.info({ planFile: req.planFile, action: plan.action, waitedSeconds: Math.round((Date.now() - started) / 1000) }, "provision plan received");
      return plan;
    }
    const waited = Date.now() - started;
    if (waited > req.timeoutMs) {
      throw failed("NoPlan", `no provision plan after ${Math.round(waited / 1000)}s in ${req.planFile}; is the operator running, and does the StatefulSet carry replicator.dev/provision? (kubectl describe pod shows the gate's reason)`);
    }
    // The container's only output while it holds the pod back: say at once, and then periodically, what it waits for.
    if (waited - lastNote >= every) {
      lastNote = waited;
      log.info(
        { planFile: req.planFile, annotation: "replicator.dev/provision-plan", waitedSeconds: Math.round(waited / 1000), timeoutSeconds: Math.round(req.timeoutMs / 1000) },
        "the data directory is empty: waiting for the operator's provision plan (the pod annotation replicator.dev/provision-plan); kubectl describe pod shows why in the replicator.dev/provisioned condition",
      );
    }
    await delay(req.pollMs ?? 1_000, undefined, { signal: req.signal });
  }
}

/**
 * The logger for the init container's progress notes: at least at info, since
 * the CLI's default level (warn) would leave a pod that waits with no output
 * at all; a level set lower (debug) stays, error or silent still hide them.
 */
function progressLogger(log: Logger): Logger {
  return log.level === "warn" ? log.child({}, { level: "info" }) : log;
}

export async function runProvision(req: ProvisionRequest): Promise<ProvisionResult> {
  const t0 = Date.now();
  const log = progressLogger(req.log);
  const state = await inspectDatadir(req.datadir);
  if (!state.redo && state.entries.length > 0) {
    log.info({ datadir: req.datadir }, "the data directory holds data: nothing to provision");
    return { operation: "provision", action: "skipped", reason: "DatadirNotEmpty", durationMs: Date.now() - t0, warnings: [] };
  }
  const plan = await waitForPlan(req, log);
  if (plan.action === "none") {
    log.info({ reason: plan.reason }, "no restore in the init container");
    return { operation: "provision", action: "skipped", reason: plan.reason, durationMs: Date.now() - t0, warnings: [] };
  }
  log.info({ backup: plan.backup, repository: plan.repository, master: plan.master }, "restoring the planned backup into the data directory");
  const repo = new Repository(await openRepository(plan.repository, { ...req.s3, ...plan.s3 }), plan.cluster);
  const r = await runRestore({
    repo,
    datadir: req.datadir,
    selector: { kind: "name", name: plan.backup },
    replicateFrom: req.masterFrom(plan.master),
    resolveMethod: req.resolveMethod,
    log: req.log,
    signal: req.signal,
  });
  return {
    operation: "provision",
    action: "restored",
    name: r.name,
    position: positionText(r.replication) ?? "-",
    durationMs: Date.now() - t0,
    warnings: r.warnings,
  };
}
