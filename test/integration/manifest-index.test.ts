// `replicator list` through the repository's manifest index
// (src/storage/index-segments.ts), against the real S3 server (versitygw)
// behind the counting fault proxy: with an empty manifest cache (a new
// machine) a listing reads the listing pages and the index, not one manifest
// per backup; a stale, garbage or unreadable index gives exactly the listing
// without one; prune never takes the index for a backup and drops the backups
// it deletes from it. The backups are synthetic: no database needed.
import { mkdir, mkdtemp, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { testManifest } from "../harness/fixtures.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { buildBackupName, MANIFEST, TOMBSTONE } from "../../src/storage/catalog.js";
import { decodeSegment, newSegmentKey } from "../../src/storage/index-segments.js";
import { readAll } from "../../src/storage/object-store.js";
import { S3ObjectStore } from "../../src/storage/s3/s3-store.js";

let s3: S3Server;
let proxy: FaultProxy;
const bucket = "index";
/** 1,100 backups of two objects each: 2,200 keys, three listing pages. */
const COUNT = 1100;

function store(): S3ObjectStore {
  return new S3ObjectStore({ bucket, prefix: "r", endpoint: s3.endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
}

/** `count` backups of `cluster` written as files into versitygw's directory (quick), each manifest last. */
async function seed(cluster: string, count: number, from = 0): Promise<string[]> {
  const names: string[] = [];
  for (let i = from; i < from + count; i++) {
    const at = new Date(Date.UTC(2026, 0, 1) + i * 60_000);
    const name = buildBackupName(at, "mysqldump", "db-0");
    names.push(name);
    const dir = path.join(s3.root, bucket, "r", cluster, name);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, "data.sql.zst"), "data");
    await writeFile(path.join(dir, MANIFEST), JSON.stringify(testManifest(name, cluster, at, i)));
  }
  return names;
}

interface ListJson {
  backups: { name: string }[];
  incomplete: string[];
  unusable: unknown[];
}

interface Counted {
  json: ListJson;
  manifestGets: number;
  indexGets: number;
  indexPuts: number;
  lists: number;
  requests: number;
}

/** `list --json` with an empty manifest cache (a fresh cache directory): a new machine, pod or CI runner. */
async function coldList(cluster: string, extra: Record<string, string> = {}): Promise<Counted> {
  const home = await mkdtemp(path.join(tmpdir(), "replicator-index-it-"));
  try {
    const from = proxy.requests.length;
    const r = await runCli(["list", "--repository", `s3://${bucket}/r`, "--cluster", cluster, "--s3-endpoint", proxy.endpoint, "--json"], { ...s3.env, XDG_CACHE_HOME: home, ...extra });
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    const reqs = proxy.requests.slice(from);
    return {
      json: r.json as unknown as ListJson,
      manifestGets: reqs.filter((q) => q.op === "GET" && q.key.endsWith(`/${MANIFEST}`)).length,
      indexGets: reqs.filter((q) => q.op === "GET" && q.key.includes("/.index/")).length,
      indexPuts: reqs.filter((q) => q.op === "PUT" && q.key.includes("/.index/")).length,
      lists: reqs.filter((q) => q.op === "LIST").length,
      requests: reqs.length,
    };
  } finally {
    await rm(home, { recursive: true, force: true });
  }
}

/** The truth: no manifest cache, no index: every manifest read. */
async function truth(cluster: string): Promise<ListJson> {
  const r = await coldList(cluster, { REPLICATOR_MANIFEST_CACHE: "off", REPLICATOR_INDEX: "off" });
  expect(r.indexGets).toBe(0);
  return r.json;
}

async function segments(cluster: string): Promise<string[]> {
  const s = store();
  try {
    return (await s.list(`${cluster}/.index/`)).map((o) => o.key);
  } finally {
    s.close();
  }
}

async function segmentNames(cluster: string): Promise<string[][]> {
  const s = store();
  try {
    const out: string[][] = [];
    for (const key of await segments(cluster)) {
      const entries = decodeSegment(await readAll(await s.get(key)), cluster);
      if (typeof entries === "string") throw new Error(`${key}: ${entries}`);
      out.push(entries.map((e) => e.name));
    }
    return out;
  } finally {
    s.close();
  }
}

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(bucket);
  proxy = await startFaultProxy(s3.endpoint);
});

beforeEach(() => {
  proxy.clear();
});

afterAll(async () => {
  await proxy.close();
  await s3.stop();
});

describe("replicator list through the manifest index", () => {
  it("a cold list reads the listing pages and the index, not one manifest per backup; a stale index gives the same listing", async () => {
    const names = await seed("many", COUNT);
    const expected = await truth("many");
    expect(expected.backups.map((b) => b.name)).toEqual(names);

    // No index yet: every manifest is read, and the index is written.
    const first = await coldList("many");
    expect(first.json).toEqual(expected);
    expect(first.manifestGets).toBe(COUNT);
    expect(first.indexPuts).toBe(1);
    expect(await segments("many")).toHaveLength(1);

    // With it: the three listing pages, one index object, no manifest.
    const second = await coldList("many");
    expect(second.json).toEqual(expected);
    expect(second.manifestGets).toBe(0);
    expect(second.indexGets).toBe(1);
    expect(second.lists).toBe(3);
    expect(second.indexPuts).toBe(0);
    expect(second.requests).toBeLessThanOrEqual(second.lists + second.indexGets + 2);

    // Stale: a backup deleted (CLI), one whose manifest is gone (half-written: data and an index entry,
    // no committed manifest), one tombstoned (a delete under way), and backups added after the index.
    const del = await runCli(["delete", names[10] as string, "--repository", `s3://${bucket}/r`, "--cluster", "many", "--s3-endpoint", proxy.endpoint], s3.env);
    expect(del.exitCode).toBe(0);
    await unlink(path.join(s3.root, bucket, "r", "many", names[20] as string, MANIFEST));
    await writeFile(path.join(s3.root, bucket, "r", "many", names[30] as string, TOMBSTONE), "{}");
    const added = await seed("many", 3, COUNT + 10);
    const s = store();
    try {
      // One more through the S3 API (an ETag of versitygw's own).
      const at = new Date(Date.UTC(2027, 0, 1));
      const name = buildBackupName(at, "mysqldump", "db-0");
      await s.put(`many/${name}/data.sql.zst`, "data");
      await s.put(`many/${name}/${MANIFEST}`, JSON.stringify(testManifest(name, "many", at, 5000)));
      added.push(name);
    } finally {
      s.close();
    }
    const staleTruth = await truth("many");
    expect(staleTruth.backups.map((b) => b.name)).toEqual([...names.filter((_, i) => i !== 10 && i !== 20 && i !== 30), ...added]);
    expect(staleTruth.incomplete).toEqual([names[20]]);
    const stale = await coldList("many");
    expect(stale.json).toEqual(staleTruth);
    expect(stale.indexGets).toBe(1);
    expect(stale.manifestGets).toBe(added.length);
  });

  it("a garbage index object changes nothing (and the next rewrite replaces it)", async () => {
    const names = await seed("garbage", 40);
    const expected = await truth("garbage");
    const s = store();
    try {
      await s.put(`garbage/${newSegmentKey(new Date())}`, Buffer.from("\u0000 this is not an index"));
    } finally {
      s.close();
    }
    const r = await coldList("garbage");
    expect(r.json).toEqual(expected);
    expect(r.indexGets).toBe(1);
    expect(r.manifestGets).toBe(40);
    // That list had to read every manifest: it wrote a good index in place of the garbage.
    expect(await segmentNames("garbage")).toEqual([names]);
    expect((await coldList("garbage")).manifestGets).toBe(0);
  });

  it("a fault reading the index: retried, and when it persists the manifests are read one by one (and a fault there fails the list)", async () => {
    await seed("faulty", 30);
    const expected = await truth("faulty");
    await coldList("faulty");
    expect(await segments("faulty")).toHaveLength(1);

    // One 503: retried, the index still used.
    proxy.add({ op: "GET", key: /\/\.index\//, times: 1, action: { kind: "status", status: 503, code: "SlowDown" } });
    const once = await coldList("faulty");
    expect(once.json).toEqual(expected);
    expect(once.manifestGets).toBe(0);
    expect(proxy.requests.some((q) => q.fault !== undefined && q.key.includes("/.index/"))).toBe(true);

    // Always 500: the listing is the same, read manifest by manifest.
    proxy.clear();
    proxy.add({ op: "GET", key: /\/\.index\//, action: { kind: "status", status: 500, code: "InternalError" } });
    const always = await coldList("faulty");
    expect(always.json).toEqual(expected);
    expect(always.manifestGets).toBe(30);

    // And a manifest that cannot be read then is the storage fault it is: exit 1, no listing.
    const victim = expected.backups[7]?.name as string;
    proxy.add({ op: "GET", key: new RegExp(`${victim}/manifest\\.json$`), action: { kind: "status", status: 500, code: "InternalError" } });
    const home = await mkdtemp(path.join(tmpdir(), "replicator-index-it-"));
    try {
      const r = await runCli(["list", "--repository", `s3://${bucket}/r`, "--cluster", "faulty", "--s3-endpoint", proxy.endpoint, "--json"], { ...s3.env, XDG_CACHE_HOME: home });
      expect(r.exitCode).toBe(1);
      expect(r.json?.reason).toMatch(/^Storage(Unreachable|Error)$/);
      expect(r.stdout).not.toContain('"backups"');
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it("prune never deletes the index as a backup, and the backups it prunes leave the index", async () => {
    const names = await seed("pruned", 25);
    await coldList("pruned");
    expect(await segmentNames("pruned")).toEqual([names]);
    const r = await runCli(["prune", "--retain", "10", "--repository", `s3://${bucket}/r`, "--cluster", "pruned", "--s3-endpoint", proxy.endpoint, "--json"], s3.env);
    expect(r.exitCode).toBe(0);
    expect(r.json?.deleted).toEqual(names.slice(0, 15));
    expect(await segmentNames("pruned")).toEqual([names.slice(15)]);
    const after = await coldList("pruned");
    expect(after.json).toEqual(await truth("pruned"));
    expect(after.json.backups.map((b) => b.name)).toEqual(names.slice(15));
    expect(after.manifestGets).toBe(0);
  });
});
