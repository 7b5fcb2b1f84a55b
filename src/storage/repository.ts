// Catalog operations with I/O: list, read, claim, delete, prune, verify and
// lease backups of one cluster in one repository. The rules live in catalog.ts.
//
// Faults are not verdicts: a manifest that could not be READ (a storage fault,
// after retries) makes list/prune/verify throw that fault; only a manifest that
// was read and failed to parse is "corrupt", and one of a newer format is
// "unknown format". Neither is ever counted or deleted by retention.
//
// Deletes and restore leases use two flags on a strongly consistent store:
// delete writes a tombstone, then reads the leases; a lease is written, then
// the tombstone and manifest are read. Whichever write comes second sees the
// first, so a restore and a delete never both proceed.
import { createHash, randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { pipeline as pipelineCb, Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badInput, failed, isReplicatorError, ReplicatorError } from "../lib/errors.js";
import {
  CLAIM,
  IN_USE_DIR,
  MANIFEST,
  TOMBSTONE,
  UNREADABLE_LEASE_PROTECTS_MS,
  claimSchema,
  leaseActive,
  leaseSchema,
  parseBackupName,
  parseManifest,
  planRetention,
  scanListing,
  validateClusterName,
  type BackupEntry,
  type Claim,
  type IncompleteEntry,
  type Lease,
  type Manifest,
  type RetentionPlan,
  type Scan,
  type UnusableEntry,
} from "./catalog.js";
import { manifestValidator, type ManifestCache } from "./manifest-cache.js";
import { checkedManifest, decodeSegment, encodeSegment, MAX_SEGMENT_BYTES, newSegmentKey, type IndexEntry, type RawEntry } from "./index-segments.js";
import { joinKey, readObject, withRetries, type ObjectInfo, type ObjectStore } from "./object-store.js";

export const DEFAULT_INCOMPLETE_GRACE_MS = 6 * 60 * 60 * 1000;
export const DEFAULT_LEASE_TTL_MS = 10 * 60 * 1000;
/** Manifests read at once while listing (those the manifest cache does not hold). */
const LIST_CONCURRENCY = 16;

export interface Listing {
  /** Backups whose manifest was read, parsed and verified, oldest first; none that is being deleted. */
  backups: BackupEntry[];
  incomplete: IncompleteEntry[];
  /** Backups whose manifest was read but is corrupt or of a newer format. */
  corrupt: UnusableEntry[];
}

export interface LeaseHandle {
  /** Stop renewing and remove the lease (waits for a renewal in flight). */
  release(): Promise<void>;
  /**
   * Aborts with a ReplicatorError: LeaseLost when the lease could not be
   * renewed before it would expire; BackupGone when a forced delete removed the backup.
   */
  readonly signal: AbortSignal;
}

export interface LeaseOptions {
  /** How long one write of the lease holds (default 10 min). */
  ttlMs?: number;
  /** How often it is rewritten with a new expiry (default ttl/4). */
  renewEveryMs?: number;
  /** How long to wait for a delete under way (its tombstone) to finish or back off (default 30 s). */
  deleteWaitMs?: number;
}

/** A delete's tombstone lives for one lease check or one deletion: seconds, unless it crashed. */
const DEFAULT_DELETE_WAIT_MS = 30_000;

function reasonOf(err: unknown): string | undefined {
  return isReplicatorError(err) ? err.reason : undefined;
}

export interface RepositoryOptions {
  /**
   * Manifests already read (see manifest-cache.ts): a listing reads only the
   * manifests it does not hold, or whose listed object is not the one cached.
   */
  manifestCache?: ManifestCache | undefined;
  /**
   * Let list() take manifests from the repository's manifest index
   * (index-segments.ts) when many are not cached, and rewrite the index when it
   * had to read many. Default: on with a manifestCache (the listings that show
   * backups: `list`, `verify`'s choice, the operator's catalog), off without one:
   * restore, PITR, provisioning and retention read the manifests themselves.
   * REPLICATOR_INDEX=off turns the index off everywhere (prune too).
   */
  index?: boolean | undefined;
  /** Debug notes (an index segment ignored or not written): never verdicts. */
  debug?: ((detail: Record<string, unknown>, msg: string) => void) | undefined;
}

/** What a listing did with the index, for deciding whether to rewrite it. */
interface IndexUse {
  /** The segments were read. */
  read: boolean;
  /** Entries in the segments read (duplicates and entries of backups gone included). */
  entriesRead: number;
  /** Manifests the index supplied. */
  fromIndex: number;
  /** Manifests read from the store and parsed (neither cached nor in the index). */
  manifestReads: number;
}

/** The index is read only when at least this many manifests are not in the manifest cache (fewer are read one by one). */
const INDEX_READ_MIN = 8;
/** A listing that read more manifests than this (the index lacked them) writes a fresh index. */
const INDEX_WRITE_AFTER_READS = 8;
/** More index segments than this are compacted into one by the next listing. */
const INDEX_MAX_SEGMENTS = 8;

/** REPLICATOR_INDEX=off: no Repository reads or writes the manifest index. */
export function indexAllowed(env: NodeJS.ProcessEnv = process.env): boolean {
  return (env.REPLICATOR_INDEX ?? "").toLowerCase() !== "off";
}

export class Repository {
  private readonly manifestCache: ManifestCache | undefined;
  /** list() reads (and rewrites) the index. */
  private readonly indexOn: boolean;
  /** prune drops the backups it deleted from the index. */
  private readonly indexWrites: boolean;
  private readonly debug: (detail: Record<string, unknown>, msg: string) => void;

  constructor(
    readonly store: ObjectStore,
    readonly cluster: string,
    opts: RepositoryOptions = {},
  ) {
    validateClusterName(cluster);
    this.manifestCache = opts.manifestCache;
    this.indexWrites = indexAllowed();
    this.indexOn = this.indexWrites && (opts.index ?? opts.manifestCache !== undefined);
    this.debug = opts.debug ?? (() => undefined);
  }

  get where(): string {
    return `${this.store.location.replace(/\/+$/, "")}/${this.cluster}`;
  }

  key(...parts: string[]): string {
    return joinKey(this.cluster, ...parts);
  }

  private async scan(): Promise<Scan> {
    const objects = await this.store.list(`${this.cluster}/`);
    return scanListing(objects.map((o) => ({ ...o, key: o.key.slice(this.cluster.length + 1) })));
  }

  /**
   * Complete backups, oldest first, each with its verified manifest. Throws the
   * storage fault when a manifest cannot be read: never a partial listing.
   */
  async list(): Promise<Listing> {
    const scan = await this.scan();
    const { index, ...listing } = await this.readListing(scan);
    await this.maintainIndex(scan, listing.backups, index);
    return listing;
  }

  private async readListing(scan: Scan): Promise<Listing & { index: IndexUse }> {
    const results: ({ entry: BackupEntry } | { corrupt: UnusableEntry } | undefined)[] = scan.complete.map(() => undefined);
    const index: IndexUse = { read: false, entriesRead: 0, fromIndex: 0, manifestReads: 0 };
    const entryOf = (name: string, manifest: Manifest): { entry: BackupEntry } | undefined => {
      const parsed = parseBackupName(name);
      if (!parsed) return undefined;
      return { entry: { name, time: parsed.time, method: parsed.method, source: parsed.source, manifest, size: manifest.objects.reduce((s, o) => s + o.size, 0) } };
    };
    // 1. The manifest cache: the listed manifest object, unchanged since a copy was cached.
    const misses: number[] = [];
    scan.complete.forEach((name, i) => {
      const info = scan.manifests.get(name);
      const validator = info && this.manifestCache ? manifestValidator(info) : undefined;
      const cached = validator !== undefined ? this.manifestCache?.get(this.key(name, MANIFEST), validator) : undefined;
      if (cached?.name === name) results[i] = entryOf(name, cached);
      else misses.push(i);
    });
    // 2. The index, when enough manifests are left to read that its few objects are worth reading.
    let left = misses;
    if (this.indexOn && misses.length >= INDEX_READ_MIN && scan.indexSegments.length > 0) {
      const entries = await this.readIndex(scan, index);
      left = [];
      for (const i of misses) {
        const name = scan.complete[i] as string;
        const info = scan.manifests.get(name);
        const validator = info ? manifestValidator(info) : undefined;
        let manifest: Manifest | undefined;
        if (validator !== undefined) {
          for (const e of entries.get(name) ?? []) {
            if (e.validator !== validator) continue;
            manifest = checkedManifest(e, name);
            if (manifest) break;
          }
        }
        if (!manifest || validator === undefined) {
          left.push(i);
          continue;
        }
        results[i] = entryOf(name, manifest);
        index.fromIndex++;
        this.manifestCache?.set(this.key(name, MANIFEST), validator, manifest);
      }
    }
    // 3. The manifests themselves.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < left.length) {
        const i = left[next++] as number;
        const name = scan.complete[i] as string;
        if (!parseBackupName(name)) continue;
        const info = scan.manifests.get(name);
        const validator = info ? manifestValidator(info) : undefined;
        try {
          const manifest = await this.readManifest(name);
          results[i] = entryOf(name, manifest);
          index.manifestReads++;
          if (validator !== undefined) this.manifestCache?.set(this.key(name, MANIFEST), validator, manifest);
        } catch (err) {
          const reason = reasonOf(err);
          if (reason === "CorruptManifest" || reason === "UnknownFormat") {
            results[i] = { corrupt: { name, reason, error: (err as Error).message } };
          } else if (reason === "CorruptBackup") {
            // The store itself says the bytes it holds do not match the checksum it
            // stored with them: damage at rest, the same verdict as unparsable JSON.
            results[i] = { corrupt: { name, reason: "CorruptManifest", error: (err as Error).message } };
          } else if (reason === "BackupNotFound") {
            // Deleted between the listing and the read: it is gone, not corrupt. But a
            // manifest still there that cannot be read is a failing store, not a missing backup.
            if (await this.store.head(this.key(name, MANIFEST))) {
              throw failed(
                "StorageError",
                `${this.where}/${name}/${MANIFEST} is listed but reading it returned "not found"; the storage is failing or inconsistent, try again`,
                { cause: err },
              );
            }
          } else {
            throw err;
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, left.length) }, worker));
    const backups: BackupEntry[] = [];
    const corrupt: UnusableEntry[] = [];
    for (const r of results) {
      if (!r) continue;
      if ("entry" in r) backups.push(r.entry);
      else corrupt.push(r.corrupt);
    }
    return { backups, incomplete: scan.incomplete, corrupt, index };
  }

  /**
   * Every listed index segment's entries by backup name. A segment that is gone
   * (compacted meanwhile), does not parse, or cannot be read (a fault, after
   * retries) is left out with a debug note: the manifests it would have supplied
   * are read one by one, under the usual fault rules. Never throws.
   */
  private async readIndex(scan: Scan, use: IndexUse): Promise<Map<string, RawEntry[]>> {
    use.read = true;
    const out = new Map<string, RawEntry[]>();
    const segments = scan.indexSegments.filter((o) => o.size <= MAX_SEGMENT_BYTES);
    let next = 0;
    const decoded: (RawEntry[] | undefined)[] = segments.map(() => undefined);
    const worker = async (): Promise<void> => {
      while (next < segments.length) {
        const i = next++;
        const key = this.key((segments[i] as ObjectInfo).key);
        let buf: Buffer;
        try {
          buf = await readObject(this.store, key);
        } catch (err) {
          if (reasonOf(err) === "NotFound") {
            this.debug({ key }, "manifest index segment gone since the listing (compacted): ignored");
          } else {
            this.debug({ key, reason: reasonOf(err), err: (err as Error).message }, "manifest index segment could not be read: its manifests are read one by one");
          }
          continue;
        }
        const entries = decodeSegment(buf, this.cluster);
        if (typeof entries === "string") {
          this.debug({ key, problem: entries }, "manifest index segment ignored");
          continue;
        }
        decoded[i] = entries;
      }
    };
    await Promise.all(Array.from({ length: Math.min(LIST_CONCURRENCY, segments.length) }, worker));
    for (const entries of decoded) {
      for (const e of entries ?? []) {
        use.entriesRead++;
        const l = out.get(e.name);
        if (l) l.push(e);
        else out.set(e.name, [e]);
      }
    }
    return out;
  }

  /**
   * Write a fresh index segment of `backups` (from this listing) and then delete the
   * segments the listing showed, when it is worth it (or `force`): this listing
   * read many manifests the index lacked, or there are many segments, or the
   * segments read hold many entries the listing no longer confirms. Safe with
   * concurrent writers: a segment is only ever created whole under a new key, and
   * only the segments this listing showed are deleted, after the new one is
   * written; every entry they held that the listing confirms is in the new one.
   * A failure costs speed only (a debug note), never the listing.
   */
  private async maintainIndex(scan: Scan, backups: BackupEntry[], use: IndexUse, force = false): Promise<void> {
    if (!this.indexWrites) return;
    const worth =
      force ||
      (this.indexOn &&
        (use.manifestReads > INDEX_WRITE_AFTER_READS ||
          scan.indexSegments.length > INDEX_MAX_SEGMENTS ||
          (use.read && use.entriesRead > backups.length + Math.max(INDEX_WRITE_AFTER_READS, backups.length / 4))));
    if (!worth) return;
    const entries: IndexEntry[] = [];
    for (const b of backups) {
      const info = scan.manifests.get(b.name);
      const validator = info ? manifestValidator(info) : undefined;
      if (validator !== undefined) entries.push({ name: b.name, validator, manifest: b.manifest });
    }
    const now = new Date();
    const key = this.key(newSegmentKey(now));
    try {
      if (entries.length > 0) {
        const body = encodeSegment(this.cluster, entries, now);
        await withRetries(() => this.store.put(key, body));
      }
      const old = scan.indexSegments.map((o) => this.key(o.key)).filter((k) => k !== key);
      if (old.length > 0) await withRetries(() => this.store.delete(old));
      this.debug({ key: entries.length > 0 ? key : undefined, entries: entries.length, replaced: old.length }, "manifest index written");
    } catch (err) {
      this.debug({ key, reason: reasonOf(err), err: (err as Error).message }, "manifest index not written (costs speed only)");
    }
  }

  async readManifest(name: string): Promise<Manifest> {
    this.checkName(name);
    const key = this.key(name, MANIFEST);
    let text: string;
    try {
      text = (await readObject(this.store, key)).toString("utf8");
    } catch (err) {
      if (reasonOf(err) === "NotFound") {
        throw badInput("BackupNotFound", `backup ${name} not found (or incomplete) in ${this.where}; \`replicator list\` shows what exists`);
      }
      throw err;
    }
    const m = parseManifest(text, `${this.where}/${name}/${MANIFEST}`);
    if (m.name !== name) {
      throw badInput("CorruptManifest", `manifest of ${name} names a different backup (${m.name}); the repository is inconsistent`);
    }
    return m;
  }

  async exists(name: string): Promise<boolean> {
    const objs = await this.store.list(`${this.key(name)}/`);
    return objs.length > 0;
  }

  /**
   * Reserve a backup name before writing anything under it: a create-only
   * write of `<name>/claim.json`. Throws NameTaken when another backup has it.
   */
  async claimName(name: string, info: { host: string; pid: number }): Promise<void> {
    this.checkName(name);
    const claim: Claim = { name, host: info.host, pid: info.pid, claimedAt: new Date().toISOString() };
    const key = this.key(name, CLAIM);
    try {
      await withRetries(() => this.store.put(key, `${JSON.stringify(claim)}\n`, { ifNoneMatch: true }));
    } catch (err) {
      if (reasonOf(err) !== "ObjectExists") throw err;
      const by = await this.readClaim(name).catch(() => undefined);
      throw failed("NameTaken", `backup name ${name} is already taken in ${this.where}${by ? ` (claimed by ${by.host} pid ${by.pid} at ${by.claimedAt})` : ""}; retry in a second for a new name`);
    }
    // A backup written before claims existed has a manifest but no claim.
    if (await this.store.head(this.key(name, MANIFEST))) {
      await this.store.delete([key]);
      throw failed("NameTaken", `backup ${name} already exists in ${this.where}; retry in a second for a new name`);
    }
  }

  private async readClaim(name: string): Promise<Claim | undefined> {
    const res = claimSchema.safeParse(JSON.parse((await readObject(this.store, this.key(name, CLAIM))).toString("utf8")));
    return res.success ? res.data : undefined;
  }

  /** The commit point of a backup: a create-only write. Throws NameTaken when a manifest is already there. */
  async writeManifest(m: Manifest): Promise<void> {
    try {
      await withRetries(() => this.store.put(this.key(m.name, MANIFEST), `${JSON.stringify(m, null, 2)}\n`, { ifNoneMatch: true }));
    } catch (err) {
      if (reasonOf(err) === "ObjectExists") {
        throw failed("NameTaken", `backup ${m.name} already has a manifest in ${this.where}: another backup took the same name; nothing was overwritten`, { cause: err });
      }
      throw err;
    }
  }

  /**
   * Delete one backup. Writes a tombstone first, then checks the leases:
   * refuses (BackupInUse) a backup a restore holds, unless `force`. The
   * manifest goes first, the tombstone last.
   */
  async delete(name: string, opts: { force?: boolean; now?: Date } = {}): Promise<void> {
    this.checkName(name);
    const first = await this.store.list(`${this.key(name)}/`);
    if (first.length === 0) {
      throw badInput("BackupNotFound", `backup ${name} not found in ${this.where}`);
    }
    const tombstone = this.key(name, TOMBSTONE);
    await withRetries(() => this.store.put(tombstone, `${JSON.stringify({ name, host: hostname(), pid: process.pid, at: new Date().toISOString() })}\n`));
    if (!opts.force) {
      let leases: Lease[];
      try {
        leases = await this.activeLeases(name, opts.now ?? new Date());
      } catch (err) {
        await this.store.delete([tombstone]).catch(() => undefined);
        throw err;
      }
      if (leases.length > 0) {
        await withRetries(() => this.store.delete([tombstone]));
        const holders = [...new Set(leases.map((l) => l.holder))];
        throw badInput("BackupInUse", `backup ${name} is in use by ${holders.slice(0, 3).join(", ")}${holders.length > 3 ? ` and ${holders.length - 3} more` : ""}; wait for the restore to finish or use --force`);
      }
    }
    // The manifest goes first, so a half-deleted backup is never listed as complete.
    const keys = (await this.store.list(`${this.key(name)}/`)).map((o) => o.key);
    const manifestKey = this.key(name, MANIFEST);
    if (keys.includes(manifestKey)) await withRetries(() => this.store.delete([manifestKey]));
    await withRetries(() => this.store.delete(keys.filter((k) => k !== manifestKey && k !== tombstone)));
    await withRetries(() => this.store.delete([tombstone]));
  }

  /**
   * The unexpired leases on a backup. A lease that cannot be read because of
   * a fault throws; one that cannot be parsed counts as active for 24 h after it was written.
   */
  async activeLeases(name: string, now: Date): Promise<Lease[]> {
    const objs = await this.store.list(`${this.key(name, IN_USE_DIR)}/`);
    const out: Lease[] = [];
    for (const o of objs) {
      let text: string;
      try {
        text = (await readObject(this.store, o.key)).toString("utf8");
      } catch (err) {
        if (reasonOf(err) === "NotFound") continue; // released meanwhile
        throw err;
      }
      let lease: Lease | undefined;
      try {
        lease = leaseSchema.parse(JSON.parse(text));
      } catch {
        const written = o.lastModified?.getTime() ?? now.getTime();
        const until = new Date(written + UNREADABLE_LEASE_PROTECTS_MS);
        if (until.getTime() > now.getTime()) {
          out.push({ id: o.key.slice(o.key.lastIndexOf("/") + 1).replace(/\.json$/, ""), purpose: "unknown", holder: `an unreadable lease (${o.key})`, expiresAt: until.toISOString() });
        }
        continue;
      }
      if (leaseActive(lease, now)) out.push(lease);
    }
    return out;
  }

  /**
   * Mark a backup in use (by a restore) until released. The lease is renewed
   * in the background; `signal` aborts with LeaseLost if renewal keeps
   * failing until it would expire. Throws BackupGone when the backup is gone
   * (choose again); while a delete is under way (its tombstone) it waits for
   * that delete to finish or back off, up to deleteWaitMs (BackupBeingDeleted).
   */
  async acquireLease(name: string, purpose: string, holder: string, opts: LeaseOptions = {}): Promise<LeaseHandle> {
    this.checkName(name);
    const ttlMs = opts.ttlMs ?? DEFAULT_LEASE_TTL_MS;
    const renewEveryMs = opts.renewEveryMs ?? Math.max(1, Math.floor(ttlMs / 4));
    const id = `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
    const key = this.key(name, IN_USE_DIR, `${id}.json`);
    let expiresAt = Date.now() + ttlMs;
    const write = async (until: number): Promise<void> => {
      const lease: Lease = { id, purpose, holder, expiresAt: new Date(until).toISOString() };
      await this.store.put(key, JSON.stringify(lease));
    };
    await withRetries(() => write(expiresAt));
    // The second flag: a delete that started before our lease was written is seen here. A
    // tombstone alone is not a verdict: that delete either read the leases before ours was
    // written (it goes on: the manifest disappears) or sees ours and backs off (the tombstone
    // disappears). Wait for one of the two, keeping our lease.
    const waitUntil = Date.now() + (opts.deleteWaitMs ?? DEFAULT_DELETE_WAIT_MS);
    let state: "ok" | "gone" | "stuck";
    try {
      for (;;) {
        const tombstone = await this.store.head(this.key(name, TOMBSTONE));
        if ((await this.store.head(this.key(name, MANIFEST))) === undefined) {
          state = "gone";
          break;
        }
        if (tombstone === undefined) {
          state = "ok";
          break;
        }
        if (Date.now() > waitUntil) {
          state = "stuck";
          break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    } catch (err) {
      await this.store.delete([key]).catch(() => undefined);
      throw err;
    }
    if (state !== "ok") {
      await withRetries(() => this.store.delete([key]));
      if (state === "gone") throw failed("BackupGone", `backup ${name} was deleted (by retention or delete) while this restore chose it`);
      throw failed(
        "BackupBeingDeleted",
        `backup ${name} in ${this.where} has been marked for deletion (${this.key(name, TOMBSTONE)}) for over ${Math.round((opts.deleteWaitMs ?? DEFAULT_DELETE_WAIT_MS) / 1000)}s: a delete or prune that stopped half way leaves it; run \`replicator delete ${name}\` to finish deleting it, or restore another backup`,
      );
    }

    const controller = new AbortController();
    let released = false;
    let inFlight: Promise<void> | undefined;
    const lose = (cause: unknown): void => {
      if (controller.signal.aborted || released) return;
      clearInterval(timer);
      controller.abort(
        failed("LeaseLost", `lost the lease on backup ${name} in ${this.where}: it could not be renewed before it expired; stopping so that retention cannot delete the backup in use`, { cause }),
      );
    };
    const tick = (): void => {
      if (released || controller.signal.aborted) return;
      // The next attempt might come after the lease expired (timers drift): it is lost.
      const tooLate = (): boolean => Date.now() + 1.5 * renewEveryMs >= expiresAt;
      if (inFlight) {
        if (tooLate()) lose(new Error("a renewal is still pending"));
        return;
      }
      const until = Date.now() + ttlMs;
      inFlight = write(until)
        .then(async () => {
          expiresAt = until;
          // Only a forced delete removes a manifest under a lease: the backup is gone.
          if (!(await this.store.head(this.key(name, MANIFEST)))) {
            released = true;
            clearInterval(timer);
            await this.store.delete([key]).catch(() => undefined);
            controller.abort(failed("BackupGone", `backup ${name} was deleted (with --force) while this restore was using it`));
          }
        })
        .catch((err: unknown) => {
          if (tooLate()) lose(err);
        })
        .finally(() => {
          inFlight = undefined;
        });
    };
    const timer = setInterval(tick, renewEveryMs);
    timer.unref();
    return {
      signal: controller.signal,
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        await inFlight;
        await withRetries(() => this.store.delete([key]));
      },
    };
  }

  /**
   * Apply retention: keep the newest `retain` backups whose manifest was read
   * and verified. Corrupt or newer-format backups are never counted nor
   * deleted (plan.unusable). Any fault while reading throws before anything is
   * deleted. Deletes through the lease-checking path: a backup a restore
   * leases meanwhile is kept (keptInUse). `inUse` adds backups known to be in use elsewhere.
   */
  async prune(opts: { retain: number; now?: Date; incompleteGraceMs?: number; dryRun?: boolean; inUse?: Set<string> }): Promise<RetentionPlan> {
    const now = opts.now ?? new Date();
    const graceMs = opts.incompleteGraceMs ?? DEFAULT_INCOMPLETE_GRACE_MS;
    const scan = await this.scan();
    const listing = await this.readListing(scan);
    const inUse = new Set<string>(opts.inUse);
    for (const name of scan.leasesByBackup.keys()) {
      if ((await this.activeLeases(name, now)).length > 0) inUse.add(name);
    }
    const plan = planRetention({
      complete: listing.backups,
      unusable: listing.corrupt,
      incomplete: scan.incomplete,
      inUse,
      retain: opts.retain,
      now,
      incompleteGraceMs: graceMs,
    });
    // A delete that died after its tombstone: finish it after the grace period.
    for (const [name, at] of scan.deleting) {
      if (!inUse.has(name) && now.getTime() - (at?.getTime() ?? now.getTime()) > graceMs) plan.abandon.push(name);
    }
    if (opts.dryRun) return plan;
    // Leases left in the prefix of a backup that no longer exists (a restore that died after a forced delete).
    for (const [name, leaseKeys] of scan.leasesByBackup) {
      const others = (scan.keysByBackup.get(name) ?? []).length - leaseKeys.length;
      if (others === 0 && !inUse.has(name)) {
        await withRetries(() => this.store.delete(leaseKeys.map((k) => joinKey(this.cluster, k))));
      }
    }
    const expired: string[] = [];
    for (const name of plan.expire) {
      try {
        await this.delete(name, { now });
        expired.push(name);
      } catch (err) {
        const reason = reasonOf(err);
        if (reason === "BackupNotFound") continue; // deleted meanwhile by someone else
        if (reason !== "BackupInUse") throw err;
        plan.keptInUse.push(name);
      }
    }
    plan.expire = expired;
    for (const name of plan.abandon) {
      await withRetries(() => this.store.delete((scan.keysByBackup.get(name) ?? []).map((k) => joinKey(this.cluster, k))));
    }
    // The backups it deleted leave the index (with the listing's other reasons to rewrite it).
    const gone = new Set(expired);
    await this.maintainIndex(scan, listing.backups.filter((b) => !gone.has(b.name)), listing.index, expired.length > 0 && scan.indexSegments.length > 0);
    return plan;
  }

  /**
   * Re-read every object of a backup and check its size and sha256. A read
   * fault (after retries) throws the fault: it says nothing about the data.
   */
  async verify(name: string): Promise<{ name: string; objects: { name: string; size: number; ok: boolean; error?: string }[] }> {
    const m = await this.readManifest(name);
    const results: { name: string; size: number; ok: boolean; error?: string }[] = [];
    for (const o of m.objects) {
      let got: { size: number; sha256: string };
      try {
        got = await withRetries(async () => hashStream(await this.store.get(this.key(name, o.name))));
      } catch (err) {
        if (reasonOf(err) === "NotFound") {
          results.push({ name: o.name, size: 0, ok: false, error: "missing although the manifest lists it" });
          continue;
        }
        if (reasonOf(err) === "CorruptBackup") {
          results.push({ name: o.name, size: 0, ok: false, error: (err as Error).message });
          continue;
        }
        throw err;
      }
      if (got.size !== o.size) {
        results.push({ name: o.name, size: got.size, ok: false, error: `size ${got.size} != manifest ${o.size} (truncated or replaced)` });
      } else if (got.sha256 !== o.sha256) {
        results.push({ name: o.name, size: got.size, ok: false, error: `sha256 mismatch (corrupt object)` });
      } else {
        results.push({ name: o.name, size: got.size, ok: true });
      }
    }
    return { name, objects: results };
  }

  /**
   * Open an object of a backup for restore: the stream fails with a
   * CorruptBackup error at its end if the size or sha256 differ from the
   * manifest. Destroying the returned stream destroys the storage source at once.
   */
  async openVerified(name: string, objectName: string, manifest: Manifest): Promise<Readable> {
    const o = manifest.objects.find((x) => x.name === objectName);
    if (!o) throw badInput("CorruptManifest", `backup ${name} has no object ${objectName}`);
    const head = await this.store.head(this.key(name, o.name));
    if (!head) {
      throw failed("CorruptBackup", `backup ${name} is missing ${o.name} although its manifest lists it; the backup is damaged`);
    }
    if (head.size !== o.size) {
      throw failed("CorruptBackup", `backup ${name}: ${o.name} is ${head.size} bytes but the manifest says ${o.size}; the object was truncated or replaced`);
    }
    const src = await this.store.get(this.key(name, o.name));
    const check = verifyingTransform(o.size, o.sha256, `${name}/${o.name}`);
    // The error surfaces on `check` (the returned stream); pipeline destroys `src` with it.
    return pipelineCb(src, check, () => undefined);
  }

  private checkName(name: string): void {
    if (!parseBackupName(name)) {
      throw badInput("InvalidName", `"${name}" is not a backup name (expected yyyymmddThhmmssZ-method-source)`);
    }
  }
}

export function isLeaseLost(err: unknown): err is ReplicatorError {
  return reasonOf(err) === "LeaseLost";
}

export async function hashStream(stream: Readable): Promise<{ size: number; sha256: string }> {
  const h = createHash("sha256");
  let size = 0;
  await pipeline(stream, async function (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      h.update(chunk);
      size += chunk.length;
    }
  });
  return { size, sha256: h.digest("hex") };
}

/** Passes bytes through; errors at the end if the size or sha256 is wrong. */
export function verifyingTransform(size: number, sha256: string, what: string): Transform {
  const h = createHash("sha256");
  let n = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      n += chunk.length;
      cb(null, chunk);
    },
    flush(cb) {
      const got = h.digest("hex");
      if (n !== size) cb(failed("CorruptBackup", `${what}: read ${n} bytes, manifest says ${size}; the object is truncated`));
      else if (got !== sha256) cb(failed("CorruptBackup", `${what}: sha256 mismatch; the stored object is corrupt`));
      else cb();
    },
  });
}
