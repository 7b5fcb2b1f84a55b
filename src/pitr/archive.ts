// Reading and writing the binlog archive through the repository's
// ObjectStore (its retries and fault mapping: a storage fault surfaces as
// StorageUnreachable/StorageError, never as "missing").
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { createWriteStream } from "node:fs";
import { failed } from "../lib/errors.js";
import { readObject, type ObjectStore } from "../storage/object-store.js";
import { verifyingTransform } from "../storage/repository.js";
import type { BinlogScan } from "./binlog-file.js";
import type { ArchiveIndexCache } from "./archive-index-cache.js";
import {
  buildIndex, compareBinlogNames, INDEX_SUFFIX, parseIndex, PARTIAL_SUFFIX, serverPrefix, archivePrefix, type BinlogIndex,
} from "./layout.js";

/** One server's archived binlogs: committed (indexed) complete files in order, and the partial files. */
export interface ServerArchive {
  serverId: number;
  complete: BinlogIndex[];
  partial: BinlogIndex[];
  /** Objects without an index (an upload cut short): ignored, overwritten by the next upload. */
  unindexed: string[];
}

/**
 * `cache` (the operator's): an index the listing shows unchanged since it was
 * read is not read again (archive-index-cache.ts); faults throw as without it.
 */
export async function readServerArchive(store: ObjectStore, cluster: string, serverId: number, cache?: ArchiveIndexCache): Promise<ServerArchive> {
  const prefix = serverPrefix(cluster, serverId);
  const objects = await store.list(prefix);
  const names = new Set(objects.map((o) => o.key.slice(prefix.length)));
  const listed = new Map(objects.map((o) => [o.key.slice(prefix.length), o]));
  cache?.retain(store, prefix, objects.map((o) => o.key));
  const out: ServerArchive = { serverId, complete: [], partial: [], unindexed: [] };
  for (const name of [...names].sort()) {
    if (!name.endsWith(INDEX_SUFFIX)) {
      if (!names.has(`${name}${INDEX_SUFFIX}`)) out.unindexed.push(name);
      continue;
    }
    const where = `${store.location.replace(/\/+$/, "")}/${prefix}${name}`;
    const info = listed.get(name);
    let idx = info ? cache?.get(store, info) : undefined;
    if (!idx) {
      idx = parseIndex((await readObject(store, `${prefix}${name}`)).toString("utf8"), where);
      if (idx.serverId !== serverId) throw failed("CorruptArchive", `binlog index ${where} names server ${idx.serverId}; the archive is inconsistent`);
      if (info) cache?.set(store, info, idx);
    }
    (idx.complete ? out.complete : out.partial).push(idx);
  }
  out.complete.sort((a, b) => compareBinlogNames(a.file, b.file));
  out.partial.sort((a, b) => compareBinlogNames(a.file, b.file));
  return out;
}

/** The server ids that have an archive under the cluster. */
export async function archivedServers(store: ObjectStore, cluster: string): Promise<number[]> {
  const children = await store.listChildren(archivePrefix(cluster));
  return children.filter((c) => /^\d+$/.test(c)).map(Number).sort((a, b) => a - b);
}

/**
 * Upload the first `scan.size` bytes of a local binlog, checked against the
 * scan's sha256 as they stream, then its index (the commit point). A
 * complete file removes the partial object it supersedes.
 */
export async function uploadBinlog(
  store: ObjectStore, cluster: string, serverId: number, localPath: string, file: string, scan: BinlogScan, complete: boolean, now: Date,
): Promise<BinlogIndex> {
  const prefix = serverPrefix(cluster, serverId);
  const idx = buildIndex(serverId, file, scan, complete, now);
  const body = createReadStream(localPath, { start: 0, end: Math.max(0, scan.size - 1) }).pipe(verifyingTransform(scan.size, scan.sha256, `${localPath} (0..${scan.size})`));
  await store.put(`${prefix}${idx.object}`, body, { expectedSize: scan.size });
  await store.put(`${prefix}${idx.object}${INDEX_SUFFIX}`, `${JSON.stringify(idx, null, 2)}\n`);
  if (complete) await store.delete([`${prefix}${file}${PARTIAL_SUFFIX}${INDEX_SUFFIX}`, `${prefix}${file}${PARTIAL_SUFFIX}`]);
  return idx;
}

/** Download one archived binlog to `dest`, failing with CorruptArchive when its size or sha256 differs from its index. */
export async function downloadBinlog(store: ObjectStore, cluster: string, idx: BinlogIndex, dest: string): Promise<void> {
  const key = `${serverPrefix(cluster, idx.serverId)}${idx.object}`;
  const where = `${store.location.replace(/\/+$/, "")}/${key}`;
  // A partial object is replaced at each flush of a running archiver: a
  // mismatch there is a race with it, not damage, and a retry will do.
  const damaged = (what: string, cause?: unknown): Error =>
    idx.complete
      ? failed("CorruptArchive", `${where}: ${what}; the archived binlog is damaged`, { cause })
      : failed("ArchiveChanged", `${where}: ${what}: the archiver replaced the open binlog's partial object while it was read; run the restore again`, { cause });
  const head = await store.head(key);
  if (!head) throw damaged("missing although its index lists it");
  if (head.size !== idx.size) throw damaged(`${head.size} bytes but its index says ${idx.size}`);
  const check = verifyingTransform(idx.size, idx.sha256, where);
  try {
    await pipeline(await store.get(key), check, createWriteStream(dest, { mode: 0o600 }));
  } catch (err) {
    if ((err as { reason?: string }).reason === "CorruptBackup") throw damaged("size or sha256 differs from its index", err);
    throw err;
  }
}
