// `replicator list` through its manifest cache file, against the real S3
// server (versitygw) behind the counting proxy: the cached listing is the
// uncached one, a second run reads no manifest, a manifest rewritten under the
// same key is read again, a deleted or tombstoned backup leaves the listing,
// and a damaged cache file is ignored. The backups are synthetic (a manifest
// and a data object written through the storage layer): no database needed.
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { testManifest } from "../harness/fixtures.js";
import { startFaultProxy, type FaultProxy } from "../harness/s3-fault-proxy.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { buildBackupName, MANIFEST, TOMBSTONE } from "../../src/storage/catalog.js";
import { Repository } from "../../src/storage/repository.js";
import { S3ObjectStore } from "../../src/storage/s3/s3-store.js";

let s3: S3Server;
let proxy: FaultProxy;
let cacheHome: string;
const bucket = "cache";

function store(): S3ObjectStore {
  return new S3ObjectStore({ bucket, prefix: "r", endpoint: s3.endpoint, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });
}

async function seed(cluster: string, n: number): Promise<string[]> {
  const repo = new Repository(store(), cluster);
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const at = new Date(Date.UTC(2026, 0, 1, 0, i));
    const name = buildBackupName(at, "mysqldump", "db-0");
    const m = testManifest(name, cluster, at, i);
    await repo.store.put(repo.key(name, "data.sql.zst"), "data");
    await repo.writeManifest(m);
    names.push(name);
  }
  return names;
}

function args(cluster: string): string[] {
  return ["list", "--repository", `s3://${bucket}/r`, "--cluster", cluster, "--s3-endpoint", proxy.endpoint, "--json"];
}

async function list(cluster: string, extra: Record<string, string> = {}): Promise<{ json: Record<string, unknown>; manifestGets: number }> {
  const from = proxy.requests.length;
  const r = await runCli(args(cluster), { ...s3.env, XDG_CACHE_HOME: cacheHome, ...extra });
  expect(r.stderr).toBe("");
  expect(r.exitCode).toBe(0);
  const manifestGets = proxy.requests.slice(from).filter((q) => q.op === "GET" && q.key.endsWith(`/${MANIFEST}`)).length;
  const json = r.json as Record<string, unknown>;
  return { json, manifestGets };
}

async function cacheFiles(): Promise<string[]> {
  const dir = path.join(cacheHome, "replicator", "manifests");
  return (await readdir(dir)).filter((f) => f.endsWith(".jsonl")).map((f) => path.join(dir, f));
}

beforeAll(async () => {
  s3 = await startS3();
  await s3.createBucket(bucket);
  proxy = await startFaultProxy(s3.endpoint);
  cacheHome = await mkdtemp(path.join(tmpdir(), "replicator-cache-it-"));
});

afterAll(async () => {
  await proxy.close();
  await s3.stop();
  await rm(cacheHome, { recursive: true, force: true });
});

describe("replicator list with the manifest cache", () => {
  it("a cached listing equals an uncached one, and the second run GETs no manifest", async () => {
    const names = await seed("same", 12);
    const uncached = await list("same", { REPLICATOR_MANIFEST_CACHE: "off" });
    expect(uncached.manifestGets).toBe(12);
    const cold = await list("same");
    expect(cold.manifestGets).toBe(12);
    const warm = await list("same");
    expect(warm.manifestGets).toBe(0);
    expect(cold.json).toEqual(uncached.json);
    expect(warm.json).toEqual(uncached.json);
    expect((warm.json.backups as { name: string }[]).map((b) => b.name)).toEqual(names);
  });

  it("a manifest rewritten under the same key (another ETag) is read again, not served from the cache", async () => {
    const names = await seed("rewrite", 3);
    await list("rewrite");
    const victim = names[1] as string;
    const key = `rewrite/${victim}/${MANIFEST}`;
    const original = (await readFile(path.join(s3.root, bucket, "r", key), "utf8"));
    await store().put(key, original.slice(0, 50));
    const after = await list("rewrite");
    expect(after.manifestGets).toBe(1);
    expect((after.json.backups as { name: string }[]).map((b) => b.name)).toEqual([names[0], names[2]]);
    expect(after.json.unusable).toEqual([expect.objectContaining({ name: victim, reason: "CorruptManifest" })]);
    await store().put(key, original);
    const healed = await list("rewrite");
    expect((healed.json.backups as { name: string }[]).map((b) => b.name)).toEqual(names);
  });

  it("a deleted or tombstoned backup disappears from the cached listing", async () => {
    const names = await seed("gone", 4);
    await list("gone");
    const del = await runCli(["delete", names[0] as string, "--repository", `s3://${bucket}/r`, "--cluster", "gone", "--s3-endpoint", proxy.endpoint], { ...s3.env, XDG_CACHE_HOME: cacheHome });
    expect(del.exitCode).toBe(0);
    await store().put(`gone/${names[3]}/${TOMBSTONE}`, "{}");
    const after = await list("gone");
    expect(after.manifestGets).toBe(0);
    expect((after.json.backups as { name: string }[]).map((b) => b.name)).toEqual([names[1], names[2]]);
  });

  it("a corrupt cache file is ignored: the listing is read from the store and is the same", async () => {
    await seed("damaged", 5);
    const uncached = await list("damaged", { REPLICATOR_MANIFEST_CACHE: "off" });
    await list("damaged");
    const files = (await cacheFiles()).filter((f) => f.endsWith(".damaged.jsonl"));
    expect(files).toHaveLength(1);
    const file = files[0] as string;
    // Every entry's manifest edited in place (still JSON): no entry matches its sha256 any more.
    await writeFile(file, (await readFile(file, "utf8")).replaceAll('"db-0"', '"db-9"'));
    const edited = await list("damaged");
    expect(edited.manifestGets).toBe(5);
    expect(edited.json).toEqual(uncached.json);
    await writeFile(file, "\u0000not a cache at all");
    const garbage = await list("damaged");
    expect(garbage.manifestGets).toBe(5);
    expect(garbage.json).toEqual(uncached.json);
    // And it was rewritten whole: the next run is warm again.
    expect((await list("damaged")).manifestGets).toBe(0);
  });

  it("a cache directory that cannot be written costs reads, not the listing", async () => {
    await seed("readonly", 2);
    // Under /proc nothing can be created (and Node's recursive mkdir would never return there).
    const r = await runCli(args("readonly"), { ...s3.env, XDG_CACHE_HOME: "/proc/replicator-no-such-dir" });
    expect(r.exitCode).toBe(0);
    expect((r.json!.backups as unknown[]).length).toBe(2);
  });
});
