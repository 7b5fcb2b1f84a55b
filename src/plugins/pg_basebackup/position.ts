// Pure: where a base backup is consistent, from the three places that say so.
//
// - pg_basebackup -v's stderr (at backup time): "write-ahead log start
//   point: 0/2000028 on timeline 1" and "write-ahead log end point: 0/2000100".
// - backup_manifest (in the restored data; pg_basebackup injects it into the
//   tar it writes to stdout): "WAL-Ranges": [{ "Timeline": 1, "Start-LSN":
//   "0/2000028", "End-LSN": "0/2000100" }].
// - backup_label (in the restored data): "START WAL LOCATION: 0/2000028 (file
//   000000010000000000000002)" and "START TIMELINE: 1"; it has no end point.
//
// The position recorded is the END point: the restored server replays the
// WAL in the archive from the start point up to the end point (only then is
// it consistent), and a standby then streams from the segment that holds
// the end point. So that segment is what the primary must still have.
import { isLsn } from "../../db/postgres/wal.js";

export interface BasebackupPosition {
  startLsn?: string;
  endLsn?: string;
  timeline?: number;
}

export function parseBasebackupStderr(stderr: string): BasebackupPosition {
  const out: BasebackupPosition = {};
  // "transaction log" is what PostgreSQL 9.x called it.
  const start = /(?:write-ahead|transaction) log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/i.exec(stderr);
  if (start?.[1] && start[2]) {
    out.startLsn = start[1].toUpperCase();
    out.timeline = Number(start[2]);
  }
  const end = /(?:write-ahead|transaction) log end point: ([0-9A-F]+\/[0-9A-F]+)/i.exec(stderr);
  if (end?.[1]) out.endLsn = end[1].toUpperCase();
  return out;
}

export interface BackupLabel {
  startLsn?: string;
  startWalFile?: string;
  checkpointLsn?: string;
  /** "primary" or "standby". */
  backupFrom?: string;
  startTimeline?: number;
  label?: string;
}

export function parseBackupLabel(text: string): BackupLabel {
  const out: BackupLabel = {};
  const get = (key: string): string | undefined => new RegExp(`^${key}: (.*)$`, "m").exec(text)?.[1]?.trim();
  const start = get("START WAL LOCATION");
  const m = start ? /^([0-9A-F]+\/[0-9A-F]+)(?: \(file ([0-9A-F]{24})\))?/i.exec(start) : null;
  if (m?.[1]) out.startLsn = m[1].toUpperCase();
  if (m?.[2]) out.startWalFile = m[2];
  const cp = get("CHECKPOINT LOCATION");
  if (cp && isLsn(cp)) out.checkpointLsn = cp.toUpperCase();
  const from = get("BACKUP FROM");
  if (from) out.backupFrom = from;
  const tli = get("START TIMELINE");
  if (tli && /^\d+$/.test(tli)) out.startTimeline = Number(tli);
  const label = get("LABEL");
  if (label) out.label = label;
  return out;
}

/** The last WAL range of a backup_manifest (the one the backup ends on). */
export function parseManifestWalRange(json: string): { timeline: number; startLsn: string; endLsn: string } | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    return undefined;
  }
  const ranges = (doc as { "WAL-Ranges"?: unknown })["WAL-Ranges"];
  if (!Array.isArray(ranges) || ranges.length === 0) return undefined;
  const last = ranges[ranges.length - 1] as Record<string, unknown>;
  const timeline = last.Timeline;
  const start = last["Start-LSN"];
  const end = last["End-LSN"];
  if (typeof timeline !== "number" || typeof start !== "string" || typeof end !== "string" || !isLsn(start) || !isLsn(end)) return undefined;
  return { timeline, startLsn: start.toUpperCase(), endLsn: end.toUpperCase() };
}
