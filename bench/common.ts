// What the parts of `make bench` share (bench/run.ts: MariaDB; bench/pg.ts:
// PostgreSQL; bench/s3.ts: S3 throughput): clean-up, shell pipelines, the
// result rows and their markdown tables, paired rounds, and running the CLI
// with the agent's peak RSS measured.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { availableParallelism, tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { performance } from "node:perf_hooks";
import { execa } from "execa";
import { startMariaDb, type MariaDb } from "../test/harness/mariadb.js";

export const MB = 1_000_000;

// ---------------------------------------------------------------- cleanup

const cleanups: { what: string; fn: () => Promise<void> }[] = [];
export function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}
let cleaning: Promise<void> | undefined;
/** A MariaDB server with the part's flags, destroyed (once) when the bench ends or when the caller destroys it. */
export async function mariadbServer(tag: string, serverArgs: string[], opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb({ ...opts, args: [...serverArgs, ...(opts.args ?? [])] });
  let destroyed = false;
  const destroy = async (): Promise<void> => {
    if (destroyed) return;
    destroyed = true;
    await s.destroy();
  };
  onCleanup(`server ${tag}`, destroy);
  return { ...s, destroy };
}

export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of cleanups.reverse()) {
      await c.fn().catch((err: unknown) => { console.error(`cleanup of ${c.what} failed: ${String(err)}`); });
    }
  })();
  return cleaning;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    void cleanupAll().finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
  });
}

// ---------------------------------------------------------------- helpers

export const q = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/** An OS user to run a command as (PostgreSQL's, when the bench runs as root). */
export interface RunAs {
  uid: number;
  gid: number;
}

export async function sh(script: string, what: string, opts: { env?: Record<string, string>; user?: RunAs | undefined; cwd?: string } = {}): Promise<void> {
  const r = await execa("bash", ["-c", `set -o pipefail; ${script}`], {
    reject: false,
    stdin: "ignore",
    stripFinalNewline: true,
    ...(opts.env ? { env: opts.env, extendEnv: true } : {}),
    ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  if (r.exitCode !== 0) {
    const err = (r.stderr || r.stdout).split("\n").filter(Boolean).slice(-3).join(" | ");
    throw new Error(`${what} exited ${String(r.exitCode)}: ${err.slice(0, 300)}`);
  }
}

// ---------------------------------------------------------------- the machine's CPU busy

let clkTck: number | undefined;
/** Jiffies per second (`getconf CLK_TCK`, else 100). */
function clockTicks(): number {
  if (clkTck === undefined) {
    const r = spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" });
    const n = r.error || r.status !== 0 ? NaN : Number(r.stdout.trim());
    clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

/** The whole machine's busy jiffies so far: user+nice+system+irq+softirq+steal of /proc/stat's "cpu" line. */
function busyJiffies(): number | undefined {
  try {
    const f = (readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "").trim().split(/\s+/);
    if (f[0] !== "cpu") return undefined;
    const n = (i: number): number => Number(f[i] ?? "0");
    const sum = n(1) + n(2) + n(3) + n(6) + n(7) + n(8);
    return Number.isFinite(sum) ? sum : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU jiffies (user + system) used so far by every process named `comm`
 * (/proc/PID/stat; a process that ended is no longer counted, so only for
 * servers that outlive the interval: the bench's S3 server).
 */
function commJiffies(comm: string): number {
  let sum = 0;
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const st = readFileSync(`/proc/${pid}/stat`, "utf8");
      const close = st.lastIndexOf(")");
      if (st.slice(st.indexOf("(") + 1, close) !== comm) continue;
      // After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15.
      const f = st.slice(close + 2).split(" ");
      sum += Number(f[11] ?? "0") + Number(f[12] ?? "0");
    } catch {
      // Gone meanwhile.
    }
  }
  return sum;
}

/** What timed() saw since the last takeCpu(): busy jiffies over its intervals, their wall seconds, and the S3 server's jiffies. */
let cpuSeen = { jiffies: 0, seconds: 0, ok: true, s3: 0 };
/** Cores busy (machine-wide) during the timed() intervals since the last call, or undefined, and the S3 server's CPU seconds; resets. */
function takeCpu(): { cores: number | undefined; s3Seconds: number } {
  const c = cpuSeen;
  cpuSeen = { jiffies: 0, seconds: 0, ok: true, s3: 0 };
  return { cores: c.ok && c.seconds > 0 ? c.jiffies / clockTicks() / c.seconds : undefined, s3Seconds: c.s3 / clockTicks() };
}

/**
 * Wall seconds of `fn`. Also notes the machine's busy CPU jiffies over the same interval
 * (/proc/stat), which step() and pairedRounds() turn into the row's "cores busy".
 */
export async function timed(fn: () => Promise<void>): Promise<number> {
  // Every timed interval starts with nothing dirty in the page cache: the rows before it (and
  // this row's own untimed setup) leave their writes to the kernel, and a row that syncs (the
  // agent's durable writes, a `sync --file-system`) would otherwise pay for them. Not timed.
  spawnSync("sync", [], { stdio: "ignore" });
  const s0 = commJiffies(S3_SERVER_COMM);
  const j0 = busyJiffies();
  const t0 = performance.now();
  await fn();
  const sec = (performance.now() - t0) / 1000;
  const j1 = busyJiffies();
  cpuSeen.s3 += commJiffies(S3_SERVER_COMM) - s0;
  if (j0 === undefined || j1 === undefined) cpuSeen.ok = false;
  else {
    cpuSeen.jiffies += j1 - j0;
    cpuSeen.seconds += sec;
  }
  return sec;
}

/** The bench's S3 server (versitygw): its CPU seconds over a row are shown beside the agent's. */
const S3_SERVER_COMM = "versitygw";

/** Records the cores busy of the run that just ended on its row, and the S3 server's CPU if it worked. */
function noteCpu(row: Row): void {
  const c = takeCpu();
  if (c.cores !== undefined) (row.cpu ??= []).push(c.cores);
  // A few jiffies of an idle server's housekeeping are not its share of the row.
  if (c.s3Seconds >= 0.05) (row.s3Cpu ??= []).push(c.s3Seconds);
}

export async function fileSize(p: string): Promise<number> {
  return (await stat(p)).size;
}

export async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

export async function tail(file: string, lines = 3): Promise<string> {
  const t = await readFile(file, "utf8").catch(() => "");
  return t.split("\n").filter(Boolean).slice(-lines).join(" | ").slice(0, 300);
}

export async function version(cmd: string, args: string[]): Promise<string> {
  const r = await execa(cmd, args, { reject: false, all: true });
  const line = r.all.split("\n").filter(Boolean).pop()?.trim() ?? "?";
  return line.replace(/,? (for|built|debian-linux).*$/, "").replace(/\s+/g, " ");
}

export function fmt(n: number, digits: number): string {
  return n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? NaN) : ((s[mid - 1] ?? NaN) + (s[mid] ?? NaN)) / 2;
}

/** Other load on the machine (the load average counts our own servers too, so only a clear excess). */
export const busy = (load: number): boolean => load > availableParallelism() * 0.75;

// ---------------------------------------------------------------- the agent's peak RSS

// The replicator CLI runs with `node --import <probe>`: at exit the probe
// writes its own process's VmHWM (the peak resident set, from
// /proc/self/status) to the file named by REPLICATOR_BENCH_RSS_FILE. That is
// the agent alone: the tools it starts (zstd, mariadb-dump, pg_dump, tar,
// mariabackup) are other processes and are not counted. (`/usr/bin/time -f %M`
// would not do: wait4's rusage is the largest of the process and its waited
// descendants.) It also writes the agent's own CPU time (process.cpuUsage(),
// user + system; its tools' CPU not included). The variable is removed at
// start, so nothing the agent starts inherits it.
const PROBE = `import { readFileSync, writeFileSync } from "node:fs";
const out = process.env.REPLICATOR_BENCH_RSS_FILE;
delete process.env.REPLICATOR_BENCH_RSS_FILE;
if (out) {
  process.on("exit", () => {
    try {
      const m = /^VmHWM:\\s+(\\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
      const cpu = process.cpuUsage();
      if (m) writeFileSync(out, m[1] + " " + (cpu.user + cpu.system));
    } catch {}
  });
}
`;

let probeDir: Promise<string> | undefined;
let probeCount = 0;

/** A directory for the probe and its output that every user can write (the CLI may run as PostgreSQL's user). */
function rssDir(): Promise<string> {
  probeDir ??= (async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-bench-rss-"));
    onCleanup("RSS probe", () => rm(dir, { recursive: true, force: true }));
    await chmod(dir, 0o1777);
    await writeFile(path.join(dir, "probe.mjs"), PROBE, { mode: 0o644 });
    return dir;
  })();
  return probeDir;
}

// ---------------------------------------------------------------- the CLI

export interface CliJson {
  ok?: boolean;
  name?: string;
  size?: number;
  rawSize?: number;
  durationMs?: number;
  error?: string;
  reason?: string;
  /** The agent process's peak RSS in bytes, and its own CPU seconds (measured by the bench, not printed by the CLI). */
  peakRss?: number;
  agentCpu?: number;
}

/** Runs `node [probe] main args --json --no-progress`; throws with the CLI's error unless it succeeded. */
export async function runReplicator(
  main: string,
  args: string[],
  env: Record<string, string>,
  cwd: string,
  user?: RunAs,
): Promise<CliJson> {
  const dir = await rssDir();
  const rssFile = path.join(dir, `rss-${String(++probeCount)}`);
  const r = await execa(process.execPath, ["--import", pathToFileURL(path.join(dir, "probe.mjs")).href, main, ...args, "--json", "--no-progress"], {
    reject: false,
    stdin: "ignore",
    cwd,
    extendEnv: true,
    env: { REPLICATOR_CONFIG: undefined, REPLICATOR_DB_PASSWORD: undefined, ...env, REPLICATOR_BENCH_RSS_FILE: rssFile },
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  });
  const last = r.stdout.trim().split("\n").pop() ?? "";
  let json: CliJson | undefined;
  if (last.startsWith("{")) {
    try {
      json = JSON.parse(last) as CliJson;
    } catch {
      json = undefined;
    }
  }
  const [kbText, cpuText] = (await readFile(rssFile, "utf8").catch(() => "")).trim().split(" ");
  const kb = Number(kbText);
  const cpuMicros = Number(cpuText);
  await rm(rssFile, { force: true });
  if (r.exitCode !== 0 || json?.ok !== true) {
    const lines = r.stderr.split("\n").map((l) => l.trim()).filter(Boolean);
    const why = json?.error ?? lines.find((l) => /error/i.test(l)) ?? lines.at(-1) ?? "no output";
    throw new Error(`replicator ${args[0] ?? ""} exited ${String(r.exitCode)}: ${why.slice(0, 300)}`);
  }
  if (kb > 0) json.peakRss = kb * 1024;
  if (cpuMicros > 0) json.agentCpu = cpuMicros / 1e6;
  return json;
}

// ---------------------------------------------------------------- results

export interface Row {
  name: string;
  baseline?: boolean;
  seconds?: number;
  /** Paired rounds: every run's seconds, and its ratio to the baseline's run of the same round. */
  samples?: number[];
  ratios?: number[];
  bytes?: number;
  /** The agent's peak RSS (bytes) in each run of a replicator row. */
  rss?: number[];
  /** Each run's CPU cores busy, machine-wide (/proc/stat over the run's timed interval). */
  cpu?: number[];
  /** Each run's CPU seconds of the agent process alone (replicator rows), and of the S3 server (rows it worked in). */
  agentCpu?: number[];
  s3Cpu?: number[];
  check: string;
  error?: string;
}

/** Record a replicator run's agent figures on its row: its peak RSS and its own CPU seconds. */
export function noteAgent(row: Row, j: CliJson | undefined): void {
  if (j?.agentCpu !== undefined) (row.agentCpu ??= []).push(j.agentCpu);
  if (j?.peakRss === undefined) return;
  (row.rss ??= []).push(j.peakRss);
}

/** A row's highest peak RSS over its runs (bytes). */
export const peakRss = (r: Row): number | undefined => (r.rss && r.rss.length > 0 ? Math.max(...r.rss) : undefined);

/** The issue's memory target for the agent. */
export const RSS_TARGET = 250 * MB;

/**
 * A markdown table of `rows`. `rawBytes` is the numerator of MB/s. A column
 * "Agent peak RSS MB" (the highest of the row's runs) is added when any row has one.
 */
export function table(rows: Row[], rawBytes: number | undefined, bytesLabel: string): string {
  const base = rows.find((r) => r.baseline);
  const paired = rows.some((r) => (r.samples?.length ?? 0) > 1);
  const withRss = rows.some((r) => peakRss(r) !== undefined);
  const withCpu = rows.some((r) => (r.cpu?.length ?? 0) > 0);
  const withAgentCpu = rows.some((r) => (r.agentCpu?.length ?? 0) > 0);
  const withS3Cpu = rows.some((r) => (r.s3Cpu?.length ?? 0) > 0);
  const medianOf = (xs: number[] | undefined): string => (xs !== undefined && xs.length > 0 ? fmt(median(xs), 2) : "—");
  const head = [
    "Method",
    paired ? "Wall s (median)" : "Wall s",
    bytesLabel,
    "MB/s (raw)",
    paired ? "Time vs baseline (median of paired ratios)" : "Time vs baseline",
    "Size vs baseline",
    ...(withCpu ? [`CPU cores busy of ${availableParallelism()} (machine${paired ? ", median" : ""})`] : []),
    ...(withAgentCpu ? [`Agent CPU s${paired ? " (median)" : ""}`] : []),
    ...(withS3Cpu ? [`S3 server CPU s${paired ? " (median)" : ""}`] : []),
    ...(withRss ? ["Agent peak RSS MB"] : []),
    "Check",
  ];
  const lines = [head, head.map((h) => (h === "Method" || h === "Check" ? "---" : "---:"))];
  for (const r of rows) {
    const name = r.baseline ? `${r.name} **(baseline)**` : r.name;
    if (r.error !== undefined || r.seconds === undefined) {
      const dashes = [withCpu, withAgentCpu, withS3Cpu, withRss].filter(Boolean).map(() => "—");
      lines.push([name, "FAILED", "—", "—", "—", "—", ...dashes, `FAILED: ${r.error ?? "no result"}`]);
      continue;
    }
    const ok = (x: number | undefined): x is number => x !== undefined && Number.isFinite(x) && x > 0;
    const rss = peakRss(r);
    lines.push([
      name,
      fmt(r.seconds, 2),
      ok(r.bytes) ? fmt(r.bytes / MB, 1) : "—",
      ok(rawBytes) ? fmt(rawBytes / MB / r.seconds, 1) : "—",
      r.ratios !== undefined && r.ratios.length > 0
        ? `${fmt(median(r.ratios), 2)}×${r.ratios.length > 1 ? ` (${fmt(Math.min(...r.ratios), 2)}–${fmt(Math.max(...r.ratios), 2)}, n=${r.ratios.length})` : ""}`
        : base?.seconds !== undefined && base.error === undefined ? `${fmt(r.seconds / base.seconds, 2)}×` : "n/a",
      ok(r.bytes) && ok(base?.bytes) && base.error === undefined ? `${fmt(r.bytes / base.bytes, 2)}×` : "n/a",
      ...(withCpu ? [medianOf(r.cpu)] : []),
      ...(withAgentCpu ? [medianOf(r.agentCpu)] : []),
      ...(withS3Cpu ? [medianOf(r.s3Cpu)] : []),
      ...(withRss ? [rss !== undefined ? `${fmt(rss / MB, 1)}${rss >= RSS_TARGET ? " (over 250)" : ""}` : "—"] : []),
      r.check,
    ]);
  }
  return lines.map((l) => `| ${l.map((c) => c.replaceAll("|", "\\|")).join(" | ")} |`).join("\n");
}

/** A row's time ÷ its baseline's: the median of paired ratios, else of the two medians; undefined without both. */
export function ratioOf(r: Row, rows: Row[]): number | undefined {
  if (r.baseline || r.error !== undefined || r.seconds === undefined) return undefined;
  if (r.ratios !== undefined && r.ratios.length > 0) return median(r.ratios);
  const base = rows.find((x) => x.baseline);
  return base?.seconds !== undefined && base.error === undefined ? r.seconds / base.seconds : undefined;
}

export async function step(rows: Row[], name: string, fn: (row: Row) => Promise<void>, baseline = false): Promise<Row> {
  const row: Row = { name, check: "", baseline };
  rows.push(row);
  process.stderr.write(`bench: ${name} ... `);
  try {
    takeCpu();
    await fn(row);
    noteCpu(row);
    process.stderr.write(`${row.seconds !== undefined ? fmt(row.seconds, 2) : "?"} s ${row.check}\n`);
  } catch (err) {
    row.error = (err instanceof Error ? err.message : String(err)).replaceAll("\n", " ");
    process.stderr.write(`FAILED: ${row.error}\n`);
  }
  return row;
}

/** One pipeline of a paired comparison: runs once, returns its seconds (and fills its row). */
export interface Pipeline {
  name: string;
  baseline?: boolean;
  run: (row: Row) => Promise<number>;
}

/**
 * Runs every pipeline `runs` times in rounds, alternating the order each round
 * (ABC, CBA, ...). A row's seconds are the median of its runs; its ratio is
 * the median of run ÷ the baseline's run of the same round.
 */
export async function pairedRounds(rows: Row[], pipelines: Pipeline[], runs: number): Promise<void> {
  const byName = new Map<string, Row>();
  for (const p of pipelines) {
    const row: Row = { name: p.name, check: "", baseline: p.baseline ?? false, samples: [], ratios: [] };
    rows.push(row);
    byName.set(p.name, row);
  }
  for (let round = 0; round < runs; round++) {
    const order = round % 2 === 0 ? pipelines : [...pipelines].reverse();
    const got = new Map<string, number>();
    for (const p of order) {
      const row = byName.get(p.name);
      if (!row || row.error !== undefined) continue;
      process.stderr.write(`bench: [round ${round + 1}/${runs}] ${p.name} ... `);
      try {
        takeCpu();
        const sec = await p.run(row);
        noteCpu(row);
        got.set(p.name, sec);
        row.samples?.push(sec);
        process.stderr.write(`${fmt(sec, 2)} s ${row.check}\n`);
      } catch (err) {
        row.error = (err instanceof Error ? err.message : String(err)).replaceAll("\n", " ");
        process.stderr.write(`FAILED: ${row.error}\n`);
      }
    }
    const base = pipelines.find((p) => p.baseline);
    const b = base ? got.get(base.name) : undefined;
    for (const [name, sec] of got) if (b !== undefined) byName.get(name)?.ratios?.push(sec / b);
  }
  for (const row of byName.values()) if (row.samples && row.samples.length > 0) row.seconds = median(row.samples);
}

/** One table of the report (and one section of the chart). */
export interface ReportTable {
  /** The markdown heading (## …). */
  title: string;
  /** The chart's section title (default: the heading without its parenthesis). */
  chartTitle?: string;
  rows: Row[];
  /** The numerator of MB/s. */
  rawBytes: number | undefined;
  bytesLabel: string;
}

/** What one part of the bench (MariaDB, PostgreSQL, S3) adds to the report. */
export interface BenchPart {
  facts: string[];
  tables: ReportTable[];
}
