// A cache of manifests read from a repository, in memory (the operator) or in
// a file under $XDG_CACHE_HOME/replicator (the CLI).
//
// Manifests are create-only and never rewritten, so a copy stays good as long
// as the listed object is the same one: an entry is keyed by the object's key
// and checked against what the listing says of the object now (its ETag, size
// and last-modified time, see manifestValidator). Anything else reads the
// object again. The cache never decides what exists (the listing does), nor
// that a backup is corrupt (only a read of the store does): it holds only
// manifests that were read, parsed and verified. A cache file that is damaged
// is worth nothing, never a verdict: each entry carries its own sha256, and an
// entry that does not match it, or a file that does not parse, is a miss.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readFile, readdir, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import path from "node:path";
import { replicatorCacheDir } from "../lib/cache-dir.js";
import { TOOL_VERSION } from "../version.js";
import { FORMAT_VERSION, type Manifest } from "./catalog.js";
import type { ObjectInfo } from "./object-store.js";

/**
 * What must be equal for a cached copy of a listed object to be used: its
 * ETag, size and last-modified time. Undefined (never cached) when the store
 * says neither an ETag nor a time.
 */
export function manifestValidator(o: ObjectInfo): string | undefined {
  const etag = o.etag ?? "";
  const t = o.lastModified?.getTime();
  if (etag === "" && t === undefined) return undefined;
  return `${etag}|${o.size}|${t ?? ""}`;
}

interface Entry {
  validator: string;
  manifest: Manifest;
}

export class ManifestCache {
  private readonly entries = new Map<string, Entry>();
  /** Keys looked up or stored since the last sweep: the manifests the last listings named. */
  private readonly used = new Set<string>();
  private changed = false;

  /** The cached manifest of `key` when it was stored with this validator; a stale entry is dropped. */
  get(key: string, validator: string): Manifest | undefined {
    this.used.add(key);
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.validator === validator) return e.manifest;
    this.entries.delete(key);
    this.changed = true;
    return undefined;
  }

  /** Store a manifest that was read, parsed and verified. */
  set(key: string, validator: string, manifest: Manifest): void {
    this.used.add(key);
    this.entries.set(key, { validator, manifest });
    this.changed = true;
  }

  /** Forget the entries no listing asked for since the last sweep (backups deleted meanwhile). */
  sweep(): void {
    for (const key of this.entries.keys()) {
      if (!this.used.has(key)) {
        this.entries.delete(key);
        this.changed = true;
      }
    }
    this.used.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  /** True when entries were added or dropped since it was loaded: a file needs writing. */
  get dirty(): boolean {
    return this.changed;
  }

  /** @internal For the cache file: entries as loaded, without marking them used or changed. */
  load(key: string, validator: string, manifest: Manifest): void {
    this.entries.set(key, { validator, manifest });
  }

  /** @internal For the cache file. */
  *all(): IterableIterator<[string, Entry]> {
    yield* this.entries;
  }
}

// ---------------------------------------------------------------- the CLI's cache file

/** Bump when the file's layout changes: a file of another version is ignored. */
const FILE_FORMAT = 1;
const MAX_FILE_BYTES = 512 * 1024 * 1024;
/** Cache files kept in the directory; the least recently used beyond these are removed. */
const MAX_FILES = 64;

export interface CacheScope {
  /** The store's identity (ObjectStore.identity): location and endpoint. */
  identity: string;
  cluster: string;
}

interface Header {
  cache: "replicator-manifests";
  format: number;
  manifestFormat: number;
  tool: string;
  identity: string;
  cluster: string;
}

/**
 * The directory of the CLI's cache files: $REPLICATOR_CACHE_DIR, else
 * $XDG_CACHE_HOME/replicator, else ~/.cache/replicator. Undefined (no cache)
 * when REPLICATOR_MANIFEST_CACHE=off or no home directory is known.
 */
export function manifestCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if ((env.REPLICATOR_MANIFEST_CACHE ?? "").toLowerCase() === "off") return undefined;
  return replicatorCacheDir("manifests", env);
}

/** The file that caches one cluster of one repository. */
export function manifestCacheFile(dir: string, scope: CacheScope): string {
  const id = createHash("sha256").update(scope.identity).digest("hex").slice(0, 32);
  return path.join(dir, `${id}.${scope.cluster}.jsonl`);
}

function headerOf(scope: CacheScope): Header {
  return { cache: "replicator-manifests", format: FILE_FORMAT, manifestFormat: FORMAT_VERSION, tool: TOOL_VERSION, identity: scope.identity, cluster: scope.cluster };
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/**
 * Load a cache file. A missing, unreadable, foreign or damaged file gives an
 * empty cache; a damaged entry is left out (its manifest is read again).
 * Never throws.
 */
export async function loadManifestCache(file: string, scope: CacheScope): Promise<ManifestCache> {
  const cache = new ManifestCache();
  let text: string;
  try {
    if ((await stat(file)).size > MAX_FILE_BYTES) return cache;
    text = await readFile(file, "utf8");
  } catch {
    return cache;
  }
  const lines = text.split("\n");
  const expected = JSON.stringify(headerOf(scope));
  if (lines[0] !== expected) return cache;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string;
    // `<sha256 of the JSON> <JSON>`: a line that was cut, flipped or edited does not match its hash.
    if (line.length < 66 || line[64] !== " ") continue;
    const json = line.slice(65);
    if (sha256(json) !== line.slice(0, 64)) continue;
    try {
      const e = JSON.parse(json) as { k?: unknown; v?: unknown; m?: unknown };
      if (typeof e.k !== "string" || typeof e.v !== "string" || typeof e.m !== "object" || e.m === null) continue;
      cache.load(e.k, e.v, e.m as Manifest);
    } catch {
      continue;
    }
  }
  return cache;
}

/**
 * Write the entries the last listing used (so deleted backups drop out),
 * atomically (a temp file renamed over the old one: a reader sees the old file
 * or the new one), 0600 in a 0700 directory. Skipped when nothing changed.
 * Throws on I/O errors: the caller decides whether that matters (the CLI ignores it).
 */
export async function saveManifestCache(file: string, scope: CacheScope, cache: ManifestCache): Promise<void> {
  cache.sweep();
  const dir = path.dirname(file);
  if (!cache.dirty) {
    // Still mark it recently used, so the least-recently-used cleanup keeps it.
    const now = new Date();
    await utimes(file, now, now).catch(() => undefined);
    return;
  }
  const parts: string[] = [JSON.stringify(headerOf(scope))];
  for (const [k, e] of cache.all()) {
    const json = JSON.stringify({ k, v: e.validator, m: e.manifest });
    parts.push(`${sha256(json)} ${json}`);
  }
  await ensureDir(dir);
  const tmp = `${file}.tmp-${randomBytes(6).toString("hex")}`;
  try {
    await writeFile(tmp, `${parts.join("\n")}\n`, { mode: 0o600, flag: "wx" });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await pruneCacheDir(dir, file);
}

/**
 * mkdir -p, one level at a time: Node's recursive mkdir never returns for a
 * path under /proc (it retries ENOENT forever); here every level is tried once.
 */
async function ensureDir(dir: string): Promise<void> {
  const missing: string[] = [];
  for (let d = dir; ; d = path.dirname(d)) {
    const s = await stat(d).catch(() => undefined);
    if (s) break;
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    await mkdir(d, { mode: 0o700 }).catch((err: unknown) => {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    });
  }
}

/** Remove the least recently used cache files beyond MAX_FILES, and temp files left by a killed run. */
async function pruneCacheDir(dir: string, keep: string): Promise<void> {
  const names = await readdir(dir);
  const files: { file: string; at: number }[] = [];
  for (const name of names) {
    const file = path.join(dir, name);
    const s = await stat(file).catch(() => undefined);
    if (!s?.isFile()) continue;
    if (/\.tmp-[0-9a-f]{12}$/.test(name)) {
      if (Date.now() - s.mtimeMs > 3_600_000) await rm(file, { force: true });
      continue;
    }
    if (name.endsWith(".jsonl") && file !== keep) files.push({ file, at: s.mtimeMs });
  }
  files.sort((a, b) => b.at - a.at);
  for (const f of files.slice(MAX_FILES - 1)) await rm(f.file, { force: true });
}
