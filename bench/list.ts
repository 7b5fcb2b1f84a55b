// `replicator list` of many backups in the S3 server (issue 12: 10,000 in
// ≤ 3 s, whole process), on its own: versitygw (test/harness/s3.ts) and the
// built CLI, no Kubernetes. Run with `npx tsx bench/list.ts`.
//
// The backups are the synthetic ones of bench/operator.ts (a schema-valid
// format-1 manifest and a 13-byte data object each, cluster "archive"),
// written straight into versitygw's posix directory (seconds for 10,000).
// versitygw runs as the tests start it (test/harness/s3.ts): it closes the
// connection after every response unless VGW_KEEP_ALIVE=true is in the
// environment (the harness passes the environment on), so each request of a
// run opens a new connection, as the numbers in the README were taken.
//
// Per build (dist/, and BENCH_BEFORE_DIST=DIR for another build in the same
// rounds), BENCH_LIST_RUNS rounds (default 3, medians), each:
//   - node start-up alone: `node dist/cli/main.js --version`;
//   - `list --json` with an empty manifest cache (a fresh XDG_CACHE_HOME), reading
//     the repository's manifest index (src/storage/index-segments.ts) that the
//     first untimed run wrote (a build without the index reads every manifest);
//   - the same with REPLICATOR_INDEX=off: every manifest read, as before the index;
//   - `list --json` with a warm cache (filled by one untimed run first).
// Every list must return BENCH_STORED backups, or the bench fails.
// Then, per build, the operator's catalog-sync path in one process (a
// Repository.list() with the in-memory ManifestCache, as
// src/operator/controllers/catalog does every interval): one sync that
// reads the index (and one with REPLICATOR_INDEX=off that reads every
// manifest), then BENCH_LIST_RUNS syncs with the cache warm.
// BENCH_CPU_PROF=DIR adds one untimed empty and one warm run per build under
// `node --cpu-prof --cpu-prof-dir DIR` (open the .cpuprofile in Chrome DevTools).
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { startS3, type S3Server } from "../test/harness/s3.js";
import { median, writeSyntheticFiles } from "./synthetic.js";

const repoRoot = path.resolve(import.meta.dirname, "..");
const BUCKET = "bench";
const CLUSTER = "archive";
const STORED = Number(process.env.BENCH_STORED ?? "10000");
const RUNS = Number(process.env.BENCH_LIST_RUNS ?? "3");
const CPU_PROF = process.env.BENCH_CPU_PROF;

const log = (msg: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

interface Run {
  seconds: number;
  stdout: string;
}

function run(dist: string, args: string[], env: Record<string, string>, nodeArgs: string[] = []): Promise<Run> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [...nodeArgs, path.join(dist, "cli/main.js"), ...args],
      { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...env }, maxBuffer: 256 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const seconds = (performance.now() - t0) / 1000;
        if (err) {
          reject(new Error(`replicator ${args.join(" ")} failed: ${err.message} ${stderr}`));
          return;
        }
        resolve({ seconds, stdout });
      },
    );
  });
}

async function list(dist: string, s3: S3Server, cacheHome: string, nodeArgs: string[] = [], env: Record<string, string> = {}): Promise<number> {
  const r = await run(dist, ["list", "--repository", `s3://${BUCKET}`, "--cluster", CLUSTER, "--json"], { ...s3.env, XDG_CACHE_HOME: cacheHome, ...env }, nodeArgs);
  const json = JSON.parse(r.stdout.trim().split("\n").pop() ?? "{}") as { backups?: { name: string }[] };
  const n = json.backups?.length ?? -1;
  if (n !== STORED) throw new Error(`replicator list (${dist}) returned ${n} backups, expected ${STORED}`);
  return r.seconds;
}

interface Rows {
  startup: number[];
  empty: number[];
  emptyNoIndex: number[];
  warm: number[];
}

async function measure(builds: [string, string][], s3: S3Server, label: string): Promise<Map<string, Rows>> {
  // One untimed run of each build first, so the first timed run does not pay for cold files.
  const rows = new Map<string, Rows>(builds.map(([name]) => [name, { startup: [], empty: [], emptyNoIndex: [], warm: [] }]));
  const warmHomes = new Map<string, string>();
  for (const [name, dist] of builds) {
    const home = await mkdtemp(path.join(tmpdir(), "replicator-bench-warm-"));
    await list(dist, s3, home);
    warmHomes.set(name, home);
  }
  if (CPU_PROF) {
    for (const [name, dist] of builds) {
      const dir = path.join(CPU_PROF, `${label}-${name}`);
      const home = await mkdtemp(path.join(tmpdir(), "replicator-bench-prof-"));
      await list(dist, s3, home, ["--cpu-prof", "--cpu-prof-dir", path.join(dir, "empty")]);
      await list(dist, s3, warmHomes.get(name) as string, ["--cpu-prof", "--cpu-prof-dir", path.join(dir, "warm")]);
      await rm(home, { recursive: true, force: true });
      log(`${label} ${name}: CPU profiles in ${dir}/{empty,warm}`);
    }
  }
  for (let round = 0; round < RUNS; round++) {
    // Alternate the order of the builds each round, so drift of a shared machine falls on both.
    const order = round % 2 === 0 ? builds : [...builds].reverse();
    for (const [name, dist] of order) {
      const r = rows.get(name) as Rows;
      r.startup.push((await run(dist, ["--version"], {})).seconds);
      const home = await mkdtemp(path.join(tmpdir(), "replicator-bench-empty-"));
      r.empty.push(await list(dist, s3, home));
      await rm(home, { recursive: true, force: true });
      const bare = await mkdtemp(path.join(tmpdir(), "replicator-bench-empty-"));
      r.emptyNoIndex.push(await list(dist, s3, bare, [], { REPLICATOR_INDEX: "off" }));
      await rm(bare, { recursive: true, force: true });
      r.warm.push(await list(dist, s3, warmHomes.get(name) as string));
      log(
        `${label} round ${round + 1} ${name}: start-up ${r.startup.at(-1)?.toFixed(2)} s, empty ${r.empty.at(-1)?.toFixed(2)} s, empty without the index ${r.emptyNoIndex.at(-1)?.toFixed(2)} s, warm ${r.warm.at(-1)?.toFixed(2)} s`,
      );
    }
  }
  for (const home of warmHomes.values()) await rm(home, { recursive: true, force: true });
  return rows;
}

interface Sync {
  first: number;
  firstNoIndex: number;
  warm: number[];
}

/**
 * The operator's catalog sync of the cluster, in a process of its own with `dist`'s storage modules:
 * Repository.list() with one in-memory ManifestCache, once cold and RUNS times warm.
 */
async function catalogSync(dist: string, s3: S3Server): Promise<Sync> {
  const withIndex = await syncTimes(dist, s3, {});
  const noIndex = await syncTimes(dist, s3, { REPLICATOR_INDEX: "off" });
  return { first: withIndex[0] as number, firstNoIndex: noIndex[0] as number, warm: withIndex.slice(1) };
}

async function syncTimes(dist: string, s3: S3Server, env: Record<string, string>): Promise<number[]> {
  const script = `
    const { S3ObjectStore } = await import(${JSON.stringify(path.join(dist, "storage/s3/s3-store.js"))});
    const { Repository } = await import(${JSON.stringify(path.join(dist, "storage/repository.js"))});
    const { ManifestCache } = await import(${JSON.stringify(path.join(dist, "storage/manifest-cache.js"))});
    const store = new S3ObjectStore({ bucket: ${JSON.stringify(BUCKET)}, prefix: "", endpoint: ${JSON.stringify(s3.endpoint)}, credentials: { accessKeyId: ${JSON.stringify(s3.accessKeyId)}, secretAccessKey: ${JSON.stringify(s3.secretAccessKey)} } });
    const manifestCache = new ManifestCache();
    const times = [];
    for (let i = 0; i <= ${RUNS}; i++) {
      const t0 = performance.now();
      const { backups } = await new Repository(store, ${JSON.stringify(CLUSTER)}, { manifestCache }).list();
      times.push((performance.now() - t0) / 1000);
      if (backups.length !== ${STORED}) throw new Error("catalog sync listed " + backups.length);
    }
    store.close();
    process.stdout.write(JSON.stringify(times));
  `;
  return new Promise<number[]>((resolve, reject) => {
    execFile(process.execPath, ["--input-type=module", "-e", script], { env: { PATH: process.env.PATH ?? "", ...env }, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`catalog sync (${dist}) failed: ${err.message} ${stderr}`));
      else resolve(JSON.parse(stdout) as number[]);
    });
  });
}

async function main(): Promise<void> {
  const builds: [string, string][] = [["this build", path.resolve(process.env.BENCH_DIST ?? path.join(repoRoot, "dist"))]];
  if (process.env.BENCH_BEFORE_DIST) builds.push(["before", path.resolve(process.env.BENCH_BEFORE_DIST)]);
  const loadStart = loadavg()[0] ?? 0;
  const s3 = await startS3();
  try {
    await s3.createBucket(BUCKET);
    const w0 = performance.now();
    await writeSyntheticFiles(path.join(s3.root, BUCKET), CLUSTER, 0, STORED);
    log(`${STORED} backups written in ${((performance.now() - w0) / 1000).toFixed(1)} s`);
    const rows = await measure(builds, s3, "cli");
    const syncs = new Map<string, Sync>();
    for (const [name, dist] of builds) {
      syncs.set(name, await catalogSync(dist, s3));
      log(`catalog-sync path, ${name}: first ${syncs.get(name)?.first.toFixed(2)} s (without the index ${syncs.get(name)?.firstNoIndex.toFixed(2)} s), warm ${syncs.get(name)?.warm.map((x) => x.toFixed(2)).join(", ")} s`);
    }
    const f = (xs: number[]): string => `${median(xs).toFixed(2)} (${xs.map((x) => x.toFixed(2)).join(", ")})`;
    const out = [
      `# replicator list bench (${new Date().toISOString()})`,
      "",
      `${STORED} backups in versitygw (cluster "${CLUSTER}"${process.env.VGW_KEEP_ALIVE ? `, VGW_KEEP_ALIVE=${process.env.VGW_KEEP_ALIVE}` : ", a new connection per request"}), wall seconds, median of ${RUNS} (each run in brackets).`,
      "",
      "| build | node start-up (`--version`) | `list --json`, empty cache | empty cache, `REPLICATOR_INDEX=off` | `list --json`, warm cache | catalog-sync path: first sync | first sync, `REPLICATOR_INDEX=off` | catalog-sync path: warm sync |",
      "|---|--:|--:|--:|--:|--:|--:|--:|",
    ];
    for (const [name, dist] of builds) {
      const r = rows.get(name) as Rows;
      const sync = syncs.get(name) as Sync;
      out.push(`| ${name} (${dist}) | ${f(r.startup)} | ${f(r.empty)} | ${f(r.emptyNoIndex)} | ${f(r.warm)} | ${sync.first.toFixed(2)} | ${sync.firstNoIndex.toFixed(2)} | ${f(sync.warm)} |`);
    }
    out.push("");
    out.push(`1-minute load average at start ${loadStart.toFixed(2)}, at end ${(loadavg()[0] ?? 0).toFixed(2)} (shared cores: times include other work).`);
    const report = out.join("\n");
    process.stdout.write(`${report}\n`);
    await mkdir(path.join(repoRoot, "bench/results"), { recursive: true });
    await writeFile(path.join(repoRoot, "bench/results/list-latest.md"), `${report}\n`);
  } finally {
    await s3.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
