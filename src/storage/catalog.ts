// The catalog rules, pure: backup names, the manifest format, which backups
// exist, which one a restore picks, and which ones retention deletes.
//
// On-storage layout (format version 1):
//   <cluster>/<yyyymmddThhmmssZ>-<method>-<source>/data.<ext>
//   <cluster>/<yyyymmddThhmmssZ>-<method>-<source>/manifest.json   (written LAST)
//   <cluster>/<name>/claim.json        (create-only, FIRST: reserves the name)
//   <cluster>/<name>/deleting.json     (tombstone: a delete is under way)
//   <cluster>/<name>/in-use/<id>.json  (restore leases)
//   <cluster>/.index/v1/<stamp>-<rand>.json.gz  (the manifest index: a hint, see index-segments.ts)
import { z } from "zod";
import { badInput } from "../lib/errors.js";
import type { ObjectInfo } from "./object-store.js";

/** A segment of the manifest index, format 1 (index-segments.ts), by its key relative to `<cluster>/`. */
export function isIndexSegment(relKey: string): boolean {
  return /^\.index\/v1\/\d{8}T\d{6}Z-[0-9a-f]{12}\.json\.gz$/.test(relKey);
}

export const FORMAT_VERSION = 1;
export const MANIFEST = "manifest.json";
export const IN_USE_DIR = "in-use";
export const CLAIM = "claim.json";
export const TOMBSTONE = "deleting.json";
/** A running backup's heartbeat, refreshed while it runs: prune abandons an incomplete backup only after it goes quiet. */
export const HEARTBEAT = "running.json";
/** Present while a backup of a slave has its replication stopped; a killed run leaves it for the next to report. */
export const REPLICATION_MARKER = "replication-stopped.json";

const NAME_RE = /^(\d{8}T\d{6}Z)-([a-z0-9]+(?:_[a-z0-9]+)*)-([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)$/;

/** `2026-11-24T10:11:12.345Z` → `20261124T101112Z`. */
export function formatStamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}Z$/, "Z");
}

export function parseStamp(stamp: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(stamp);
  if (!m) throw badInput("InvalidName", `invalid backup timestamp "${stamp}"`);
  return new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6])));
}

const SOURCE_RE = /^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$/;

/**
 * A source name as it goes into backup names: refused, never mangled, when
 * it cannot be represented (lowercase letters, digits, "." and "-", at most
 * 63 characters, starting and ending with a letter or digit).
 */
export function validateSourceName(name: string): string {
  if (SOURCE_RE.test(name)) return name;
  const rule = 'use lowercase letters, digits, "." and "-", at most 63 characters, starting and ending with a letter or digit';
  if (name.length === 0) throw badInput("InvalidSourceName", `empty source name; ${rule}`);
  if (name.length > 63) throw badInput("InvalidSourceName", `source name "${clip(name)}" is ${name.length} characters long; ${rule}`);
  const bad = [...new Set(Array.from(name.matchAll(/[^a-z0-9.-]/gu), (m) => m[0]))];
  if (bad.length > 0) {
    const shown = bad.slice(0, 10).map((c) => JSON.stringify(c)).join(", ");
    throw badInput("InvalidSourceName", `source name "${clip(name)}" holds ${shown}${bad.length > 10 ? ` and ${bad.length - 10} more` : ""}; ${rule}`);
  }
  throw badInput("InvalidSourceName", `source name "${clip(name)}" must start and end with a letter or digit; ${rule}`);
}

/**
 * The default source name of a server: its host and port, e.g.
 * `127.0.0.1-3306` or `db-0.db-3306`, so two servers on one host differ.
 * The host is lower-cased and any character outside [a-z0-9.-] (IPv6
 * brackets and colons included) becomes "-".
 */
export function defaultSourceName(host: string, port: number): string {
  const suffix = `-${port}`;
  const h = host
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, "-")
    .replace(/^[-.]+/, "")
    .slice(0, 63 - suffix.length)
    .replace(/[-.]+$/, "");
  return validateSourceName(`${h || "host"}${suffix}`);
}

function clip(s: string, max = 80): string {
  return s.length <= max ? s : `${s.slice(0, max)}…`;
}

/** Method names use `_` as the word separator so that `-` can split a backup name. */
export function sanitizeMethod(method: string): string {
  return method.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "") || "custom";
}

/** `source` must be a valid source name (see validateSourceName): it is refused, not mangled. */
export function buildBackupName(at: Date, method: string, source: string): string {
  return `${formatStamp(at)}-${sanitizeMethod(method)}-${validateSourceName(source)}`;
}

export interface ParsedName {
  name: string;
  time: Date;
  method: string;
  source: string;
}

export function parseBackupName(name: string): ParsedName | undefined {
  const m = NAME_RE.exec(name);
  if (!m?.[1] || !m[2] || !m[3]) return undefined;
  return { name, time: parseStamp(m[1]), method: m[2], source: m[3] };
}

export function validateClusterName(cluster: string): string {
  if (!/^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$/.test(cluster)) {
    throw badInput("InvalidCluster", `invalid cluster name "${cluster}": use lowercase letters, digits, "-" and "." (max 63)`);
  }
  return cluster;
}

// ---------------------------------------------------------------- manifest

export const replicationPositionSchema = z.object({
  /** Whose coordinates these are: the server's own binlog (master) or its master's (slave). */
  role: z.enum(["master", "slave"]),
  /** MariaDB GTID position, e.g. "0-1-42,1-2-7". Empty when GTIDs are not in use. */
  gtid: z.string().optional(),
  /** Binlog file and position in the coordinates of the server replication must start from. */
  file: z.string().optional(),
  position: z.number().int().nonnegative().optional(),
  /** For a slave backup: the master it was replicating from when the backup was taken. */
  masterHost: z.string().optional(),
  masterPort: z.number().int().optional(),
  /** The server id of the server whose binlog the coordinates refer to, when known. */
  sourceServerId: z.number().int().optional(),
  /** PostgreSQL: the WAL location the backup is consistent at (e.g. "0/3000028"), and its timeline. */
  lsn: z.string().optional(),
  timeline: z.number().int().optional(),
});
export type ReplicationPosition = z.infer<typeof replicationPositionSchema>;

export const manifestObjectSchema = z.object({
  name: z.string().min(1),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** Bytes before compression, when known. */
  rawSize: z.number().int().nonnegative().optional(),
});
export type ManifestObject = z.infer<typeof manifestObjectSchema>;

export const compressionSchema = z.enum(["zstd", "gzip", "none"]);
export type Compression = z.infer<typeof compressionSchema>;

export const manifestSchema = z.object({
  formatVersion: z.literal(FORMAT_VERSION),
  name: z.string(),
  cluster: z.string(),
  method: z.string(),
  /** logical | physical | snapshot */
  kind: z.enum(["logical", "physical", "snapshot"]),
  source: z.object({
    host: z.string(),
    port: z.number().int(),
    role: z.enum(["master", "slave", "standalone"]),
    serverId: z.number().int().optional(),
    version: z.string().optional(),
  }),
  startedAt: z.iso.datetime(),
  finishedAt: z.iso.datetime(),
  compression: compressionSchema,
  objects: z.array(manifestObjectSchema).min(1),
  replication: replicationPositionSchema.optional(),
  /** Method-specific facts, e.g. the lock mode and databases of a dump. */
  details: z.record(z.string(), z.unknown()).default({}),
  tool: z.object({ name: z.string(), version: z.string() }),
});
export type Manifest = z.infer<typeof manifestSchema>;

export type ManifestProblem = "CorruptManifest" | "UnknownFormat";

export function parseManifest(text: string, where: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw badInput("CorruptManifest", `manifest ${where} is not valid JSON; the backup is corrupt`);
  }
  const version = (json as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === "number" && version > FORMAT_VERSION) {
    throw badInput(
      "UnknownFormat",
      `manifest ${where} has format version ${version}, newer than this replicator's ${FORMAT_VERSION}: written by a newer replicator; upgrade`,
    );
  }
  const res = manifestSchema.safeParse(json);
  if (!res.success) {
    const issue = res.error.issues[0];
    const at = issue ? issue.path.join(".") : "";
    throw badInput("CorruptManifest", `manifest ${where} is invalid at ${at || "(root)"}: ${clip(issue?.message ?? "unknown", 200)}`);
  }
  return res.data;
}

// ---------------------------------------------------------------- listing

export interface BackupEntry {
  name: string;
  time: Date;
  method: string;
  source: string;
  manifest: Manifest;
  size: number;
}

export interface IncompleteEntry {
  name: string;
  time: Date;
  keys: string[];
  /**
   * The newest write under the prefix (a running backup refreshes its
   * heartbeat object): an incomplete backup is abandoned only once this is
   * older than the grace period, never while its backup still runs.
   */
  lastActivity: Date;
}

/** A backup whose manifest was read but cannot be used: never restored, counted or deleted by retention. */
export interface UnusableEntry {
  name: string;
  reason: ManifestProblem;
  error: string;
}

export interface Scan {
  /** Prefixes that hold a manifest, oldest first. */
  complete: string[];
  /** The listed manifest object of each complete backup (its size, time and ETag validate a cached copy). */
  manifests: Map<string, ObjectInfo>;
  /** Prefixes with objects but no manifest: never listed or restored. */
  incomplete: IncompleteEntry[];
  /** Every key under each backup, for deletion. */
  keysByBackup: Map<string, string[]>;
  /** Restore leases by backup. */
  leasesByBackup: Map<string, string[]>;
  /** Backups with a tombstone (a delete is under way), and when it was written. */
  deleting: Map<string, Date | undefined>;
  /** The manifest index's segments (index-segments.ts), keys relative to `<cluster>/`: never backups. */
  indexSegments: ObjectInfo[];
}

/** Group a cluster's object listing into backups. Keys are relative to `<cluster>/`. */
export function scanListing(objects: ObjectInfo[]): Scan {
  const keysByBackup = new Map<string, string[]>();
  const leasesByBackup = new Map<string, string[]>();
  const activity = new Map<string, number>();
  const withManifest = new Map<string, ObjectInfo>();
  const deleting = new Map<string, Date | undefined>();
  const indexSegments: ObjectInfo[] = [];
  for (const o of objects) {
    if (isIndexSegment(o.key)) {
      indexSegments.push(o);
      continue;
    }
    const slash = o.key.indexOf("/");
    if (slash <= 0) continue;
    const name = o.key.slice(0, slash);
    if (!parseBackupName(name)) continue;
    const rest = o.key.slice(slash + 1);
    const keys = keysByBackup.get(name) ?? [];
    keys.push(o.key);
    keysByBackup.set(name, keys);
    if (rest === MANIFEST) withManifest.set(name, o);
    if (rest === TOMBSTONE) deleting.set(name, o.lastModified);
    if (rest.startsWith(`${IN_USE_DIR}/`)) {
      const l = leasesByBackup.get(name) ?? [];
      l.push(o.key);
      leasesByBackup.set(name, l);
    } else if (o.lastModified) {
      activity.set(name, Math.max(activity.get(name) ?? 0, o.lastModified.getTime()));
    }
  }
  const names = [...keysByBackup.keys()].sort();
  const incomplete: IncompleteEntry[] = [];
  for (const name of names) {
    if (withManifest.has(name) || deleting.has(name)) continue;
    const parsed = parseBackupName(name);
    if (!parsed) continue;
    const keys = (keysByBackup.get(name) ?? []).filter((k) => !k.slice(name.length + 1).startsWith(`${IN_USE_DIR}/`));
    const last = Math.max(parsed.time.getTime(), activity.get(name) ?? 0);
    if (keys.length > 0) incomplete.push({ name, time: parsed.time, keys, lastActivity: new Date(last) });
  }
  const complete = names.filter((n) => withManifest.has(n) && !deleting.has(n));
  const manifests = new Map<string, ObjectInfo>();
  for (const n of complete) manifests.set(n, withManifest.get(n) as ObjectInfo);
  return { complete, manifests, incomplete, keysByBackup, leasesByBackup, deleting, indexSegments };
}

// ---------------------------------------------------------------- selection

export type Selector = { kind: "latest" } | { kind: "name"; name: string } | { kind: "before"; time: Date };

export function parseTime(text: string): Date {
  const t = text.trim();
  if (/^\d{8}T\d{6}Z$/.test(t)) return parseStamp(t);
  const d = new Date(t);
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(t)) {
    throw badInput("InvalidTime", `invalid time "${text}"; use ISO 8601 like 2026-11-24T10:00:00Z, or 20261124T100000Z`);
  }
  return d;
}

/**
 * Pick the backup a restore uses from complete backups sorted oldest first.
 * Throws a BadInput error that says what exists when nothing matches.
 */
export function selectBackup<T extends { name: string; time: Date }>(backups: T[], sel: Selector, where: string): T {
  if (backups.length === 0) {
    throw badInput("NoBackup", `no complete backup in ${where}; run \`replicator backup\` first`);
  }
  switch (sel.kind) {
    case "latest": {
      const last = backups[backups.length - 1];
      if (!last) throw badInput("NoBackup", `no complete backup in ${where}`);
      return last;
    }
    case "name": {
      const found = backups.find((b) => b.name === sel.name);
      if (!found) {
        throw badInput("BackupNotFound", `backup ${sel.name} not found (or incomplete) in ${where}; \`replicator list\` shows the ${backups.length} that exist`);
      }
      return found;
    }
    case "before": {
      let pick: T | undefined;
      for (const b of backups) if (b.time.getTime() <= sel.time.getTime()) pick = b;
      if (!pick) {
        const first = backups[0];
        throw badInput(
          "NoBackup",
          `no backup at or before ${sel.time.toISOString()} in ${where}; the oldest is ${first?.name ?? "?"}`,
        );
      }
      return pick;
    }
  }
}

// ---------------------------------------------------------------- retention

export interface RetentionInput {
  /** Complete backups whose manifest was read and verified, oldest first. Only these are counted. */
  complete: { name: string; time: Date }[];
  /** Backups with a corrupt or newer-format manifest: never counted, never deleted. */
  unusable?: UnusableEntry[];
  incomplete: { name: string; time: Date; lastActivity?: Date }[];
  /** Backups with an unexpired restore lease. */
  inUse: Set<string>;
  retain: number;
  now: Date;
  /** Incomplete backups younger than this are left alone (a backup may be running). */
  incompleteGraceMs: number;
}

export interface RetentionPlan {
  /** Complete backups to delete, oldest first. */
  expire: string[];
  /** Incomplete prefixes past the grace period. */
  abandon: string[];
  /** Backups beyond the count that were kept because a restore is using them. */
  keptInUse: string[];
  /** Backups retention neither counts nor deletes (corrupt or newer-format manifest): a human decides. */
  unusable: UnusableEntry[];
}

/**
 * Keep the newest `retain` complete backups; delete older ones, except any a
 * restore is using. Never deletes the newest complete backup: retain >= 1.
 */
export function planRetention(input: RetentionInput): RetentionPlan {
  if (!Number.isInteger(input.retain) || input.retain < 1) {
    throw badInput("InvalidRetention", `retain must be a whole number >= 1 (got ${input.retain}); the newest backup is never deleted`);
  }
  const sorted = [...input.complete].sort((a, b) => (a.name < b.name ? -1 : 1));
  const cut = Math.max(0, sorted.length - input.retain);
  const expire: string[] = [];
  const keptInUse: string[] = [];
  for (const b of sorted.slice(0, cut)) {
    if (input.inUse.has(b.name)) keptInUse.push(b.name);
    else expire.push(b.name);
  }
  const abandon = input.incomplete
    .filter((b) => input.now.getTime() - (b.lastActivity ?? b.time).getTime() > input.incompleteGraceMs)
    .map((b) => b.name);
  return { expire, abandon, keptInUse, unusable: [...(input.unusable ?? [])] };
}

// ---------------------------------------------------------------- leases

export const leaseSchema = z.object({
  id: z.string(),
  purpose: z.string(),
  holder: z.string(),
  expiresAt: z.iso.datetime(),
});
export type Lease = z.infer<typeof leaseSchema>;

export function leaseActive(lease: Lease, now: Date): boolean {
  return new Date(lease.expiresAt).getTime() > now.getTime();
}

/** A lease object that cannot be parsed protects its backup this long after it was written, to be safe. */
export const UNREADABLE_LEASE_PROTECTS_MS = 24 * 60 * 60 * 1000;

export const claimSchema = z.object({
  name: z.string(),
  host: z.string(),
  pid: z.number().int(),
  claimedAt: z.iso.datetime(),
});
export type Claim = z.infer<typeof claimSchema>;

// ---------------------------------------------------------------- S3 part size

export const MIB = 1024 * 1024;
export const DEFAULT_PART_SIZE = 16 * MIB;
export const MAX_PARTS = 10_000;
/** S3's largest object: 5 TiB. */
export const MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MIB;

/**
 * The multipart part size for an object of about `expectedSize` bytes: 16 MiB,
 * or more so that 1.5x the hint fits in S3's 10,000 parts (rounded up to MiB).
 */
export function computePartSize(expectedSize: number | undefined): number {
  if (expectedSize === undefined || !Number.isFinite(expectedSize) || expectedSize <= 0) return DEFAULT_PART_SIZE;
  const needed = Math.ceil((expectedSize * 1.5) / MAX_PARTS);
  const rounded = Math.ceil(needed / MIB) * MIB;
  return Math.max(DEFAULT_PART_SIZE, Math.min(rounded, 5 * 1024 * MIB));
}

// ---------------------------------------------------------------- formatting

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i] ?? ""}`;
}

/** A position as one short string: the GTID, else file:pos; undefined when there is none. */
export function positionText(
  p: { gtid?: string | undefined; file?: string | undefined; position?: number | undefined; lsn?: string | undefined } | undefined,
): string | undefined {
  if (p?.gtid) return p.gtid;
  if (p?.lsn) return p.lsn;
  if (p?.file) return `${p.file}:${p.position ?? 0}`;
  return undefined;
}

export function formatPosition(p: ReplicationPosition | undefined): string {
  if (p?.gtid) return `gtid ${p.gtid}`;
  if (p?.lsn) return `lsn ${p.lsn}${p.timeline !== undefined ? ` (timeline ${p.timeline})` : ""}`;
  return positionText(p) ?? "-";
}
