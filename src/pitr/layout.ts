// The binlog archive in a repository, next to a cluster's backups (format 1):
//
//   <cluster>/binlogs/<server_id>/<file>                   a closed binlog, byte for byte (write-once)
//   <cluster>/binlogs/<server_id>/<file>.index.json        its index, written after it: the commit point
//   <cluster>/binlogs/<server_id>/<file>.partial           the binlog the master still writes, up to its
//                                                          last whole event (replaced at each flush)
//   <cluster>/binlogs/<server_id>/<file>.partial.index.json
//
// `binlogs` is not a backup name, so the catalog (list, prune) never sees
// these objects. Pure: keys, the index schema, the file-name order.
import { z } from "zod";
import { badInput } from "../lib/errors.js";
import { joinKey } from "../storage/object-store.js";
import { formatGtid, formatGtidState, parseGtidState, type Gtid, type GtidState } from "./gtid.js";
import type { BinlogScan } from "./binlog-file.js";

export const ARCHIVE_FORMAT_VERSION = 1;
export const ARCHIVE_DIR = "binlogs";
export const INDEX_SUFFIX = ".index.json";
export const PARTIAL_SUFFIX = ".partial";

export function serverPrefix(cluster: string, serverId: number): string {
  return `${joinKey(cluster, ARCHIVE_DIR, String(serverId))}/`;
}

export function archivePrefix(cluster: string): string {
  return `${joinKey(cluster, ARCHIVE_DIR)}/`;
}

export const binlogIndexSchema = z.object({
  formatVersion: z.literal(ARCHIVE_FORMAT_VERSION),
  serverId: z.number().int().nonnegative(),
  /** The binlog's name on the master, e.g. mysql-bin.000004. */
  file: z.string().min(1),
  /** The object holding the bytes: `file`, or `file.partial` while the master still writes it. */
  object: z.string().min(1),
  complete: z.boolean(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** The GTID state at the start of the file (its GTID_LIST event) and after its last event. */
  startState: z.string(),
  endState: z.string(),
  firstGtid: z.string().optional(),
  lastGtid: z.string().optional(),
  gtidCount: z.number().int().nonnegative(),
  firstEventTime: z.iso.datetime().optional(),
  lastEventTime: z.iso.datetime().optional(),
  archivedAt: z.iso.datetime(),
});
export type BinlogIndex = z.infer<typeof binlogIndexSchema>;

export function buildIndex(serverId: number, file: string, scan: BinlogScan, complete: boolean, now: Date): BinlogIndex {
  const first = scan.gtids[0];
  const last = scan.gtids[scan.gtids.length - 1];
  const iso = (t: number | undefined): string | undefined => (t === undefined ? undefined : new Date(t * 1000).toISOString());
  return {
    formatVersion: ARCHIVE_FORMAT_VERSION,
    serverId,
    file,
    object: complete ? file : `${file}${PARTIAL_SUFFIX}`,
    complete,
    size: scan.size,
    sha256: scan.sha256,
    startState: formatGtidState(scan.startState),
    endState: formatGtidState(scan.endState),
    ...(first ? { firstGtid: formatGtid(first.gtid) } : {}),
    ...(last ? { lastGtid: formatGtid(last.gtid) } : {}),
    gtidCount: scan.gtids.length,
    ...(scan.firstEventTime !== undefined ? { firstEventTime: iso(scan.firstEventTime) } : {}),
    ...(scan.lastEventTime !== undefined ? { lastEventTime: iso(scan.lastEventTime) } : {}),
    archivedAt: now.toISOString(),
  };
}

export function parseIndex(text: string, where: string): BinlogIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badInput("CorruptArchive", `binlog index ${where} is not valid JSON; the archive is damaged`);
  }
  const v = (json as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof v === "number" && v > ARCHIVE_FORMAT_VERSION) {
    throw badInput("UnknownFormat", `binlog index ${where} has format version ${v}, newer than this replicator's ${ARCHIVE_FORMAT_VERSION}; upgrade`);
  }
  const r = binlogIndexSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw badInput("CorruptArchive", `binlog index ${where} is invalid at ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "unknown"}`);
  }
  return r.data;
}

/** `mysql-bin.000042` → { base: "mysql-bin", n: 42, width: 6 }. */
export function parseBinlogName(file: string): { base: string; n: number; width: number } | undefined {
  const m = /^(.+)\.(\d+)$/.exec(file);
  if (!m?.[1] || !m[2]) return undefined;
  return { base: m[1], n: Number(m[2]), width: m[2].length };
}

/** The name the server gives the binlog after `file`. */
export function nextBinlogName(file: string): string {
  const p = parseBinlogName(file);
  if (!p) throw badInput("InvalidBinlogName", `"${file}" is not a binlog file name (NAME.NNNNNN)`);
  return `${p.base}.${String(p.n + 1).padStart(p.width, "0")}`;
}

export function compareBinlogNames(a: string, b: string): number {
  const pa = parseBinlogName(a);
  const pb = parseBinlogName(b);
  if (pa && pb && pa.base === pb.base) return pa.n - pb.n;
  return a < b ? -1 : a > b ? 1 : 0;
}

export function stateOf(text: string): GtidState {
  return parseGtidState(text, "archived GTID state");
}

export function gtidOf(text: string | undefined): Gtid | undefined {
  if (!text) return undefined;
  const [g] = parseGtidState(text).values();
  return g;
}
