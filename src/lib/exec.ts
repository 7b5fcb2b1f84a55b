// Child processes: the one runner (spawnTool) every method, the agent, PITR
// and the plugin contract start their tools with (only the conformance kit's
// sandboxes use execa). A child failure becomes a CommandFailed error with
// the command (never its secrets: credentials go in files, not argv), the
// exit code and the line of stderr that says why, the tail as its detail.
//
// A child's environment is built from an allowlist (childEnv), never
// inherited whole: the agent's own environment holds REPLICATOR_DB_PASSWORD,
// REPLICATOR_REPLICATION_PASSWORD and the storage keys, and every user on a
// machine can read a process's environment through /proc when it runs as them.
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { createInterface } from "node:readline";
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

export interface StreamingChild {
  /** stdout, when the child was started with `stdout: "pipe"`. */
  stdout: Readable | null;
  stdin: Writable | null;
  /** Resolves when the child exits 0; rejects with CommandFailed otherwise. */
  done: Promise<void>;
  kill(): void;
}

/** How a child ended, for the message of its CommandFailed error. */
interface ChildEnd {
  notFound: boolean;
  canceled: boolean;
  signal: string | null | undefined;
  exitCode: number | null | undefined;
}

/** Pure: the last non-blank line of a stderr tail (the default summary of a failure). */
export function lastStderrLine(stderr: string): string {
  return (stderr.split("\n").filter((l) => l.trim()).pop() ?? "").trim();
}

/** The error of a failed child: CommandNotFound, or CommandFailed naming why and the line that says what went wrong. */
function childFailure(
  command: string,
  what: string,
  end: ChildEnd,
  stderrTail: string,
  opts: { summarize?: ((stderr: string) => string) | undefined; notFoundHint?: string | undefined } = {},
): ReplicatorError {
  if (end.notFound) return failed("CommandNotFound", `${command} is not installed (needed to ${what}); ${opts.notFoundHint ?? "install it or put it on PATH"}`);
  const errTail = tail(stderrTail, 1500);
  const line = (opts.summarize ?? lastStderrLine)(errTail);
  const why = end.canceled ? "cancelled" : end.signal ? `killed by ${end.signal}` : `exit code ${String(end.exitCode)}`;
  return failed("CommandFailed", `${command} failed to ${what} (${why})${line ? `: ${line}` : ""}`, { detail: errTail });
}

/** How a tool child ended, for callers that tell an echo (a broken pipe) from a real failure themselves. */
export interface ToolExit {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** Stopped through `kill()` (by the signal it sent), the abort signal or the timeout. */
  canceled: boolean;
  /** Stopped because it ran longer than `timeoutMs`. */
  timedOut?: boolean;
  /** The tail of stderr (8 KiB unless `tailBytes` says otherwise), redacted when `redact` is given. */
  stderr: string;
  /** The command could not be started because it is not installed. */
  notFound: boolean;
  /** Why the command could not be started at all (ENOENT, EACCES, ...). */
  spawnError?: NodeJS.ErrnoException;
}

export interface ToolChild extends StreamingChild {
  pid: number | undefined;
  /** Settles when the child has exited and its stdio is closed; never rejects (`done` is the failing form). */
  exit: Promise<ToolExit>;
  /** SIGTERM (to the process group with `group`), SIGKILL after `graceMs` (default 5 s) if still running. */
  kill(graceMs?: number): void;
}

export interface ToolOptions {
  /** A Readable that wraps a pipe (another child's stdout) connects the two children directly. */
  stdin?: "pipe" | "ignore" | Readable;
  /** A Writable that wraps a pipe (another child's stdin) connects the two children directly; a file descriptor (an open file) is written by the child itself. */
  stdout?: "pipe" | "ignore" | Writable | number;
  signal?: AbortSignal | undefined;
  /** Variables the caller passes on purpose (PGHOST, PGPASSFILE), over `baseEnv`. */
  env?: Record<string, string>;
  /**
   * The environment `env` goes over. Default: childEnv's allowlist of this
   * process's environment. A plugin gets a wider one (everything but the
   * agent's secrets, see plugins/exec/protocol.ts inheritedEnv).
   */
  baseEnv?: Record<string, string>;
  /** What the child is for, in error messages: "dump the source". */
  what: string;
  /** Every stderr line as it arrives (the last one even without a newline); `exit` settles after the last. */
  onLine?: (line: string) => void;
  /**
   * Rewrite every stderr line before anything sees it (onLine, the tail, the
   * error): for tools that print secrets (redactPasswords).
   */
  redact?: (line: string) => string;
  /** How much of stderr `exit.stderr` keeps (default 8 KiB). */
  tailBytes?: number;
  /** The one line of a CommandFailed message, from the stderr tail (default: its last non-blank line). */
  summarize?: (stderr: string) => string;
  /** What a CommandNotFound message tells the user to do (default: "install it or put it on PATH"). */
  notFoundHint?: string;
  /** Run the child in its own process group, so that a kill reaches the children it starts (a plugin's tools). */
  group?: boolean;
  /** Kill the child (1 s grace) when it runs longer; `exit.timedOut` says so. */
  timeoutMs?: number | undefined;
}

/** Pure: a line with a password after IDENTIFIED BY/VIA/WITH (SHOW GRANTS, a failed CREATE USER) cut after the keyword. */
export function redactPasswords(line: string): string {
  return line.replace(/\b(IDENTIFIED (?:BY|VIA|WITH)\b).*$/i, "$1 [redacted]");
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
 * The one way this project runs a child process.
 *
 * A tool child's stdin or stdout may be another child's pipe: pass a
 * stream that wraps a file descriptor (the `stdin` of a child started with
 * `stdin: "pipe"`) as `stdout`, and the two children talk through one OS
 * pipe, the bytes never entering this process. Then close this process's
 * copy (`destroy()` the stream), so the reader sees the end when the writer
 * exits, as a shell does. Always connect a producer to its consumer's stdin,
 * never a consumer to a producer's stdout: Node starts reading a child's
 * stdout as soon as it exists, and would take bytes meant for the consumer.
 *
 * `done` rejects with CommandNotFound or CommandFailed (the command, why it
 * ended, one stderr line; the stderr tail as detail); it is pre-caught, so
 * a caller that looks at it late never sees an unhandled rejection. The
 * environment is built from the allowlist (childEnv) plus `env`; SIGTERM on
 * abort and SIGKILL 5 s later; the child is killed when this process exits.
 * An EPIPE on stdin (the child went first) is left to the child's exit to explain.
 */
export function spawnTool(command: string, args: string[], opts: ToolOptions): ToolChild {
  const stdio: StdioOptions = [opts.stdin ?? "ignore", opts.stdout ?? "pipe", "pipe"];
  const tailBytes = opts.tailBytes ?? 8192;
  let killed = false;
  let timedOut = false;
  let child: ChildProcess;
  try {
    child = spawn(command, args, { stdio, env: { ...(opts.baseEnv ?? childEnv()), ...opts.env }, detached: opts.group === true });
  } catch (err) {
    throw failed("CommandFailed", `cannot start ${command}: ${(err as Error).message}`, { cause: err });
  }
  let stderrTail = "";
  const keep = (text: string): void => {
    stderrTail += text;
    // Cut rarely: a chatty tool's stderr is not copied once per chunk.
    if (stderrTail.length > 2 * tailBytes) stderrTail = stderrTail.slice(-tailBytes);
  };
  const redact = opts.redact;
  if (!redact) child.stderr?.on("data", (chunk: Buffer) => { keep(chunk.toString("utf8")); });
  const onLine = opts.onLine;
  const linesDone = (onLine || redact) && child.stderr
    ? new Promise<void>((resolve) => {
        const rl = createInterface({ input: child.stderr as Readable, crlfDelay: Infinity });
        rl.on("line", (raw: string) => {
          const line = redact ? redact(raw) : raw;
          if (redact) keep(`${line}\n`);
          onLine?.(line);
        });
        rl.once("close", resolve);
      })
    : Promise.resolve();
  // A pipe this process still holds to the child (stdin, stdout) reports
  // EPIPE or a reset when the child dies first: the child's exit says why.
  child.stdin?.on("error", () => undefined);
  let closed = false;
  const send = (sig: NodeJS.Signals): void => {
    if (opts.group && child.pid !== undefined) {
      try {
        process.kill(-child.pid, sig);
        return;
      } catch {
        // the group is gone: fall back to the child itself
      }
    }
    child.kill(sig);
  };
  let forceKill: NodeJS.Timeout | undefined;
  const kill = (graceMs = 5000): void => {
    if (closed || child.pid === undefined) return;
    // A group outlives its leader: signal it until the child's stdio is closed.
    if (!opts.group && (child.exitCode !== null || child.signalCode !== null)) return;
    killed = true;
    send("SIGTERM");
    forceKill ??= setTimeout(() => { if (!closed) send("SIGKILL"); }, graceMs).unref();
  };
  const onAbort = (): void => { kill(); };
  if (opts.signal?.aborted) queueMicrotask(kill);
  else opts.signal?.addEventListener("abort", onAbort, { once: true });
  const timeout = opts.timeoutMs === undefined
    ? undefined
    : setTimeout(() => {
        timedOut = true;
        kill(1000);
      }, opts.timeoutMs);
  killAtExit.add(child);
  hookParentExit();
  let spawnError: NodeJS.ErrnoException | undefined;
  const exit = new Promise<ToolExit>((resolve) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      // A failed start ("close" follows, with the negative errno as its code).
      if (child.pid === undefined) spawnError = err;
      stderrTail ||= err.message;
    });
    // Once the child is gone nobody reads its stdin: close this end, or
    // "close" (which waits for every stdio stream) would wait for a write
    // that never comes.
    child.once("exit", () => { child.stdin?.destroy(); });
    child.once("close", (exitCode: number | null, signal: NodeJS.Signals | null) => {
      closed = true;
      clearTimeout(forceKill);
      clearTimeout(timeout);
      opts.signal?.removeEventListener("abort", onAbort);
      killAtExit.delete(child);
      void linesDone.then(() => {
        resolve({
          exitCode: spawnError ? null : exitCode,
          signal,
          // A child that exited by itself while being killed (the kill of a
          // feeder whose pipe it broke by failing) was not cancelled.
          canceled: killed && (signal !== null || timedOut || opts.signal?.aborted === true),
          timedOut,
          stderr: stderrTail.slice(-tailBytes),
          notFound: spawnError?.code === "ENOENT",
          ...(spawnError ? { spawnError } : {}),
        });
      });
    });
  });
  const done = exit.then((e) => {
    if (!e.notFound && e.exitCode === 0) return;
    throw childFailure(command, opts.what, { notFound: e.notFound, canceled: e.canceled, signal: e.signal, exitCode: e.exitCode }, e.stderr, opts);
  });
  // Callers await `done` when they need it; a failure is never unhandled meanwhile.
  done.catch(() => undefined);
  return { pid: child.pid, stdin: child.stdin, stdout: child.stdout, exit, done, kill };
}

/** What `captureTool` returns: how the child ended and all it wrote on stdout. */
export interface CapturedTool extends ToolExit {
  stdout: string;
}

/**
 * Run a short tool to its end: `input` (if any) on its stdin, its stdout
 * collected as text. Never rejects for the tool's own failure: the caller
 * reads `exitCode`, `notFound`, `timedOut` and `stderr` and says what it meant.
 */
export async function captureTool(command: string, args: string[], opts: Omit<ToolOptions, "stdin" | "stdout"> & { input?: string }): Promise<CapturedTool> {
  const child = spawnTool(command, args, { ...opts, stdin: opts.input === undefined ? "ignore" : "pipe", stdout: "pipe" });
  const chunks: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => chunks.push(c));
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  const exit = await child.exit;
  return { ...exit, stdout: Buffer.concat(chunks).toString("utf8") };
}
