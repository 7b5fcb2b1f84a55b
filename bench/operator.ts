// `make bench-operator`: the operator's figures from issue 12, on the e2e bench
// (real kube-apiserver/etcd/controller-manager, the test kubelet, MariaDB,
// versitygw, and the operator as its own process with production defaults):
//
//   1. the operator's RSS (VmRSS, and VmHWM = its peak so far, from
//      /proc/<pid>/status) and its JavaScript heap (used / reserved, from its
//      /metrics) idle; with 1,000 ReplicatorBackup resources (1,000
//      backups written into the S3 server and mirrored by catalog sync); and with
//      those 1,000 resources plus 10,000 backups stored in the repository; and
//      every second of the idle window (median, highest). The operator runs with
//      the chart's NODE_OPTIONS (values.yaml nodeOptions; BENCH_NODE_OPTIONS
//      overrides, "" for none);
//   2. the time from applying one new ReplicatorBackup to its Job existing
//      (median of BENCH_JOB_RUNS, default 5), while those resources exist;
//   3. `replicator list` of 10,000 backups in the S3 server (the built CLI,
//      dist/cli/main.js, whole process): once with an empty manifest cache
//      (XDG_CACHE_HOME in a fresh temp directory), then BENCH_LIST_RUNS times
//      (default 3, median) with the cache that first run wrote;
//   4. what an idle operator asks of the API server and the S3 server over
//      BENCH_IDLE_SECONDS (default 600): LIST/WATCH counts from its /metrics
//      (informer and storage-listing totals) and every S3 request, counted by a
//      pass-through proxy (test/harness/s3-fault-proxy.ts, no rules) that the
//      repository's endpoint points at.
//
// How the stored backups are made: manifests (schema-valid, format 1) plus a
// tiny data object each, under cluster "archive" (see writeBackups). The
// first 1,000 are dated in the past, so catalog sync mirrors them as Completed
// resources (that is how a user gets 1,000 resources). The other 9,000 carry a
// finishedAt in the future: catalog sync lists and reads them every interval
// (the memory and S3 cost of 10,000 stored backups) but does not import them
// (its import grace skips a backup that finished less than 30 s ago), so the
// resource count stays at 1,000, as the target states it.
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import path from "node:path";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { parse as parseYaml } from "yaml";
import { AGENT_IMAGE, mariadbStatefulSet, repoRoot, startE2eEnv, type E2eEnv } from "../test/harness/e2e-env.js";
import { startOperator } from "../test/harness/operator.js";
import { startFaultProxy, type FaultProxy } from "../test/harness/s3-fault-proxy.js";
import { median, syntheticBackup, writeSyntheticFiles } from "./synthetic.js";

const NS = "bench";
const BUCKET = "bench";
const CLUSTER = "archive";
const IMPORTED = Number(process.env.BENCH_RESOURCES ?? "1000");
const STORED = Number(process.env.BENCH_STORED ?? "10000");
const IDLE_S = Number(process.env.BENCH_IDLE_SECONDS ?? "600");
const JOB_RUNS = Number(process.env.BENCH_JOB_RUNS ?? "5");
const LIST_RUNS = Number(process.env.BENCH_LIST_RUNS ?? "3");
/**
 * The operator's NODE_OPTIONS (V8 heap flags): the chart's default (values.yaml `nodeOptions`, what a user
 * deploys), or BENCH_NODE_OPTIONS ("" for none). The harness starts the operator without them.
 */
async function nodeOptions(): Promise<string> {
  if (process.env.BENCH_NODE_OPTIONS !== undefined) return process.env.BENCH_NODE_OPTIONS;
  const values = parseYaml(await readFile(path.join(repoRoot, "charts/replicator-operator/values.yaml"), "utf8")) as { nodeOptions?: string };
  return values.nodeOptions ?? "";
}

const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (msg: string): void => {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
};

interface Memory {
  rssMb: number;
  hwmMb: number;
  /** The V8 heap (JavaScript objects) in use and reserved, from the operator's /metrics (NaN from an operator without them). */
  heapUsedMb: number;
  heapTotalMb: number;
}

async function memory(env: E2eEnv): Promise<Memory> {
  const s = await readFile(`/proc/${env.operator.pid}/status`, "utf8");
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(s)?.[1] ?? NaN);
  const text = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
  const gauge = (name: string): number => Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? NaN) / 1048576;
  return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024, heapUsedMb: gauge("nodejs_heap_size_used_bytes"), heapTotalMb: gauge("nodejs_heap_size_total_bytes") };
}

/**
 * Backups [from, to) into the bucket: straight into versitygw's posix directory (BENCH_WRITE=files, the
 * default: 10,000 through the SDK take minutes on 2 busy cores; versitygw serves such files as objects,
 * without the ETag xattr it keeps for its own PUTs), or with PutObject (BENCH_WRITE=sdk).
 */
async function writeBackups(env: E2eEnv, s3: S3Client, from: number, to: number, future: boolean): Promise<void> {
  // One a minute from 2025-01-01 (past), or from a day ahead (future: listed, never imported).
  const finishedFrom = future ? Date.now() + 86_400_000 : Date.UTC(2025, 0, 1);
  if (process.env.BENCH_WRITE !== "sdk") {
    await writeSyntheticFiles(path.join(env.s3.root, BUCKET), CLUSTER, from, to, finishedFrom);
    return;
  }
  let next = from;
  const worker = async (): Promise<void> => {
    while (next < to) {
      const { name, manifest } = syntheticBackup(next++, CLUSTER, finishedFrom);
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${CLUSTER}/${name}/data.sql.zst`, Body: "not-real-data" }));
      await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: `${CLUSTER}/${name}/manifest.json`, Body: manifest }));
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
}

async function countBackups(env: E2eEnv): Promise<number> {
  return (await env.cp.api.get<{ items: unknown[] }>(crPath("replicatorbackups"))).items.length;
}

async function repoStatus(env: E2eEnv): Promise<{ backups?: number; lastSyncTime?: string; conditions?: { type: string; status: string; message?: string }[] }> {
  return (await env.cp.api.get<{ status?: { backups?: number; lastSyncTime?: string } }>(crPath("replicatorrepositories", "default"))).status ?? {};
}

/** The informers' resource names in the counters. */
function resources_(m: Map<string, number>): string[] {
  return [...new Set([...m.keys()].map((k) => /resource="([^"]+)"/.exec(k)?.[1]).filter((r): r is string => Boolean(r)))].sort();
}

async function operatorCounters(env: E2eEnv): Promise<Map<string, number>> {
  const text = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    const hit = /^(replicator_(?:informer_\w+|storage_listings)_total\{[^}]*\}) (\d+)$/.exec(line);
    if (hit) m.set(hit[1] as string, Number(hit[2]));
  }
  return m;
}

function runCli(args: string[], env: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(repoRoot, "dist/cli/main.js"), ...args], { env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", ...env }, maxBuffer: 256 * 1024 * 1024 }, (err, stdout) => {
      if (err) {
        reject(new Error(`replicator list failed: ${err.message}`));
        return;
      }
      const n = (JSON.parse(stdout) as { backups: unknown[] }).backups.length;
      if (n !== STORED) {
        reject(new Error(`replicator list returned ${n} backups, expected ${STORED}`));
        return;
      }
      resolve((performance.now() - t0) / 1000);
    });
  });
}

function runVersion(): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(repoRoot, "dist/cli/main.js"), "--version"], { env: { PATH: process.env.PATH ?? "" } }, (err) => {
      if (err) reject(new Error(`replicator --version failed: ${err.message}`));
      else resolve((performance.now() - t0) / 1000);
    });
  });
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const loadStart = loadavg()[0] ?? 0;
  const out: string[] = [];
  const env = await startE2eEnv();
  let proxy: FaultProxy | undefined;
  const nodeOpts = await nodeOptions();
  try {
    if (nodeOpts) {
      // The same operator process, with the flags the chart gives it.
      await env.operator.stop();
      env.operator = await startOperator({ kubeconfig: env.operatorKubeconfig, agentImage: AGENT_IMAGE, podNamespace: env.operatorNamespace, env: { NODE_OPTIONS: nodeOpts } });
    }
    const pid = env.operator.pid;
    log(`bench up (operator pid ${pid}); settling 20 s`);
    await sleep(20_000);
    const idleMem = await memory(env);

    // The namespace, as setUpNamespace makes it, but with the repository's endpoint on the counting proxy.
    proxy = await startFaultProxy(env.s3.endpoint);
    await env.cp.createNamespace(NS);
    await env.s3.createBucket(BUCKET);
    await env.cp.applyYaml(
      `
apiVersion: v1
kind: Secret
metadata: { name: db-credentials, namespace: ${NS} }
stringData: { username: root, password: "" }
---
apiVersion: v1
kind: Secret
metadata: { name: s3-credentials, namespace: ${NS} }
stringData: { AWS_ACCESS_KEY_ID: ${env.s3.accessKeyId}, AWS_SECRET_ACCESS_KEY: ${env.s3.secretAccessKey} }
`,
      { namespace: NS },
    );
    await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1), { namespace: NS });

    const s3 = new S3Client({ endpoint: env.s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: env.s3.accessKeyId, secretAccessKey: env.s3.secretAccessKey } });
    let w0 = Date.now();
    await writeBackups(env, s3, 0, IMPORTED, false);
    log(`${IMPORTED} backups written to S3 in ${((Date.now() - w0) / 1000).toFixed(1)} s`);

    const i0 = Date.now();
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: default, namespace: ${NS} }
spec:
  s3: { bucket: ${BUCKET}, prefix: "", endpoint: "${proxy.endpoint}", credentialsSecret: { name: s3-credentials } }
`,
      { namespace: NS },
    );
    await env.waitFor(`${IMPORTED} mirrored resources`, async () => ((await countBackups(env)) >= IMPORTED ? true : undefined), 900_000);
    const importS = (Date.now() - i0) / 1000;
    log(`catalog sync mirrored ${IMPORTED} resources in ${importS.toFixed(1)} s; settling 20 s`);
    await sleep(20_000);
    const mem1k = await memory(env);

    w0 = Date.now();
    await writeBackups(env, s3, IMPORTED, STORED, true);
    log(`${STORED - IMPORTED} more backups written in ${((Date.now() - w0) / 1000).toFixed(1)} s; waiting for a sync that lists ${STORED}`);
    await env.waitFor(`a sync listing ${STORED} backups`, async () => ((await repoStatus(env)).backups === STORED ? true : undefined), 900_000);
    const resources = await countBackups(env);
    await sleep(20_000);
    const mem10k = await memory(env);
    log(`synced: ${resources} resources, ${STORED} stored; RSS ${mem10k.rssMb.toFixed(1)} MiB`);

    // A new ReplicatorBackup → its Job, while the resources exist. Each backup finishes before the next
    // is applied (backups of one server run one after another).
    await env.waitFor("db-0 ready", async () => {
      const p = await env.cp.api.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`/api/v1/namespaces/${NS}/pods/db-0`);
      return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? true : undefined;
    }, 300_000);
    const jobMs: number[] = [];
    for (let i = 0; i < JOB_RUNS; i++) {
      const name = `probe-${i}`;
      const a0 = performance.now();
      await env.cp.api.post(crPath("replicatorbackups"), {
        apiVersion: "replicator.dev/v1alpha1",
        kind: "ReplicatorBackup",
        metadata: { name, namespace: NS },
        spec: { source: { statefulSet: "db", credentialsSecret: { name: "db-credentials" } } },
      });
      const jobPath = `/apis/batch/v1/namespaces/${NS}/jobs/${name}-backup`;
      const deadline = Date.now() + 120_000;
      for (;;) {
        const found = await env.cp.api.get(jobPath).then(() => true, () => false);
        if (found) break;
        if (Date.now() > deadline) throw new Error(`no Job ${name}-backup after 120 s`);
        await sleep(10);
      }
      jobMs.push(performance.now() - a0);
      log(`${name}: Job after ${jobMs.at(-1)?.toFixed(0)} ms`);
      const st = await env.waitFor(`${name} to finish`, async () => {
        const o = await env.cp.api.get<{ status?: { phase?: string; message?: string } }>(crPath("replicatorbackups", name));
        return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
      }, 300_000);
      if (st.phase !== "Completed") log(`${name} ended ${st.phase}: ${st.message ?? ""}`);
    }
    const memAfterJobs = await memory(env);

    // replicator list of the STORED backups (direct to the S3 server, not through the proxy), with a
    // manifest cache directory of its own: the first run finds it empty (cold: it reads every manifest
    // and writes the cache), the next LIST_RUNS find it filled (warm: they read only the listing).
    const cacheHome = await mkdtemp(path.join(tmpdir(), "replicator-bench-cache-"));
    const listArgs = ["list", "--repository", `s3://${BUCKET}`, "--cluster", CLUSTER, "--json"];
    const listCold = await runCli(listArgs, { ...env.s3.env, XDG_CACHE_HOME: cacheHome });
    log(`replicator list, empty cache: ${listCold.toFixed(2)} s`);
    const listS: number[] = [];
    for (let i = 0; i < LIST_RUNS; i++) {
      listS.push(await runCli(listArgs, { ...env.s3.env, XDG_CACHE_HOME: cacheHome }));
      log(`replicator list, cache filled: ${listS.at(-1)?.toFixed(2)} s`);
    }
    await rm(cacheHome, { recursive: true, force: true });
    // Node's start-up with the CLI's own modules alone (what every command pays before any work).
    const startupS: number[] = [];
    for (let i = 0; i < LIST_RUNS; i++) startupS.push(await runVersion());
    log(`replicator --version: ${startupS.map((x) => x.toFixed(2)).join(", ")} s`);

    // Idle window.
    log(`idle window: ${IDLE_S} s`);
    const before = await operatorCounters(env);
    const r0 = proxy.requests.length;
    // RSS every second: its highest and its median over the window (a catalog sync a minute; the
    // garbage of each stays until a major GC, so one reading can land anywhere in that cycle).
    const idleRss: number[] = [];
    const idleEnd = Date.now() + IDLE_S * 1000;
    while (Date.now() < idleEnd) {
      idleRss.push((await memory(env)).rssMb);
      await sleep(1000);
    }
    const after = await operatorCounters(env);
    const reqs = proxy.requests.slice(r0);
    const memIdleEnd = await memory(env);
    const delta = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    const byOp = new Map<string, number>();
    for (const r of reqs) byOp.set(r.op, (byOp.get(r.op) ?? 0) + 1);

    const f1 = (n: number): string => n.toFixed(1);
    const heap = (m: Memory): string => (Number.isNaN(m.heapUsedMb) ? "–" : `${f1(m.heapUsedMb)} / ${f1(m.heapTotalMb)}`);
    out.push(
      `# Operator bench (${new Date().toISOString()})`,
      "",
      `Operator: node dist/operator/main.js, production defaults (resync, leader election, syncIntervalSeconds 60), LOG_LEVEL=debug (the harness's), NODE_OPTIONS=${nodeOpts ? `"${nodeOpts}"` : "(none)"}.`,
      `Stored backups: synthetic manifests + 13-byte data objects in versitygw (cluster "${CLUSTER}", written ${process.env.BENCH_WRITE === "sdk" ? "with PutObject" : "as files into its posix directory"}); the first ${IMPORTED} mirrored by catalog sync,`,
      `the rest dated in the future so the sync lists them but does not import them. Host: ${process.env.BENCH_HOST_NOTE ?? "2 shared cores"}.`,
      "",
      "## Memory (operator process, /proc/<pid>/status)",
      "",
      "| State | ReplicatorBackup resources | Stored backups | VmRSS MiB | VmHWM MiB (peak so far) | JS heap used / reserved MiB | Target |",
      "|---|---:|---:|---:|---:|---:|---|",
      `| idle, nothing to watch (20 s after start) | 0 | 0 | ${f1(idleMem.rssMb)} | ${f1(idleMem.hwmMb)} | ${heap(idleMem)} | |`,
      `| ${IMPORTED} resources mirrored (20 s after the last) | ${IMPORTED} | ${IMPORTED} | ${f1(mem1k.rssMb)} | ${f1(mem1k.hwmMb)} | ${heap(mem1k)} | |`,
      `| + ${STORED} stored, after a sync listed them all | ${resources} | ${STORED} | ${f1(mem10k.rssMb)} | ${f1(mem10k.hwmMb)} | ${heap(mem10k)} | RSS ≤ 150 MB (143.1 MiB) |`,
      `| after ${JOB_RUNS} backups run | ${resources + JOB_RUNS} | ${STORED} + ${JOB_RUNS} | ${f1(memAfterJobs.rssMb)} | ${f1(memAfterJobs.hwmMb)} | ${heap(memAfterJobs)} | |`,
      `| end of the ${IDLE_S} s idle window | ${resources + JOB_RUNS} | ${STORED} + ${JOB_RUNS} | ${f1(memIdleEnd.rssMb)} | ${f1(memIdleEnd.hwmMb)} | ${heap(memIdleEnd)} | RSS ≤ 150 MB (143.1 MiB) |`,
      `| idle window, RSS each second: median / highest | ${resources + JOB_RUNS} | ${STORED} + ${JOB_RUNS} | ${f1(median(idleRss))} / ${f1(Math.max(...idleRss))} | | | RSS ≤ 150 MB (143.1 MiB) |`,
      "",
      `Catalog sync mirrored ${IMPORTED} backups as resources in ${f1(importS)} s (from applying the repository).`,
      "",
      "## Latency",
      "",
      "| Measure | Runs (s) | Median s | Target |",
      "|---|---|---:|---|",
      `| new ReplicatorBackup → its Job exists (${resources}+ resources, ${STORED} stored; polled every 10 ms) | ${jobMs.map((m) => (m / 1000).toFixed(3)).join(", ")} | ${(median(jobMs) / 1000).toFixed(3)} | ≤ 1 s |`,
      `| \`replicator list --json\` of ${STORED} backups in S3 (whole process), manifest cache empty (first run) | ${listCold.toFixed(2)} | ${listCold.toFixed(2)} | |`,
      `| \`replicator list --json\` of ${STORED} backups in S3 (whole process), manifest cache filled | ${listS.map((s) => s.toFixed(2)).join(", ")} | ${median(listS).toFixed(2)} | ≤ 3 s |`,
      `| \`replicator --version\` (node start-up and the CLI's modules, whole process) | ${startupS.map((s) => s.toFixed(2)).join(", ")} | ${median(startupS).toFixed(2)} | |`,
      "",
      `## An idle operator over ${IDLE_S} s (${resources + JOB_RUNS} resources, ${STORED + JOB_RUNS} stored backups, syncIntervalSeconds 60)`,
      "",
      "| Informer (operator /metrics, Δ over the window) | LIST requests | WATCH requests | resyncs from cache (no request) | watchdog restarts |",
      "|---|---:|---:|---:|---:|",
      ...resources_(after).map((r) => `| ${r} | ${delta(`replicator_informer_lists_total{resource="${r}"}`)} | ${delta(`replicator_informer_watches_total{resource="${r}"}`)} | ${delta(`replicator_informer_resyncs_total{resource="${r}"}`)} | ${delta(`replicator_informer_watchdog_restarts_total{resource="${r}"}`)} |`),
      "",
      ...[...after.keys()].filter((k) => k.startsWith("replicator_storage_listings_total")).map((k) => `Storage listings (catalog syncs that listed the repository), \`${k}\`: ${delta(k)} in ${IDLE_S} s.`),
      "",
      `S3 requests to the repository's endpoint (counted by a pass-through proxy): ${reqs.length} in ${IDLE_S} s` +
        ` (${[...byOp].map(([op, n]) => `${op} ${n}`).join(", ")}); ${f1(reqs.length / (IDLE_S / 60))} a minute.`,
      "",
      `Whole bench: ${f1((Date.now() - t0) / 1000)} s. 1-minute load average at start ${loadStart.toFixed(2)}, at end ${(loadavg()[0] ?? 0).toFixed(2)} (2 cores, shared: latencies include other work on the machine).`,
    );
    const report = out.join("\n");
    process.stdout.write(`${report}\n`);
    await mkdir(path.join(repoRoot, "bench/results"), { recursive: true });
    await writeFile(path.join(repoRoot, "bench/results/operator-latest.md"), `${report}\n`);
    s3.destroy();
  } finally {
    await proxy?.close().catch(() => undefined);
    await env.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
