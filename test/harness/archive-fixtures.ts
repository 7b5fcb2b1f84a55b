// Test data for the binlog archive's readers: index objects as the archiver
// writes them (src/pitr/archive.ts uploadBinlog), without any binlog inside.
import { INDEX_SUFFIX, serverPrefix, type BinlogIndex } from "../../src/pitr/layout.js";
import type { ObjectStore } from "../../src/storage/object-store.js";

export const ARCHIVE_T0 = Date.parse("2026-11-30T10:00:00Z");
/** ARCHIVE_T0 plus `m` minutes, as ISO text. */
export const archiveTime = (m: number): string => new Date(ARCHIVE_T0 + m * 60_000).toISOString();

/** The index of mysql-bin.00000N of `serverId`, holding GTIDs 0-<sid>-(from+1) .. 0-<sid>-to, its events in minutes 10N .. 10N+9. */
export function binlogIndex(n: number, from: number, to: number, complete: boolean, serverId = 1): BinlogIndex {
  const file = `mysql-bin.${String(n).padStart(6, "0")}`;
  return {
    formatVersion: 1,
    serverId,
    file,
    object: complete ? file : `${file}.partial`,
    complete,
    size: 100 + to,
    sha256: "a".repeat(64),
    startState: from ? `0-${serverId}-${from}` : "",
    endState: `0-${serverId}-${to}`,
    firstGtid: `0-${serverId}-${from + 1}`,
    lastGtid: `0-${serverId}-${to}`,
    gtidCount: to - from,
    firstEventTime: archiveTime(n * 10),
    lastEventTime: archiveTime(n * 10 + 9),
    archivedAt: archiveTime(n * 10 + 9),
  };
}

/** What the archiver writes: the binlog's bytes, then its index; a complete file removes its partial. */
export async function putArchived(store: ObjectStore, cluster: string, idx: BinlogIndex): Promise<void> {
  const prefix = serverPrefix(cluster, idx.serverId);
  await store.put(`${prefix}${idx.object}`, "x".repeat(idx.size));
  await store.put(`${prefix}${idx.object}${INDEX_SUFFIX}`, `${JSON.stringify(idx, null, 2)}\n`);
  if (idx.complete) await store.delete([`${prefix}${idx.file}.partial${INDEX_SUFFIX}`, `${prefix}${idx.file}.partial`]);
}
