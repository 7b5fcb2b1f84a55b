// The repository index: copies of many manifests in a few objects, so that a
// listing with nothing cached reads a handful of objects instead of one
// manifest per backup.
//
// Layout (index format 1), next to the backups of a cluster:
//   <cluster>/.index/v1/<yyyymmddThhmmssZ>-<12 hex>.json.gz   (immutable segments)
// ".index" is never a backup name (names start with a timestamp), so the
// listing's backup scan skips it: it is never listed, pruned or restored as a
// backup. A newer index format goes under .index/v2/, which this version neither
// reads nor deletes.
//
// A segment is gzip of one JSON object: a header (what it is, the format, the
// cluster, when and by which tool it was written) and entries, each a backup
// name, the validator of its listed manifest object (ETag, size and time, as
// the listing said them when the segment was written: manifestValidator) and
// the manifest as it was read, parsed and verified.
//
// The index is a hint and never the truth. The listing decides what exists: an
// entry is used only for a backup the listing shows committed (its manifest
// listed, no tombstone) and only while the listed manifest object carries the
// entry's validator; each entry's manifest is parsed with the manifest schema
// and must name its backup. An entry the listing does not confirm, a segment
// that does not decompress or parse, one of another cluster or format, or one
// that cannot be read: each costs the reads of the manifests it would have
// supplied (read as without an index, under the usual fault rules), never a
// verdict. Restore and verify always read the real manifest.
import { randomBytes } from "node:crypto";
import { gunzipSync, gzipSync } from "node:zlib";
import { TOOL_VERSION } from "../version.js";
import { formatStamp, manifestSchema, type Manifest } from "./catalog.js";

export { isIndexSegment } from "./catalog.js";

export const INDEX_DIR = ".index";
export const INDEX_FORMAT = 1;
/** Where the segments of this format live, relative to `<cluster>/`. */
export const INDEX_PREFIX = `${INDEX_DIR}/v${INDEX_FORMAT}/`;
const KIND = "replicator-manifest-index";
/** A segment larger than this is not read (about 100 times the segment of 10,000 manifests). */
export const MAX_SEGMENT_BYTES = 256 * 1024 * 1024;

/** A new segment's key, relative to `<cluster>/`: unique (random), sorted by time. */
export function newSegmentKey(now: Date): string {
  return `${INDEX_PREFIX}${formatStamp(now)}-${randomBytes(6).toString("hex")}.json.gz`;
}

export interface IndexEntry {
  name: string;
  /** manifestValidator() of the listed manifest object the copy was read from. */
  validator: string;
  manifest: Manifest;
}

interface SegmentJson {
  index: typeof KIND;
  format: number;
  cluster: string;
  writtenAt: string;
  tool: string;
  entries: { n: string; v: string; m: Manifest }[];
}

export function encodeSegment(cluster: string, entries: IndexEntry[], now: Date): Buffer {
  const body: SegmentJson = {
    index: KIND,
    format: INDEX_FORMAT,
    cluster,
    writtenAt: now.toISOString(),
    tool: TOOL_VERSION,
    entries: entries.map((e) => ({ n: e.name, v: e.validator, m: e.manifest })),
  };
  return gzipSync(JSON.stringify(body), { level: 6 });
}

/** An entry as read: its manifest not checked yet (checkedManifest does, when it is about to be used). */
export interface RawEntry {
  name: string;
  validator: string;
  manifest: unknown;
}

/**
 * The entries of a segment, or the problem that makes the whole segment
 * worthless (a string for the debug log). Never throws.
 */
export function decodeSegment(buf: Buffer, cluster: string): RawEntry[] | string {
  let text: string;
  try {
    text = gunzipSync(buf, { maxOutputLength: MAX_SEGMENT_BYTES }).toString("utf8");
  } catch (err) {
    return `not a gzip stream (${(err as Error).message})`;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return "not valid JSON";
  }
  const head = json as Partial<SegmentJson> | null;
  if (typeof head !== "object" || head === null || head.index !== KIND) return "not a manifest index";
  if (head.format !== INDEX_FORMAT) return `index format ${String(head.format)}, this version reads ${INDEX_FORMAT}`;
  if (head.cluster !== cluster) return `an index of cluster ${JSON.stringify(head.cluster)}, not ${cluster}`;
  if (!Array.isArray(head.entries)) return "no entries";
  const out: RawEntry[] = [];
  for (const e of head.entries as unknown[]) {
    const r = e as { n?: unknown; v?: unknown; m?: unknown } | null;
    if (typeof r !== "object" || r === null || typeof r.n !== "string" || typeof r.v !== "string" || typeof r.m !== "object" || r.m === null) continue;
    out.push({ name: r.n, validator: r.v, manifest: r.m });
  }
  return out;
}

/** The entry's manifest when it is a valid manifest of backup `name`; else undefined (the manifest is read instead). */
export function checkedManifest(entry: RawEntry, name: string): Manifest | undefined {
  if (entry.name !== name) return undefined;
  const res = manifestSchema.safeParse(entry.manifest);
  if (!res.success || res.data.name !== name) return undefined;
  return res.data;
}
