// Child processes for the data path. A child failure becomes a
// CommandFailed error with the command (never its secrets: credentials go in
// files, not argv), the exit code and the tail of stderr.
//
// A child's environment is built from an allowlist (childEnv), never
// inherited whole: the agent's own environment holds REPLICATOR_DB_PASSWORD,
// REPLICATOR_REPLICATION_PASSWORD and the storage keys, and every user on a
// machine can read a process's environment through /proc when it runs as them.
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { createInterface } from "node:readline";
import { execa, type ResultPromise } from "execa";
import type { Readable, Writable } from "node:stream";
import { failed, tail, type ReplicatorError } from "./errors.js";

/** Variables a tool child inherits from the agent, by exact name. */
const INHERITED_NAMES = new Set([
  "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "LD_LIBRARY_PATH",
  // libpq's non-secret settings (TLS files, service files, timeouts): the pg tools read them.
  "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLMINPROTOCOLVERSION",
  "PGSSLMAXPROTOCOLVERSION", "PGSSLNEGOTIATION", "PGSSLSNI", "PGREQUIREPEER", "PGGSSENCMODE", "PGGSSDELEGATION",
  "PGKRBSRVNAME", "PGSERVICE", "PGSERVICEFILE", "PGSYSCONFDIR", "PGCONNECT_TIMEOUT", "PGCLIENTENCODING",
  "PGTZ", "PGDATESTYLE", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS", "PGCHANNELBINDING",
]);

/**
 * Pure: the environment of a tool child: the allowlisted variables of
 * `parent` (PATH, HOME, USER, LANG, LC_*, TZ, TMPDIR, libpq's non-secret PG*
 * settings), then `explicit` (what the caller passes on purpose, e.g. PGHOST
 * and PGPASSFILE). Nothing else: no REPLICATOR_*, no AWS_*, no PGPASSWORD.
 */
export function childEnv(explicit: Record<string, string> = {}, parent: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(parent)) {
    if (v === undefined) continue;
    if (INHERITED_NAMES.has(k) || k.startsWith("LC_")) out[k] = v;
  }
  return { ...out, ...explicit };
}

/** execa options for a tool child's environment: the allowlist plus `explicit`, nothing inherited beyond it. */
export function childEnvOptions(explicit?: Record<string, string>): { env: Record<string, string>; extendEnv: false } {
  return { env: childEnv(explicit), extendEnv: false };
}

export interface StreamingChild {
  /** stdout, when the child was started with `stdout: "pipe"`. */
  stdout: Readable | null;
  stdin: Writable | null;
  /** Resolves when the child exits 0; rejects with CommandFailed otherwise. */
  done: Promise<void>;
  kill(): void;
}

export function spawnStreaming(
  command: string,
  args: string[],
  opts: { stdin?: "pipe" | "ignore"; stdout?: "pipe" | "ignore"; signal?: AbortSignal; env?: Record<string, string>; what: string },
): StreamingChild {
  let child: ResultPromise;
  try {
    child = execa(command, args, {
      stdin: opts.stdin ?? "ignore",
      stdout: opts.stdout ?? "pipe",
      stderr: "pipe",
      // stderr is not buffered by execa (its maxBuffer would kill a chatty
      // tool such as mariabackup, which logs a line per file); its tail is kept below.
      buffer: false,
      reject: false,
      ...(opts.signal ? { cancelSignal: opts.signal } : {}),
      ...childEnvOptions(opts.env),
      encoding: "buffer",
    });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  let stderrTail = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderrTail = (stderrTail + chunk.toString("utf8")).slice(-8192);
  });
  const done = (async () => {
    const r = await child;
    if (r.failed) {
      const code = (r as { code?: string }).code;
      throw childFailure(command, opts.what, { notFound: code === "ENOENT", canceled: r.isCanceled, signal: r.signal, exitCode: r.exitCode }, stderrTail);
    }
  })();
  return {
    stdout: child.stdout,
    stdin: child.stdin,
    done,
    kill: () => child.kill("SIGTERM"),
  };
}

/** How a child ended, for the message of its CommandFailed error. */
interface ChildEnd {
  notFound: boolean;
  canceled: boolean;
  signal: string | null | undefined;
  exitCode: number | null | undefined;
}

/** The error of a failed child: CommandNotFound, or CommandFailed naming why and its last stderr line. */
function childFailure(command: string, what: string, end: ChildEnd, stderrTail: string): ReplicatorError {
  if (end.notFound) return failed("CommandNotFound", `${command} is not installed (needed to ${what}); install it or put it on PATH`);
  const errTail = tail(stderrTail, 1500);
  const lastLine = errTail.split("\n").filter((l) => l.trim()).pop() ?? "";
  const why = end.canceled ? "cancelled" : end.signal ? `killed by ${end.signal}` : `exit code ${String(end.exitCode)}`;
  return failed("CommandFailed", `${command} failed to ${what} (${why})${lastLine ? `: ${lastLine.trim()}` : ""}`, { detail: errTail });
}

/** How a tool child ended, for callers that tell an echo (a broken pipe) from a real failure themselves. */
export interface ToolExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Stopped through `kill()` or the abort signal. */
  canceled: boolean;
  /** The last 8 KiB of stderr. */
  stderr: string;
  /** The command could not be started because it is not installed. */
  notFound: boolean;
}

export interface ToolChild extends StreamingChild {
  pid: number | undefined;
  /** Settles when the child has exited and its stdio is closed; never rejects (`done` is the failing form). */
  exit: Promise<ToolExit>;
}

/** Children still running, killed when this process exits (one exit listener for all of them). */
const killAtExit = new Set<ChildProcess>();
let parentExitHooked = false;
function hookParentExit(): void {
  if (parentExitHooked) return;
  parentExitHooked = true;
  process.on("exit", () => {
    for (const c of killAtExit) c.kill("SIGKILL");
  });
}

/**
 * A tool child whose stdin or stdout may be another child's pipe: pass a
 * stream that wraps a file descriptor (the `stdin` of a child started with
 * `stdin: "pipe"`) as `stdout`, and the two children talk through one OS
 * pipe, the bytes never entering this process. Then close this process's
 * copy (`destroy()` the stream), so the reader sees the end when the writer
 * exits, as a shell does. Always connect a producer to its consumer's stdin,
 * never a consumer to a producer's stdout: Node starts reading a child's
 * stdout as soon as it exists, and would take bytes meant for the consumer.
 *
 * Same errors as spawnStreaming (CommandNotFound, CommandFailed with the
 * stderr tail), the same environment allowlist, SIGTERM on abort and SIGKILL
 * 5 s later, and the child is killed when this process exits.
 */
export function spawnTool(
  command: string,
  args: string[],
  opts: {
    stdin?: "pipe" | "ignore" | Readable;
    stdout?: "pipe" | "ignore" | Writable;
    signal?: AbortSignal | undefined;
    env?: Record<string, string>;
    what: string;
    /** Every stderr line as it arrives (the last one even without a newline); `exit` settles after the last. */
    onLine?: (line: string) => void;
  },
): ToolChild {
  const stdio: StdioOptions = [opts.stdin ?? "ignore", opts.stdout ?? "pipe", "pipe"];
  let canceled = false;
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio, env: childEnv(opts.env) });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  let stderrTail = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderrTail = (stderrTail + chunk.toString("utf8")).slice(-8192);
  });
  const onLine = opts.onLine;
  const linesDone = onLine && child.stderr
    ? new Promise<void>((resolve) => {
        const rl = createInterface({ input: child.stderr as Readable, crlfDelay: Infinity });
        rl.on("line", onLine);
        rl.once("close", resolve);
      })
    : Promise.resolve();
  // A pipe this process still holds to the child (stdin, stdout) reports
  // EPIPE or a reset when the child dies first: the child's exit says why.
  child.stdin?.on("error", () => undefined);
  let forceKill: NodeJS.Timeout | undefined;
  const kill = (): void => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    canceled = true;
    child.kill("SIGTERM");
    forceKill ??= setTimeout(() => child.kill("SIGKILL"), 5000).unref();
  };
  const onAbort = (): void => { kill(); };
  if (opts.signal?.aborted) queueMicrotask(kill);
  else opts.signal?.addEventListener("abort", onAbort, { once: true });
  killAtExit.add(child);
  hookParentExit();
  let notFound = false;
  const exit = new Promise<ToolExit>((resolve) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      // A failed start ("close" follows, with the negative errno as its code).
      if (err.code === "ENOENT") notFound = true;
      stderrTail ||= err.message;
    });
    // Once the child is gone nobody reads its stdin: close this end, or
    // "close" (which waits for every stdio stream) would wait for a write
    // that never comes.
    child.once("exit", () => { child.stdin?.destroy(); });
    child.once("close", (exitCode: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(forceKill);
      opts.signal?.removeEventListener("abort", onAbort);
      killAtExit.delete(child);
      void linesDone.then(() => { resolve({ exitCode, signal, canceled, stderr: stderrTail, notFound }); });
    });
  });
  const done = exit.then((e) => {
    if (!notFound && e.exitCode === 0) return;
    throw childFailure(command, opts.what, { notFound, canceled: e.canceled, signal: e.signal, exitCode: e.exitCode }, e.stderr);
  });
  // Callers await `done` when they need it; a failure is never unhandled meanwhile.
  done.catch(() => undefined);
  return { pid: child.pid, stdin: child.stdin, stdout: child.stdout, exit, done, kill };
}
