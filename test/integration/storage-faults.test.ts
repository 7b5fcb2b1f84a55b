// The storage layer under faults, against the real S3 server (versitygw)
// behind the fault proxy, and a real full file system. Each case asserts what
// a user sees: the right backups listed, nothing good deleted, a fault named
// as a fault (never as "corrupt" or "not found"), one winner per name, a
// restore lease that holds against prune, downloads that resume.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { FORMAT_VERSION, type Manifest } from "../../src/storage/catalog.js";
import { FsObjectStore } from "../../src/storage/fs/fs-store.js";
import { readAll, type ObjectStore } from "../../src/storage/object-store.js";
import { openRepository } from "../../src/storage/open.js";
import { hashStream, Repository } from "../../src/storage/repository.js";
import { S3ObjectStore, type S3Options } from "../../src/storage/s3/s3-store.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";

const BUCKET = "faults";
let s3: S3Server;
let proxy: FaultProxy;
let fsRoot: string;
let counter = 0;

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(BUCKET);
  proxy = await startFaultProxy(s3.endpoint, { seed: 7 });
  fsRoot = await mkdtemp(path.join(tmpdir(), "replicator-fs-faults-"));
});

afterAll(async () => {
  await proxy.close();
  await s3.stop();
  await rm(fsRoot, { recursive: true, force: true });
});

afterEach(() => {
  proxy.clear();
  s3.thaw();
});

function s3Store(opts: Partial<S3Options> = {}): S3ObjectStore {
  return new S3ObjectStore({
    bucket: BUCKET,
    prefix: "p",
    endpoint: proxy.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    ...opts,
  });
}

/** A fresh cluster name per test, so cases do not see each other's backups. */
function cluster(): string {
  return `c${++counter}-${randomBytes(3).toString("hex")}`;
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

function backupName(day: number, source = "db-3306"): string {
  return `202601${String(day).padStart(2, "0")}T000000Z-mysqldump-${source}`;
}

function manifestFor(repo: Repository, name: string, data: Buffer): Manifest {
  return {
    formatVersion: FORMAT_VERSION,
    name,
    cluster: repo.cluster,
    method: "mysqldump",
    kind: "logical",
    source: { host: "db", port: 3306, role: "master" },
    startedAt: "2026-01-01T00:00:00.000Z",
    finishedAt: "2026-01-01T00:00:01.000Z",
    compression: "none",
    objects: [{ name: "data.sql", size: data.length, sha256: sha(data) }],
    details: {},
    tool: { name: "replicator", version: "test" },
  };
}

async function makeBackup(repo: Repository, name: string, size = 1000): Promise<Buffer> {
  const data = randomBytes(size);
  await repo.claimName(name, { host: "test", pid: process.pid });
  await repo.store.put(repo.key(name, "data.sql"), data);
  await repo.writeManifest(manifestFor(repo, name, data));
  return data;
}

async function keysOf(repo: Repository, name: string): Promise<string[]> {
  return (await repo.store.list(`${repo.key(name)}/`)).map((o) => o.key.slice(repo.key(name).length + 1));
}

async function rejection(p: Promise<unknown>): Promise<{ reason?: string; message: string }> {
  try {
    await p;
  } catch (err) {
    return err as { reason?: string; message: string };
  }
  throw new Error("expected a rejection");
}

describe("the fault proxy", () => {
  it("forwards signed requests unchanged (SigV4 still verifies) and streams a multipart upload", async () => {
    const store = s3Store();
    const big = randomBytes(40 * 1024 * 1024);
    await store.put("proxy/big.bin", Readable.from([big.subarray(0, 20 << 20), big.subarray(20 << 20)]));
    expect(sha(await readAll(await store.get("proxy/big.bin")))).toBe(sha(big));
    expect(proxy.requests.some((r) => r.op === "POST" && r.key === "p/proxy/big.bin")).toBe(true);
    await store.delete(["proxy/big.bin"]);
  });
});

describe("transient faults are retried: results are right", () => {
  it("503, SlowDown and resets on a fraction of requests: list, verify and prune still give the right answer", async () => {
    const repo = new Repository(s3Store(), cluster());
    const names = [1, 2, 3, 4].map((d) => backupName(d));
    for (const n of names) await makeBackup(repo, n);
    const before = proxy.requests.length;
    proxy.add({ fraction: 0.12, action: { kind: "status", status: 503, code: "ServiceUnavailable" } });
    proxy.add({ fraction: 0.1, action: { kind: "status", status: 503, code: "SlowDown" } });
    proxy.add({ fraction: 0.06, action: { kind: "reset" } });
    const faulty = new Repository(s3Store(), repo.cluster);
    const listed = await faulty.list();
    expect(listed.backups.map((b) => b.name)).toEqual(names);
    expect(listed.corrupt).toEqual([]);
    for (const n of names) {
      const v = await faulty.verify(n);
      expect(v.objects.every((o) => o.ok)).toBe(true);
    }
    const plan = await faulty.prune({ retain: 2 });
    expect(plan.expire).toEqual(names.slice(0, 2));
    proxy.clear();
    expect((await repo.list()).backups.map((b) => b.name)).toEqual(names.slice(2));
    const faults = proxy.requests.slice(before).filter((r) => r.fault);
    expect(faults.length).toBeGreaterThan(3);
  });
});

describe("a persistent fault is reported as a fault, never as a verdict", () => {
  it("an unreadable newest manifest makes list() throw StorageError naming the key, and prune delete nothing", async () => {
    const repo = new Repository(s3Store(), cluster());
    for (const d of [1, 2, 3]) await makeBackup(repo, backupName(d));
    proxy.add({ op: "GET", key: new RegExp(`${backupName(3)}/manifest\\.json$`), action: { kind: "status", status: 500, code: "InternalError" } });
    const err = await rejection(repo.list());
    expect(err.reason).toBe("StorageError");
    expect(err.message).toContain(`${backupName(3)}/manifest.json`);
    expect(err.message).toContain("HTTP 500");
    expect(err.message).toContain("InternalError");
    expect(err.message).toContain(proxy.endpoint);
    const perr = await rejection(repo.prune({ retain: 1 }));
    expect(perr.reason).toBe("StorageError");
    proxy.clear();
    expect((await repo.list()).backups).toHaveLength(3);
  });

  it("a listed manifest whose GET says 404 is a failing store, not a missing backup: list() throws, latest is never quietly older", async () => {
    const repo = new Repository(s3Store(), cluster());
    for (const d of [1, 2]) await makeBackup(repo, backupName(d));
    proxy.add({ op: "GET", key: new RegExp(`${backupName(2)}/manifest\\.json$`), action: { kind: "status", status: 404, code: "NoSuchKey" } });
    const err = await rejection(repo.list());
    expect(err.reason).toBe("StorageError");
    expect(err.message).toContain(`${backupName(2)}/manifest.json is listed but reading it returned "not found"`);
  });

  it("a connection reset on every read of the manifest is StorageUnreachable, with the endpoint and the fix", async () => {
    const repo = new Repository(s3Store(), cluster());
    await makeBackup(repo, backupName(1));
    proxy.add({ op: "GET", key: /manifest\.json$/, action: { kind: "reset" } });
    const err = await rejection(repo.list());
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toMatch(new RegExp(`cannot reach S3 endpoint ${proxy.endpoint} \\(.+\\) while reading p/${repo.cluster}/${backupName(1)}/manifest.json; is the S3 server up\\?`));
  });

  it("a stalled manifest read times out as StorageUnreachable in bounded time; released, it reads again", async () => {
    const repo = new Repository(s3Store({ idleTimeoutMs: 500, maxAttempts: 2 }), cluster());
    await makeBackup(repo, backupName(1));
    proxy.add({ op: "GET", key: /manifest\.json$/, action: { kind: "stall" } });
    const t0 = Date.now();
    const err = await rejection(repo.list());
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toContain("timed out");
    expect(Date.now() - t0).toBeLessThan(30_000);
    proxy.clear();
    expect((await repo.list()).backups).toHaveLength(1);
  });

  it("a dead endpoint is StorageUnreachable (ECONNREFUSED), not 'no backup'", async () => {
    const repo = new Repository(s3Store({ endpoint: "http://127.0.0.1:9", maxAttempts: 2 }), cluster());
    const err = await rejection(repo.list());
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toContain("cannot reach S3 endpoint http://127.0.0.1:9 (ECONNREFUSED)");
  });

  it("a listing that breaks on its second page is retried whole, or fails whole; never returned in part", async () => {
    const c = cluster();
    // 1,100 objects written straight into versitygw's directory: two pages of listing.
    const dir = path.join(s3.root, BUCKET, "p", c, "many");
    await mkdir(dir, { recursive: true });
    await Promise.all(Array.from({ length: 1100 }, (_, i) => writeFile(path.join(dir, `o${String(i).padStart(4, "0")}`), "x")));
    const store = s3Store();
    // The first rule only lets page one through (a 0 ms stall), so the second hits page two.
    proxy.add({ op: "LIST", times: 1, action: { kind: "stall", ms: 0 } });
    proxy.add({ op: "LIST", times: 2, action: { kind: "reset" } });
    expect(await store.list(`${c}/`)).toHaveLength(1100);
    proxy.clear();
    proxy.add({ op: "LIST", times: 1, action: { kind: "stall", ms: 0 } });
    proxy.add({ op: "LIST", action: { kind: "status", status: 500 } });
    const err = await rejection(store.list(`${c}/`));
    expect(err.reason).toBe("StorageError");
  });

  it("verify reports a read fault as the fault, and a damaged object as damaged", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    proxy.add({ op: "GET", key: /data\.sql$/, action: { kind: "status", status: 503 } });
    const err = await rejection(repo.verify(name));
    expect(err.reason).toBe("StorageError");
    expect(err.message).toContain("HTTP 503");
    proxy.clear();
    await repo.store.put(repo.key(name, "data.sql"), randomBytes(1000));
    const v = await repo.verify(name);
    expect(v.objects[0]).toMatchObject({ ok: false, error: "sha256 mismatch (corrupt object)" });
  });
});

describe("manifests that were read but cannot be used", () => {
  it("corrupt JSON is CorruptManifest, a newer formatVersion is UnknownFormat, and prune --retain 1 keeps the good backup", async () => {
    const repo = new Repository(s3Store(), cluster());
    const good = backupName(1);
    await makeBackup(repo, good);
    await repo.store.put(repo.key(backupName(2), "data.sql"), "x");
    await repo.store.put(repo.key(backupName(2), "manifest.json"), "{ this is not json");
    await repo.store.put(repo.key(backupName(3), "data.sql"), "x");
    await repo.store.put(repo.key(backupName(3), "manifest.json"), JSON.stringify({ formatVersion: FORMAT_VERSION + 1, name: backupName(3) }));
    const listed = await repo.list();
    expect(listed.backups.map((b) => b.name)).toEqual([good]);
    expect(listed.corrupt.map((c) => [c.name, c.reason])).toEqual([
      [backupName(2), "CorruptManifest"],
      [backupName(3), "UnknownFormat"],
    ]);
    expect(listed.corrupt[1]?.error).toMatch(/written by a newer replicator; upgrade/);
    const plan = await repo.prune({ retain: 1 });
    expect(plan.expire).toEqual([]);
    expect(plan.unusable.map((u) => u.name)).toEqual([backupName(2), backupName(3)]);
    expect((await repo.list()).backups.map((b) => b.name)).toEqual([good]);
    expect(await keysOf(repo, backupName(3))).toContain("manifest.json");
  });
});

const stores: [string, () => ObjectStore][] = [
  ["s3", () => s3Store()],
  ["filesystem", () => new FsObjectStore(fsRoot)],
];

describe.each(stores)("unique names on %s", (_kind, open) => {
  it("two claimName of the same name at once: exactly one wins, the other gets NameTaken", async () => {
    const c = cluster();
    for (let i = 0; i < 8; i++) {
      const name = backupName(i + 1);
      const a = new Repository(open(), c);
      const b = new Repository(open(), c);
      const res = await Promise.allSettled([a.claimName(name, { host: "a", pid: 1 }), b.claimName(name, { host: "b", pid: 2 })]);
      expect(res.filter((r) => r.status === "fulfilled")).toHaveLength(1);
      const lost = res.find((r) => r.status === "rejected");
      expect((lost?.reason as { reason?: string }).reason).toBe("NameTaken");
    }
  });

  it("the manifest is written create-only: a second write is NameTaken and changes nothing", async () => {
    const repo = new Repository(open(), cluster());
    const name = backupName(1);
    const data = await makeBackup(repo, name);
    const other = manifestFor(repo, name, randomBytes(10));
    const err = await rejection(repo.writeManifest(other));
    expect(err.reason).toBe("NameTaken");
    expect((await repo.readManifest(name)).objects[0]?.sha256).toBe(sha(data));
  });
});

describe.each(stores)("restore leases on %s", (_kind, open) => {
  it("a lease and a prune at the same instant never both proceed (many rounds)", async () => {
    let kept = 0;
    let gone = 0;
    for (let i = 0; i < 20; i++) {
      const c = cluster();
      const setup = new Repository(open(), c);
      const old = backupName(1);
      await makeBackup(setup, old);
      await makeBackup(setup, backupName(2));
      const restorer = new Repository(open(), c);
      const pruner = new Repository(open(), c);
      // Shift one side by 0-55 ms so both orders of the four steps are met.
      const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
      const [lease, plan] = await Promise.all([
        delay(i % 2 === 0 ? (i % 12) * 5 : 0).then(() => restorer.acquireLease(old, "restore", `r${i}`)).catch((err: unknown) => err as { reason?: string }),
        delay(i % 2 === 1 ? (i % 12) * 5 : 0).then(() => pruner.prune({ retain: 1 })),
      ]);
      if ("release" in lease) {
        kept++;
        expect(plan.keptInUse).toContain(old);
        expect(plan.expire).not.toContain(old);
        expect(await keysOf(setup, old)).toEqual(expect.arrayContaining(["data.sql", "manifest.json"]));
        expect((await setup.list()).backups.map((b) => b.name)).toContain(old);
        await lease.release();
      } else {
        gone++;
        expect(lease.reason).toBe("BackupGone");
        const listed = (await setup.list()).backups.map((b) => b.name);
        if (plan.expire.includes(old)) {
          expect(listed).not.toContain(old);
        } else {
          // Both flags seen at once: the prune backed off too, and the backup is whole.
          expect(plan.keptInUse).toContain(old);
          expect(listed).toContain(old);
        }
      }
    }
    expect(kept + gone).toBe(20);
  });
});

describe("restore leases hold against prune and delete", () => {

  it("delete refuses a leased backup (BackupInUse) and leaves it listed; after release it deletes everything", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    const lease = await repo.acquireLease(name, "restore", "holder-1");
    const err = await rejection(repo.delete(name));
    expect(err.reason).toBe("BackupInUse");
    expect(err.message).toContain("holder-1");
    expect((await repo.list()).backups.map((b) => b.name)).toEqual([name]);
    expect(await keysOf(repo, name)).not.toContain("deleting.json");
    await lease.release();
    await repo.delete(name);
    expect(await keysOf(repo, name)).toEqual([]);
    const gone = await rejection(repo.acquireLease(name, "restore", "late"));
    expect(gone.reason).toBe("BackupGone");
    expect(await keysOf(repo, name)).toEqual([]);
  });

  it("a restore that meets a delete's tombstone waits for it: restores when the delete backs off, and names a tombstone a crashed delete left", async () => {
    const store = s3Store();
    const repo = new Repository(store, cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    // A prune that wrote its tombstone and is about to read the leases; it sees ours and backs off.
    const tombstone = repo.key(name, "deleting.json");
    await store.put(tombstone, "{}");
    const t0 = Date.now();
    const pending = repo.acquireLease(name, "restore", "waiter");
    await new Promise((r) => setTimeout(r, 800));
    await store.delete([tombstone]);
    const lease = await pending;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(await keysOf(repo, name)).toEqual(expect.arrayContaining(["data.sql", "manifest.json"]));
    await lease.release();
    // A tombstone that stays (its delete crashed): named, with the way out; no lease left behind.
    await store.put(tombstone, "{}");
    const stuck = await rejection(repo.acquireLease(name, "restore", "late", { deleteWaitMs: 1_000 }));
    expect(stuck.reason).toBe("BackupBeingDeleted");
    expect(stuck.message).toContain(`replicator delete ${name}`);
    expect((await keysOf(repo, name)).filter((k) => k.startsWith("in-use/"))).toEqual([]);
  });

  it("a corrupt lease object protects its backup; a lease unreadable because of a fault makes prune throw, not ignore it", async () => {
    const repo = new Repository(s3Store(), cluster());
    await makeBackup(repo, backupName(1));
    await makeBackup(repo, backupName(2));
    await repo.store.put(repo.key(backupName(1), "in-use", "garbage.json"), "{ not json");
    const plan = await repo.prune({ retain: 1, dryRun: true });
    expect(plan.keptInUse).toEqual([backupName(1)]);
    proxy.add({ op: "GET", key: /in-use\//, action: { kind: "status", status: 500 } });
    const err = await rejection(repo.prune({ retain: 1 }));
    expect(err.reason).toBe("StorageError");
    proxy.clear();
    expect((await repo.list()).backups).toHaveLength(2);
  });

  it("a lease is renewed while held, and released", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    const lease = await repo.acquireLease(name, "restore", "renewer", { ttlMs: 1200, renewEveryMs: 300 });
    await new Promise((r) => setTimeout(r, 2500));
    expect(lease.signal.aborted).toBe(false);
    const active = await repo.activeLeases(name, new Date());
    expect(active.map((l) => l.holder)).toEqual(["renewer"]);
    await lease.release();
    expect(await repo.activeLeases(name, new Date())).toEqual([]);
  });

  it("a forced delete under a held lease aborts its signal with BackupGone and leaves nothing behind; prune removes leases orphaned in a gone prefix", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    const lease = await repo.acquireLease(name, "restore", "forced", { ttlMs: 1200, renewEveryMs: 200 });
    await repo.delete(name, { force: true });
    const reason = await new Promise<unknown>((resolve) => {
      lease.signal.addEventListener("abort", () => {
        resolve(lease.signal.reason);
      });
    });
    expect(reason).toMatchObject({ reason: "BackupGone" });
    await lease.release();
    expect(await keysOf(repo, name)).toEqual([]);
    const orphan = backupName(2);
    await repo.store.put(repo.key(orphan, "in-use", "x.json"), JSON.stringify({ id: "x", purpose: "restore", holder: "dead", expiresAt: "2020-01-01T00:00:00.000Z" }));
    await repo.prune({ retain: 1 });
    expect(await keysOf(repo, orphan)).toEqual([]);
  });

  it("a lease that cannot be renewed (the S3 server frozen) aborts its signal with LeaseLost before it expires", async () => {
    const repo = new Repository(s3Store({ idleTimeoutMs: 500, connectTimeoutMs: 500, maxAttempts: 2 }), cluster());
    const name = backupName(1);
    await makeBackup(repo, name);
    const lease = await repo.acquireLease(name, "restore", "frozen", { ttlMs: 2000, renewEveryMs: 400 });
    const t0 = Date.now();
    s3.freeze();
    const reason = await new Promise<unknown>((resolve) => {
      lease.signal.addEventListener("abort", () => {
        resolve(lease.signal.reason);
      });
    });
    const elapsed = Date.now() - t0;
    s3.thaw();
    expect(reason).toMatchObject({ reason: "LeaseLost" });
    expect(elapsed).toBeLessThan(2000);
    await lease.release();
  });
});

describe("downloads resume", () => {
  it("a data GET cut part-way (truncated, then reset) resumes with Range: the bytes are whole", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    const data = await makeBackup(repo, name, 6 * 1024 * 1024);
    const manifest = await repo.readManifest(name);
    proxy.add({ op: "GET", key: /data\.sql$/, times: 1, action: { kind: "truncate", bytes: 1_000_000 } });
    proxy.add({ op: "GET", key: /data\.sql$/, times: 1, action: { kind: "truncate", bytes: 2_000_000 } });
    const before = proxy.requests.length;
    const got = await hashStream(await repo.openVerified(name, "data.sql", manifest));
    expect(got).toEqual({ size: data.length, sha256: sha(data) });
    const gets = proxy.requests.slice(before).filter((r) => r.op === "GET" && r.key.endsWith("data.sql"));
    expect(gets.map((g) => g.fault)).toEqual(["truncate:1000000", "truncate:2000000", undefined]);
    // A reset before the response is retried by the client.
    proxy.add({ op: "GET", key: /data\.sql$/, times: 2, action: { kind: "reset" } });
    expect(sha(await readAll(await repo.store.get(repo.key(name, "data.sql"))))).toBe(sha(data));
  });

  it("a data GET cut every time is reported as a fault after its resumes, never as a corrupt backup", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    await makeBackup(repo, name, 2 * 1024 * 1024);
    const manifest = await repo.readManifest(name);
    proxy.add({ op: "GET", key: /data\.sql$/, action: { kind: "truncate", bytes: 100_000 } });
    const err = await rejection(hashStream(await repo.openVerified(name, "data.sql", manifest)));
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toContain(`while reading p/${repo.cluster}/${name}/data.sql`);
    const vErr = await rejection(repo.verify(name));
    expect(vErr.reason).toBe("StorageUnreachable");
  });

  it("a reader that falls behind for longer than the idle timeout, again and again, is not a fault: the rest is fetched when it reads on", async () => {
    // A restore whose clients are busy holds the download for longer than the
    // socket's idle timeout; that costs a Range GET each time, never the
    // resumes a broken server may use (3), and never a failed restore.
    const repo = new Repository(s3Store({ idleTimeoutMs: 400 }), cluster());
    const name = backupName(1);
    const data = await makeBackup(repo, name, 48 * 1024 * 1024);
    const before = proxy.requests.length;
    const stream = await repo.openVerified(name, "data.sql", await repo.readManifest(name));
    const hash = createHash("sha256");
    let size = 0;
    let nextStall = 4 * 1024 * 1024;
    let stalls = 0;
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= nextStall && stalls < 5) {
        stalls++;
        nextStall += 8 * 1024 * 1024;
        await new Promise((r) => setTimeout(r, 1200));
      }
    }
    expect({ size, sha256: hash.digest("hex") }).toEqual({ size: data.length, sha256: sha(data) });
    const gets = proxy.requests.slice(before).filter((r) => r.op === "GET" && r.key.endsWith("data.sql"));
    // More stalls than resumes: the stalls did idle the socket out, and did not count as faults.
    expect(gets.length).toBeGreaterThan(4);
  });

  it("destroying an opened backup object stops reading storage at once", async () => {
    const repo = new Repository(s3Store(), cluster());
    const name = backupName(1);
    const size = 48 * 1024 * 1024;
    await makeBackup(repo, name, size);
    const before = proxy.requests.length;
    const stream = await repo.openVerified(name, "data.sql", await repo.readManifest(name));
    let n = 0;
    for await (const chunk of stream) {
      n += (chunk as Buffer).length;
      if (n > 64 * 1024) break;
    }
    expect(stream.destroyed).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    const get = proxy.requests.slice(before).find((r) => r.op === "GET" && r.key.endsWith("data.sql"));
    // What the S3 server sent is bounded by socket buffers, not the object's size.
    expect(get?.bytes).toBeLessThan(size / 3);
  });
});

describe("uploads under faults", () => {
  function slowSource(total: number, onByte: (n: number) => void): Readable {
    let sent = 0;
    return new Readable({
      read() {
        if (sent >= total) {
          this.push(null);
          return;
        }
        const chunk = randomBytes(1024 * 1024);
        sent += chunk.length;
        onByte(sent);
        this.push(chunk);
      },
    });
  }

  it("a multipart upload meets 503s, SlowDowns and resets on its parts and still stores the right bytes", async () => {
    const store = s3Store();
    const data = randomBytes(40 * 1024 * 1024);
    proxy.add({ op: "PUT", fraction: 0.3, action: { kind: "status", status: 503, code: "SlowDown" } });
    proxy.add({ op: "PUT", fraction: 0.2, action: { kind: "reset" } });
    proxy.add({ op: "POST", times: 1, action: { kind: "status", status: 500 } });
    const before = proxy.requests.length;
    const put = await store.put("mp/data.bin", Readable.from([data.subarray(0, 25 << 20), data.subarray(25 << 20)]), { expectedSize: data.length });
    expect(put.size).toBe(data.length);
    expect(proxy.requests.slice(before).filter((r) => r.fault).length).toBeGreaterThan(0);
    proxy.clear();
    expect(sha(await readAll(await store.get("mp/data.bin")))).toBe(sha(data));
    await store.delete(["mp/data.bin"]);
  });

  it("the S3 server frozen mid-upload: the upload fails with StorageUnreachable in bounded time and no manifest is written", async () => {
    const repo = new Repository(s3Store({ idleTimeoutMs: 1000, connectTimeoutMs: 1000, maxAttempts: 2 }), cluster());
    const name = backupName(1);
    await repo.claimName(name, { host: "t", pid: 1 });
    let frozen = false;
    const t0 = Date.now();
    const err = await rejection(
      (async () => {
        await repo.store.put(
          repo.key(name, "data.sql"),
          slowSource(64 * 1024 * 1024, (n) => {
            if (n >= 20 * 1024 * 1024 && !frozen) {
              frozen = true;
              s3.freeze();
            }
          }),
        );
        await repo.writeManifest(manifestFor(repo, name, Buffer.from("never")));
      })(),
    );
    const elapsed = Date.now() - t0;
    s3.thaw();
    expect(frozen).toBe(true);
    expect(err.reason).toBe("StorageUnreachable");
    expect(err.message).toMatch(/timed out|ETIMEDOUT|ECONNRESET/);
    expect(elapsed).toBeLessThan(90_000);
    const listed = await new Repository(s3Store(), repo.cluster).list();
    expect(listed.backups).toEqual([]);
    expect(await keysOf(repo, name)).not.toContain("manifest.json");
  });

  it("the S3 server killed mid-upload: StorageUnreachable, and it works again after a restart", async () => {
    const repo = new Repository(s3Store({ maxAttempts: 2 }), cluster());
    let killed: Promise<void> | undefined;
    const err = await rejection(
      repo.store.put(
        repo.key(backupName(1), "data.sql"),
        slowSource(48 * 1024 * 1024, (n) => {
          if (n >= 20 * 1024 * 1024 && !killed) killed = s3.kill();
        }),
      ),
    );
    await killed;
    expect(["StorageUnreachable", "StorageError"]).toContain(err.reason);
    await s3.restart();
    await makeBackup(repo, backupName(2));
    expect((await repo.list()).backups.map((b) => b.name)).toEqual([backupName(2)]);
  });

  it("an object over the part limit without a size hint fails early with the fix", async () => {
    const store = s3Store({ partSize: 5 * 1024 * 1024, maxParts: 3 });
    let read = 0;
    const err = await rejection(store.put("toolarge/data.bin", slowSource(40 * 1024 * 1024, (n) => (read = n))));
    expect(err.reason).toBe("ObjectTooLarge");
    expect(err.message).toMatch(/object larger than ~15\.0 MiB without a size hint; pass --expected-size/);
    expect(read).toBeLessThan(40 * 1024 * 1024);
    expect(await store.list("toolarge/")).toEqual([]);
  });
});

describe("a full file system", () => {
  let mnt: string | undefined;
  beforeAll(async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-full-"));
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir]);
      mnt = dir;
    } catch {
      mnt = undefined;
    }
  });
  afterAll(() => {
    if (mnt) execFileSync("umount", [mnt]);
  });

  it("a piped body on a full disk fails with StorageFull naming the path (not 'Premature close'), and leaves no file", async (ctx) => {
    if (!mnt) ctx.skip();
    const store = new FsObjectStore(mnt!);
    const src = Readable.from((function* () {
      for (let i = 0; i < 16; i++) yield randomBytes(1024 * 1024);
    })());
    const body = src.pipe(new PassThrough()).pipe(new PassThrough());
    const err = await rejection(store.put("c/20260101T000000Z-mysqldump-db/data.sql", body));
    expect(err.reason).toBe("StorageFull");
    expect(err.message).toContain(path.join(mnt!, "c/20260101T000000Z-mysqldump-db/data.sql"));
    expect(err.message).not.toMatch(/premature close/i);
    expect(await readdir(path.join(mnt!, "c/20260101T000000Z-mysqldump-db"))).toEqual([]);
  });
});

describe("repository URLs", () => {
  it("refuses . and .. and empty segments with one line naming the fix", async () => {
    await expect(openRepository("s3://bkt/../bkt2/x")).rejects.toThrow(/repository URL "s3:\/\/bkt\/..\/bkt2\/x" has a "." or ".." path segment; write the bucket and prefix plainly/);
    await expect(openRepository("s3://bkt/a/./b")).rejects.toMatchObject({ reason: "InvalidRepository" });
    await expect(openRepository("s3://bkt/a//b")).rejects.toThrow(/empty path segment/);
    await expect(openRepository("s3://bkt/%2e%2e/x")).rejects.toMatchObject({ reason: "InvalidRepository" });
    await expect(openRepository("file:///backups/../etc")).rejects.toThrow(/has a "." or ".." path segment; use the absolute path without . or ../);
    expect((await openRepository("s3://bkt/a/b/?endpoint=http://127.0.0.1:9")).location).toBe("s3://bkt/a/b");
  });
});
