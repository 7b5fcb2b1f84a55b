// Catalog operations with I/O: list, read, delete, prune, verify and lease
// backups of one cluster in one repository. The rules live in catalog.ts.
import { createHash, randomBytes } from "node:crypto";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { badInput, failed } from "../lib/errors.js";
import {
  IN_USE_DIR,
  MANIFEST,
  leaseActive,
  leaseSchema,
  parseBackupName,
  parseManifest,
  planRetention,
  scanListing,
  validateClusterName,
  type BackupEntry,
  type IncompleteEntry,
  type Lease,
  type Manifest,
  type RetentionPlan,
} from "./catalog.js";
import { joinKey, readAll, type ObjectStore } from "./object-store.js";

export const DEFAULT_INCOMPLETE_GRACE_MS = 6 * 60 * 60 * 1000;

export class Repository {
  constructor(
    readonly store: ObjectStore,
    readonly cluster: string,
  ) {
    validateClusterName(cluster);
  }

  get where(): string {
    return `${this.store.location.replace(/\/+$/, "")}/${this.cluster}`;
  }

  key(...parts: string[]): string {
    return joinKey(this.cluster, ...parts);
  }

  private async scan() {
    const objects = await this.store.list(`${this.cluster}/`);
    return scanListing(objects.map((o) => ({ ...o, key: o.key.slice(this.cluster.length + 1) })));
  }

  /** Complete backups, oldest first. Backups whose manifest is unreadable are reported, not hidden. */
  async list(): Promise<{ backups: BackupEntry[]; incomplete: IncompleteEntry[]; corrupt: { name: string; error: string }[] }> {
    const scan = await this.scan();
    const backups: BackupEntry[] = [];
    const corrupt: { name: string; error: string }[] = [];
    for (const name of scan.complete) {
      const parsed = parseBackupName(name);
      if (!parsed) continue;
      try {
        const manifest = await this.readManifest(name);
        backups.push({
          name,
          time: parsed.time,
          method: parsed.method,
          source: parsed.source,
          manifest,
          size: manifest.objects.reduce((s, o) => s + o.size, 0),
        });
      } catch (err) {
        corrupt.push({ name, error: err instanceof Error ? err.message : String(err) });
      }
    }
    return { backups, incomplete: scan.incomplete, corrupt };
  }

  async readManifest(name: string): Promise<Manifest> {
    if (!parseBackupName(name)) {
      throw badInput("InvalidName", `"${name}" is not a backup name (expected yyyymmddThhmmssZ-method-source)`);
    }
    const key = this.key(name, MANIFEST);
    let text: string;
    try {
      text = (await readAll(await this.store.get(key))).toString("utf8");
    } catch (err) {
      if ((err as { reason?: string }).reason === "NotFound") {
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

  async writeManifest(m: Manifest): Promise<void> {
    await this.store.put(this.key(m.name, MANIFEST), `${JSON.stringify(m, null, 2)}\n`);
  }

  /** Delete one backup. Refuses one that a restore is using unless `force`. */
  async delete(name: string, opts: { force?: boolean; now?: Date } = {}): Promise<void> {
    if (!parseBackupName(name)) {
      throw badInput("InvalidName", `"${name}" is not a backup name (expected yyyymmddThhmmssZ-method-source)`);
    }
    const keys = (await this.store.list(`${this.key(name)}/`)).map((o) => o.key);
    if (keys.length === 0) {
      throw badInput("BackupNotFound", `backup ${name} not found in ${this.where}`);
    }
    if (!opts.force) {
      const leases = await this.activeLeases(name, opts.now ?? new Date());
      if (leases.length > 0) {
        throw badInput("BackupInUse", `backup ${name} is in use by ${leases.map((l) => l.holder).join(", ")}; wait for the restore to finish or use --force`);
      }
    }
    // The manifest goes first, so a half-deleted backup is never listed as complete.
    const manifestKey = this.key(name, MANIFEST);
    if (keys.includes(manifestKey)) await this.store.delete([manifestKey]);
    await this.store.delete(keys.filter((k) => k !== manifestKey));
  }

  async activeLeases(name: string, now: Date): Promise<Lease[]> {
    const objs = await this.store.list(`${this.key(name, IN_USE_DIR)}/`);
    const out: Lease[] = [];
    for (const o of objs) {
      try {
        const lease = leaseSchema.parse(JSON.parse((await readAll(await this.store.get(o.key))).toString("utf8")));
        if (leaseActive(lease, now)) out.push(lease);
      } catch {
        // An unreadable lease protects nothing; prune removes it with its backup.
      }
    }
    return out;
  }

  /** Mark a backup in use (by a restore) until released or expired. */
  async acquireLease(name: string, purpose: string, holder: string, ttlMs: number): Promise<{ release: () => Promise<void> }> {
    const id = `${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
    const lease: Lease = { id, purpose, holder, expiresAt: new Date(Date.now() + ttlMs).toISOString() };
    const key = this.key(name, IN_USE_DIR, `${id}.json`);
    await this.store.put(key, JSON.stringify(lease));
    return {
      release: async () => {
        await this.store.delete([key]);
      },
    };
  }

  /** Apply retention. `inUse` adds backups known to be in use elsewhere (e.g. by running restore resources). */
  async prune(opts: { retain: number; now?: Date; incompleteGraceMs?: number; dryRun?: boolean; inUse?: Set<string> }): Promise<RetentionPlan> {
    const now = opts.now ?? new Date();
    const scan = await this.scan();
    const complete = scan.complete.flatMap((name) => {
      const p = parseBackupName(name);
      return p ? [{ name, time: p.time }] : [];
    });
    const inUse = new Set<string>(opts.inUse);
    for (const name of scan.leasesByBackup.keys()) {
      if ((await this.activeLeases(name, now)).length > 0) inUse.add(name);
    }
    const plan = planRetention({
      complete,
      incomplete: scan.incomplete,
      inUse,
      retain: opts.retain,
      now,
      incompleteGraceMs: opts.incompleteGraceMs ?? DEFAULT_INCOMPLETE_GRACE_MS,
    });
    if (opts.dryRun) return plan;
    for (const name of plan.expire) await this.delete(name, { force: true, now });
    for (const name of plan.abandon) {
      await this.store.delete((scan.keysByBackup.get(name) ?? []).map((k) => joinKey(this.cluster, k)));
    }
    return plan;
  }

  /** Re-read every object of a backup and check its size and sha256. */
  async verify(name: string): Promise<{ name: string; objects: { name: string; size: number; ok: boolean; error?: string }[] }> {
    const m = await this.readManifest(name);
    const results: { name: string; size: number; ok: boolean; error?: string }[] = [];
    for (const o of m.objects) {
      try {
        const { size, sha256 } = await hashStream(await this.store.get(this.key(name, o.name)));
        if (size !== o.size) {
          results.push({ name: o.name, size, ok: false, error: `size ${size} != manifest ${o.size} (truncated or replaced)` });
        } else if (sha256 !== o.sha256) {
          results.push({ name: o.name, size, ok: false, error: `sha256 mismatch (corrupt object)` });
        } else {
          results.push({ name: o.name, size, ok: true });
        }
      } catch (err) {
        results.push({ name: o.name, size: 0, ok: false, error: err instanceof Error ? err.message : String(err) });
      }
    }
    return { name, objects: results };
  }

  /**
   * Open an object of a backup for restore: the stream fails with a
   * CorruptBackup error at its end if the size or sha256 differ from the manifest.
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
    src.on("error", (err) => check.destroy(err));
    return src.pipe(check);
  }
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
