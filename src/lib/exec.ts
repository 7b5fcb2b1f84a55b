// Child processes for the data path. A child failure becomes a
// CommandFailed error with the command (never its secrets: credentials go in
// files, not argv), the exit code and the tail of stderr.
//
// A child's environment is built from an allowlist (childEnv), never
// inherited whole: the agent's own environment holds REPLICATOR_DB_PASSWORD,
// REPLICATOR_REPLICATION_PASSWORD and the storage keys, and every user on a
// machine can read a process's environment through /proc when it runs as them.
import { execa, type ResultPromise } from "execa";
import type { Readable, Writable } from "node:stream";
import { failed, tail } from "./errors.js";

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
      const errTail = tail(stderrTail, 1500);
      const code = (r as { code?: string }).code;
      if (code === "ENOENT") {
        throw failed("CommandNotFound", `${command} is not installed (needed to ${opts.what}); install it or put it on PATH`);
      }
      const lastLine = errTail.split("\n").filter((l) => l.trim()).pop() ?? "";
      const why = r.isCanceled ? "cancelled" : r.signal ? `killed by ${r.signal}` : `exit code ${String(r.exitCode)}`;
      throw failed("CommandFailed", `${command} failed to ${opts.what} (${why})${lastLine ? `: ${lastLine.trim()}` : ""}`, {
        detail: errTail,
      });
    }
  })();
  return {
    stdout: child.stdout,
    stdin: child.stdin,
    done,
    kill: () => child.kill("SIGTERM"),
  };
}
