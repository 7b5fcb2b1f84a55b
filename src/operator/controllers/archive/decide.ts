// Binlog archives of a repository (spec.binlogArchives), pure: which
// archiver Deployments should exist and against which master, what their
// pods say (a gap reported by the archiver, a crash, not ready), and what the
// archive in storage makes recoverable. The I/O is in ./controller.ts.
import { validateServerRef, type RepositorySpec, type ServerRef } from "../../../api/v1alpha1.js";
import type { ServerArchive } from "../../../pitr/archive.js";
import { notAfter, parseGtidState, sameState, type GtidState } from "../../../pitr/gtid.js";
import { stateOf, type BinlogIndex } from "../../../pitr/layout.js";
import { buildChain, findRoute, gapBetween, startStateOf, type Chain } from "../../../pitr/plan.js";
import { selectServerPod, type PodLike } from "../../observe.js";

export const ARCHIVING_CONDITION = "Archiving";

export type ArchiveEntryPlan =
  | { kind: "run"; cluster: string; source: ServerRef; flushIntervalSeconds: number; masterPod: string; address: string }
  /** The master cannot be chosen now: an existing Deployment is left as it is (its archiver reconnects), none is created. */
  | { kind: "wait"; cluster: string; reason: string; message: string }
  /** No Deployment: the entry is suspended or invalid. */
  | { kind: "off"; cluster: string; reason: string; message: string };

/** The catalog name an entry archives into: its cluster, else the StatefulSet (or pod) name. */
export function entryCluster(e: RepositorySpec["binlogArchives"][number]): string {
  return e.cluster ?? e.source.statefulSet ?? e.source.pod ?? "";
}

/** Pure: what each spec.binlogArchives entry needs, in spec order. */
export function decideArchives(spec: RepositorySpec, pods: PodLike[]): ArchiveEntryPlan[] {
  const seen = new Set<string>();
  return spec.binlogArchives.map((e, i): ArchiveEntryPlan => {
    const cluster = entryCluster(e);
    const at = `spec.binlogArchives[${i}]`;
    const refProblem = validateServerRef(e.source, `binlogArchives[${i}].source`);
    if (refProblem) return { kind: "off", cluster, reason: "InvalidSpec", message: refProblem };
    if (e.source.role !== "master") {
      return { kind: "off", cluster, reason: "InvalidSpec", message: `${at}.source.role: the archiver reads the master's binlogs; set role: master (or leave it out)` };
    }
    if (seen.has(cluster)) {
      return { kind: "off", cluster, reason: "InvalidSpec", message: `${at}: a second entry for cluster ${cluster}; two archivers must not write one archive, keep one` };
    }
    seen.add(cluster);
    if (e.suspend) return { kind: "off", cluster, reason: "Suspended", message: "suspended: no archiver runs; the archive in storage is kept" };
    const sel = selectServerPod(e.source, pods);
    if (!sel.ok) return { kind: "wait", cluster, reason: sel.reason, message: sel.message };
    return { kind: "run", cluster, source: e.source, flushIntervalSeconds: e.flushIntervalSeconds, masterPod: sel.pod, address: sel.address };
  });
}

interface TerminatedLike {
  exitCode: number;
  message?: string;
  reason?: string;
  startedAt?: string;
  finishedAt?: string;
}

/** The archiver pod's container status, as the kubelet writes it. */
export interface ArchiverContainerStatus {
  name: string;
  ready?: boolean;
  restartCount?: number;
  state?: { running?: { startedAt?: string }; waiting?: { reason?: string; message?: string }; terminated?: TerminatedLike };
  lastState?: { terminated?: TerminatedLike };
}

export interface ArchiverPod {
  metadata: { name: string; deletionTimestamp?: string; labels?: Record<string, string> };
  status?: { phase?: string; containerStatuses?: ArchiverContainerStatus[] };
}

/** A container that runs this long after a failure is taken as recovered. */
export const RECOVERED_AFTER_MS = 60_000;

export interface ArchiverHealth {
  ready: boolean;
  status: "True" | "False";
  reason: "ArchiverRunning" | "ArchiveGap" | "ArchiverFailed" | "ArchiverNotReady";
  message: string;
}

/**
 * Pure: the archiver's one-line failure from a termination message: the
 * agent's JSON result, or (terminationMessagePolicy FallbackToLogsOnError)
 * the last line of its log, `replicator binlog-archive: <message>`.
 */
export function archiverFailure(t: TerminatedLike): { reason: "ArchiveGap" | "ArchiverFailed"; message: string } {
  let text: string;
  let reason: string | undefined;
  const raw = (t.message ?? "").trim();
  try {
    const r = JSON.parse(raw) as { reason?: string; error?: string };
    text = r.error ?? "";
    reason = r.reason;
  } catch {
    text = raw.split("\n").filter((l) => l.trim() !== "").pop() ?? "";
  }
  text = text.replace(/^replicator binlog-archive: /, "").slice(0, 1000);
  if (!text) text = `the archiver exited with code ${t.exitCode}${t.reason ? ` (${t.reason})` : ""} and left no message; see its log`;
  const gap = reason === "ArchiveGap" || /^binlog archive gap:/.test(text);
  return { reason: gap ? "ArchiveGap" : "ArchiverFailed", message: text };
}

/** Pure: the state of an archiver from its pods (the Deployment's, not being deleted). */
export function archiverHealth(pods: ArchiverPod[], container: string, now: Date): ArchiverHealth {
  const live = pods.filter((p) => !p.metadata.deletionTimestamp);
  if (live.length === 0) return { ready: false, status: "False", reason: "ArchiverNotReady", message: "the archiver's pod is not created yet" };
  for (const p of live) {
    const c = p.status?.containerStatuses?.find((s) => s.name === container);
    if (!c) continue;
    const failed = c.state?.terminated && c.state.terminated.exitCode !== 0 ? c.state.terminated : c.lastState?.terminated && c.lastState.terminated.exitCode !== 0 ? c.lastState.terminated : undefined;
    const runningSince = c.state?.running?.startedAt ? Date.parse(c.state.running.startedAt) : undefined;
    const recovered = runningSince !== undefined && now.getTime() - runningSince >= RECOVERED_AFTER_MS;
    if (failed && !recovered) {
      const f = archiverFailure(failed);
      const restarts = c.restartCount ? ` (restarted ${c.restartCount} time${c.restartCount === 1 ? "" : "s"})` : "";
      return { ready: false, status: "False", reason: f.reason, message: `${f.message}${restarts}` };
    }
    if (c.state?.running && c.ready) return { ready: true, status: "True", reason: "ArchiverRunning", message: `pod ${p.metadata.name} archives the master's binlogs` };
  }
  const p = live[0];
  const waiting = p?.status?.containerStatuses?.find((s) => s.name === container)?.state?.waiting;
  return {
    ready: false,
    status: "False",
    reason: "ArchiverNotReady",
    message: `pod ${p?.metadata.name ?? "?"} is ${waiting?.reason ? `waiting (${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""})` : (p?.status?.phase ?? "Pending").toLowerCase()}`,
  };
}

/** A backup a point-in-time restore can start from (logical, with a GTID position). */
export interface BaseBackup {
  name: string;
  finishedAt: string;
  gtid: string;
}

export interface ArchiveReading {
  firstRecoverableTime?: string;
  lastRecoverableTime?: string;
  lastArchivedFile?: string;
  lagSeconds?: number;
  /** A gap inside the archive (a file missing from storage), or why nothing is recoverable yet. */
  problem?: { reason: "ArchiveGap" | "NoBaseBackup"; message: string };
}

/**
 * Pure: what a server's archive makes recoverable. The last recoverable time
 * is the newest archived event; the first is the oldest base backup whose
 * position the archive continues without a gap up to its end (the archive
 * begins at or before it). Lag: 0 when the archive holds the master's whole
 * GTID position (an idle master is not behind), else now − the newest event.
 */
export function readArchive(archive: ServerArchive, backups: BaseBackup[], masterGtid: string | undefined, now: Date, where: string, others: Chain[] = []): ArchiveReading {
  const chain = buildChain(archive);
  const last = chain[chain.length - 1];
  if (!last) return {};
  const out: ArchiveReading = { lastArchivedFile: last.object };
  if (last.lastEventTime) out.lastRecoverableTime = last.lastEventTime;
  // The part of the chain after its last gap: only it can carry a restore to the end.
  let from = 0;
  for (let k = 1; k < chain.length; k++) {
    const gap = gapBetween(chain[k - 1] as BinlogIndex, chain[k] as BinlogIndex, where);
    if (gap) {
      from = k;
      out.problem = { reason: "ArchiveGap", message: gap };
    }
  }
  // A seeded server's first binlog has an empty GTID_LIST: it begins before its first GTID, not at nothing.
  const start = startStateOf(chain[from] as BinlogIndex);
  const end = stateOf(last.endState);
  // After a switchover (`others`: the previous masters' chains), a backup older than this archive is
  // still a base when a restore stitches their archives into this one (plan.ts findRoute).
  const self: Chain = { serverId: archive.serverId, where, files: chain.slice(from) };
  const stitched = (pos: GtidState): boolean =>
    others.length > 0 && findRoute([...others, self], pos, (c, _s, e) => (c === self && e === self.files.length - 1 ? e : undefined)) !== undefined;
  const usable = backups
    .filter((b) => {
      const pos = parseGtidState(b.gtid);
      return notAfter(pos, end) && (notAfter(start, pos) || stitched(pos));
    })
    .sort((a, b) => Date.parse(a.finishedAt) - Date.parse(b.finishedAt));
  if (usable[0]) out.firstRecoverableTime = usable[0].finishedAt;
  else if (!out.problem) {
    out.problem = {
      reason: "NoBaseBackup",
      message:
        `no logical backup with a GTID position taken since the archive ${where} began (${chain[from]?.firstEventTime ?? chain[from]?.file ?? "?"}); take one to make this archive usable for point-in-time recovery` +
        " (after a switchover, a restore from an older backup may still stitch the previous master's archive to this one: `replicator restore --until ... --dry-run` shows it)",
    };
  }
  if (masterGtid !== undefined && sameState(parseGtidState(masterGtid), end)) out.lagSeconds = 0;
  else if (last.lastEventTime) out.lagSeconds = Math.max(0, Math.round((now.getTime() - Date.parse(last.lastEventTime)) / 1000));
  return out;
}
