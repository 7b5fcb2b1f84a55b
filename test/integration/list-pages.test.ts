// `replicator list` of a repository whose listing spans several pages, read
// by the S3 store's own page reader (src/storage/s3/list-page.ts), against
// the real S3 server (versitygw), behind the fault proxy: what the store
// lists is what the SDK lists; `list` shows exactly the backups that exist
// (complete, not tombstoned) with an empty, warm, stale or damaged manifest
// cache, after deletes and with half-written backups; and a listing that
// breaks on a later page is retried whole or fails whole, never shown in part.
import { ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { testManifest } from "../harness/fixtures.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { buildBackupName, MANIFEST, TOMBSTONE, type Manifest } from "../../src/storage/catalog.js";
import { S3ObjectStore } from "../../src/storage/s3/s3-store.js";

let s3: S3Server;
let proxy: FaultProxy;
let cacheHome: string;
const bucket = "pages";
const CLUSTER = "many";
/** 1,300 backups of two objects each: 2,600 keys, three listing pages. */
const COUNT = 1300;

function store(endpoint = s3.endpoint): S3ObjectStore {
  return new S3ObjectStore({ bucket, prefix: "r", endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
}

const manifestOf = (name: string, at: Date, i: number): Manifest => testManifest(name, CLUSTER, at, i);

const dirOf = (name: string): string => path.join(s3.root, bucket, "r", CLUSTER, name);

/** COUNT backups written as files into versitygw's directory (quick), the manifest last; the last 5 through the S3 API (with ETags). */
async function seed(): Promise<string[]> {
  const names: string[] = [];
  const s = store();
  try {
    for (let i = 0; i < COUNT; i++) {
      const at = new Date(Date.UTC(2026, 0, 1) + i * 60_000);
      const name = buildBackupName(at, "mysqldump", "db-0");
      names.push(name);
      const m = JSON.stringify(manifestOf(name, at, i));
      if (i >= COUNT - 5) {
        await s.put(`${CLUSTER}/${name}/data.sql.zst`, "data");
        await s.put(`${CLUSTER}/${name}/${MANIFEST}`, m);
      } else {
        await mkdir(dirOf(name), { recursive: true });
        await writeFile(path.join(dirOf(name), "data.sql.zst"), "data");
        await writeFile(path.join(dirOf(name), MANIFEST), m);
      }
    }
  } finally {
    s.close();
  }
  return names;
}

interface ListJson {
  backups: { name: string; replication?: { gtid?: string } }[];
  incomplete: string[];
  unusable: unknown[];
}

async function list(extra: Record<string, string> = {}, endpoint = proxy.endpoint): Promise<{ exitCode: number; stderr: string; stdout: string; json: ListJson }> {
  const r = await runCli(["list", "--repository", `s3://${bucket}/r`, "--cluster", CLUSTER, "--s3-endpoint", endpoint, "--json"], { ...s3.env, XDG_CACHE_HOME: cacheHome, ...extra });
  return { exitCode: r.exitCode, stderr: r.stderr, stdout: r.stdout, json: r.json as unknown as ListJson };
}

/** `list` through the cache, checked against the truth: the same command without any cache, and the names expected. */
async function expectListing(expected: string[], incomplete: string[]): Promise<ListJson> {
  const truth = await list({ REPLICATOR_MANIFEST_CACHE: "off" });
  expect(truth.exitCode).toBe(0);
  expect(truth.json.backups.map((b) => b.name)).toEqual(expected);
  expect(truth.json.incomplete).toEqual(incomplete);
  const cached = await list();
  expect(cached.exitCode).toBe(0);
  expect(cached.json).toEqual(truth.json);
  return cached.json;
}

async function cacheFile(): Promise<string> {
  const dir = path.join(cacheHome, "replicator", "manifests");
  const files = (await readdir(dir)).filter((f) => f.endsWith(`.${CLUSTER}.jsonl`));
  expect(files).toHaveLength(1);
  return path.join(dir, files[0] as string);
}

let names: string[] = [];

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(bucket);
  proxy = await startFaultProxy(s3.endpoint);
  cacheHome = await mkdtemp(path.join(tmpdir(), "replicator-list-pages-"));
  names = await seed();
});

beforeEach(() => {
  proxy.clear();
});

afterAll(async () => {
  await proxy.close();
  await s3.stop();
  await rm(cacheHome, { recursive: true, force: true });
});

describe("the S3 store's listing", () => {
  it("equals the AWS SDK's own listing, page for page, keys with entities and non-ASCII included", async () => {
    const odd = ["odd/a & b <c> \"d\" 'e'/x", "odd/ leading and trailing /x ", "odd/ünïcødé/日本/x", "odd/plus+percent%20=/x", "odd/tab\there/x"];
    const client = new S3Client({ endpoint: s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
    try {
      for (const k of odd) await client.send(new PutObjectCommand({ Bucket: bucket, Key: `r/${k}`, Body: "x" }));
      for (const prefix of [`${CLUSTER}/`, "odd/", ""]) {
        const sdk: { key: string; size: number; lastModified: Date | undefined; etag: string | undefined }[] = [];
        let token: string | undefined;
        do {
          const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `r/${prefix}`, ContinuationToken: token }));
          for (const o of res.Contents ?? []) if (o.Key) sdk.push({ key: o.Key.slice(2), size: o.Size ?? 0, lastModified: o.LastModified, etag: o.ETag });
          token = res.IsTruncated ? res.NextContinuationToken : undefined;
        } while (token);
        sdk.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
        const s = store();
        try {
          const ours = await s.list(prefix);
          expect(ours.length).toBe(sdk.length);
          expect(ours).toEqual(sdk);
        } finally {
          s.close();
        }
      }
      const s = store();
      try {
        expect(await s.listChildren("odd/")).toEqual([" leading and trailing ", "a & b <c> \"d\" 'e'", "plus+percent%20=", "tab\there", "ünïcødé"].sort());
      } finally {
        s.close();
      }
    } finally {
      client.destroy();
    }
  });
});

describe("replicator list loads only what it uses", () => {
  it("not the backup methods, the database client, plugins or PITR (module resolution recorded by a loader hook)", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-loaded-"));
    try {
      const log = path.join(dir, "loaded.txt");
      await writeFile(path.join(dir, "hooks.mjs"), `import { appendFileSync } from "node:fs";\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + "\\n"); return r; }\n`);
      await writeFile(path.join(dir, "register.mjs"), `import { register } from "node:module";\nregister(${JSON.stringify(`file://${dir}/hooks.mjs`)});\n`);
      const r = await list({ NODE_OPTIONS: `--import=${path.join(dir, "register.mjs")}` });
      expect(r.exitCode).toBe(0);
      expect(r.json.backups.length).toBeGreaterThan(0);
      const loaded = (await readFile(log, "utf8")).split("\n").filter(Boolean);
      expect(loaded.some((u) => u.endsWith("/dist/storage/s3/s3-store.js"))).toBe(true);
      expect(loaded.filter((u) => /\/dist\/(agent|plugins|pitr|operator|kube)\/|\/dist\/db\/(connection|replication)\.js|\/node_modules\/(mysql2|execa|@kubernetes|@aws-sdk\/lib-storage)\//.test(u))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("replicator list across pages", () => {
  it("shows exactly the backups that exist: empty cache, warm cache, after deletes, tombstones and half-written backups", async () => {
    const first = await expectListing(names, []);
    expect(first.backups).toHaveLength(COUNT);
    expect(first.backups[COUNT - 1]?.replication?.gtid).toBe(`0-1-${COUNT}`);
    const stale = `${cacheHome}/stale.jsonl`;
    await copyFile(await cacheFile(), stale);

    // A delete through the CLI; a manifest removed (what a delete leaves half-way, or a backup never
    // finished); a tombstone (a delete under way); a backup still being written (data, no manifest);
    // a new complete backup. On the first page, the page boundaries and the last page.
    const deleted = names[500] as string;
    const del = await runCli(["delete", deleted, "--repository", `s3://${bucket}/r`, "--cluster", CLUSTER, "--s3-endpoint", proxy.endpoint], { ...s3.env, XDG_CACHE_HOME: cacheHome });
    expect(del.exitCode).toBe(0);
    const unmanifested = names[999] as string;
    await unlink(path.join(dirOf(unmanifested), MANIFEST));
    const tombstoned = names[1000] as string;
    await writeFile(path.join(dirOf(tombstoned), TOMBSTONE), "{}");
    const lastViaApi = names[COUNT - 1] as string;
    const s = store();
    try {
      await s.delete([`${CLUSTER}/${lastViaApi}/${MANIFEST}`, `${CLUSTER}/${lastViaApi}/data.sql.zst`]);
      const running = buildBackupName(new Date(Date.UTC(2027, 0, 1)), "mysqldump", "db-0");
      await s.put(`${CLUSTER}/${running}/data.sql.zst`, "partial");
      const added = buildBackupName(new Date(Date.UTC(2027, 0, 2)), "mysqldump", "db-0");
      await s.put(`${CLUSTER}/${added}/data.sql.zst`, "data");
      await s.put(`${CLUSTER}/${added}/${MANIFEST}`, JSON.stringify(manifestOf(added, new Date(Date.UTC(2027, 0, 2)), COUNT)));
      const expected = [...names.filter((n) => n !== deleted && n !== unmanifested && n !== tombstoned && n !== lastViaApi), added];
      const incomplete = [unmanifested, running];
      await expectListing(expected, incomplete);

      // A stale cache (written before all of that) shows nothing that is gone, and everything that is there.
      await copyFile(stale, await cacheFile());
      await expectListing(expected, incomplete);

      // A damaged cache: cut in the middle of an entry, and bytes flipped in another.
      const file = await cacheFile();
      const text = await readFile(file, "utf8");
      const cut = text.slice(0, Math.floor(text.length * 0.6));
      await writeFile(file, cut.replace(`"0-1-7"`, `"0-1-8"`));
      await expectListing(expected, incomplete);
    } finally {
      s.close();
    }
  });

  it("a listing that breaks on a later page is retried whole; one that keeps failing fails whole, and nothing is listed", async () => {
    const truth = await list({ REPLICATOR_MANIFEST_CACHE: "off" });
    expect(truth.exitCode).toBe(0);
    const count = truth.json.backups.length;
    expect(count).toBeGreaterThan(1000);
    // Page two cut short (the body ends mid-way), then reset: retried, and the same listing.
    proxy.add({ op: "LIST", key: `r/${CLUSTER}/`, times: 1, action: { kind: "stall", ms: 0 } });
    proxy.add({ op: "LIST", key: `r/${CLUSTER}/`, times: 1, action: { kind: "truncate", bytes: 70_000 } });
    proxy.add({ op: "LIST", key: `r/${CLUSTER}/`, times: 1, action: { kind: "reset" } });
    const retried = await list();
    expect(retried.exitCode).toBe(0);
    expect(retried.json).toEqual(truth.json);
    expect(proxy.requests.some((q) => q.fault?.includes("truncate"))).toBe(true);
    // Every page after the first fails: exit 1, the storage fault named, no backup printed.
    proxy.clear();
    proxy.add({ op: "LIST", key: `r/${CLUSTER}/`, times: 1, action: { kind: "stall", ms: 0 } });
    proxy.add({ op: "LIST", key: `r/${CLUSTER}/`, action: { kind: "truncate", bytes: 70_000 } });
    const failedRun = await list({}, proxy.endpoint);
    expect(failedRun.exitCode).toBe(1);
    const failure = failedRun.json as unknown as { ok: boolean; reason: string };
    expect(failure.ok).toBe(false);
    expect(failure.reason).toMatch(/^Storage(Unreachable|Error)$/);
    expect(failedRun.stdout).not.toContain('"backups"');
    expect(failedRun.stderr).toMatch(/listing|reach/);
  });
});
