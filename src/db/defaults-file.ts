// Child processes (mariadb-dump, mariadb) get their credentials from a 0600
// defaults-extra-file in a private (0700) temp dir, never from argv.
//
// No credentials file outlives its process: every private dir is named after
// the process that made it (replicator-cred-<pid>-<pid namespace>-XXXXXX),
// removed when its user is done, removed again by a synchronous sweep at
// process exit, and — for a process that was SIGKILLed, which runs no exit
// handler — removed by the next process that makes one, once the pid is dead.
import { lstatSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Endpoint } from "./endpoint.js";

export interface DefaultsFile {
  path: string;
  /** Connection args without secrets, to pass after --defaults-extra-file. */
  args: string[];
  cleanup(): Promise<void>;
}

export interface PrivateDir {
  /** A 0700 directory only this process writes to. */
  path: string;
  /** Remove it (idempotent). */
  remove(): Promise<void>;
}

/** Name prefixes of private dirs that hold credentials; a stale one of a dead pid is swept. */
export const PRIVATE_DIR_PREFIXES = ["replicator-cred", "replicator-plugin"] as const;
export type PrivateDirPrefix = (typeof PRIVATE_DIR_PREFIXES)[number];

/** The pid namespace, so a process never sweeps the dir of a live process it cannot see (another container sharing /tmp). */
function pidNamespace(): string {
  try {
    return /\[(\d+)\]/.exec(readlinkSync("/proc/self/ns/pid"))?.[1] ?? "0";
  } catch {
    return "0";
  }
}
const NS = pidNamespace();

const live = new Set<string>();
let exitHooked = false;

function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  // Synchronous: an exit handler cannot wait for promises.
  process.on("exit", () => {
    for (const dir of live) {
      try {
        rmSync(dir, { recursive: true, force: true });
      } catch {
        // nothing more can be done at exit
      }
    }
  });
}

/** Pure: the owner of a private dir name, or undefined when it is not one. */
export function parsePrivateDirName(name: string): { prefix: PrivateDirPrefix; pid: number; ns: string } | undefined {
  const m = /^(replicator-cred|replicator-plugin)-(\d+)-(\d+)-[A-Za-z0-9]{6}$/.exec(name);
  if (!m?.[1] || !m[2] || !m[3]) return undefined;
  return { prefix: m[1] as PrivateDirPrefix, pid: Number(m[2]), ns: m[3] };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists, as another user's process.
    return (err as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/**
 * Remove the private dirs left by dead processes of this user (a SIGKILLed
 * backup runs no exit handler). Returns the dirs removed. Never fails: a
 * sweep that cannot read /tmp leaves things as they were.
 *
 * Synchronous: one readdir of the temp dir and an lstat per stale entry, so
 * that making a credentials file never yields to the event loop more than it
 * did before the sweep existed.
 */
export function sweepStalePrivateDirs(dir = tmpdir()): string[] {
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  const uid = typeof process.getuid === "function" ? process.getuid() : undefined;
  for (const name of names) {
    const owner = parsePrivateDirName(name);
    if (!owner || owner.ns !== NS || owner.pid === process.pid || isAlive(owner.pid)) continue;
    const full = path.join(dir, name);
    try {
      const st = lstatSync(full);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
      rmSync(full, { recursive: true, force: true });
      removed.push(full);
    } catch {
      // gone already, or not ours to remove
    }
  }
  return removed;
}

/** This process's private dirs not yet removed (for tests and diagnostics). */
export function livePrivateDirs(): string[] {
  return [...live];
}

/**
 * Make a private 0700 dir named after this process; it is removed by
 * `remove()`, and at process exit if nobody did. Stale dirs of dead
 * processes are swept first.
 */
export async function makePrivateDir(prefix: PrivateDirPrefix = "replicator-cred"): Promise<PrivateDir> {
  sweepStalePrivateDirs();
  // mkdtemp creates the directory with mode 0700 whatever the umask.
  const dir = await mkdtemp(path.join(tmpdir(), `${prefix}-${process.pid}-${NS}-`));
  live.add(dir);
  hookExit();
  return {
    path: dir,
    remove: async () => {
      await rm(dir, { recursive: true, force: true });
      live.delete(dir);
    },
  };
}

function escapeValue(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export async function writeDefaultsFile(e: Endpoint): Promise<DefaultsFile> {
  const dir = await makePrivateDir("replicator-cred");
  const file = path.join(dir.path, "client.cnf");
  const lines = ["[client]", `user=${escapeValue(e.user)}`];
  if (e.password !== undefined && e.password !== "") lines.push(`password=${escapeValue(e.password)}`);
  try {
    await writeFile(file, `${lines.join("\n")}\n`, { mode: 0o600, flag: "wx" });
  } catch (err) {
    await dir.remove();
    throw err;
  }
  const args = e.socket ? [`--socket=${e.socket}`] : [`--host=${e.host}`, `--port=${e.port}`, "--protocol=TCP"];
  return {
    path: file,
    args,
    cleanup: () => dir.remove(),
  };
}

/** For a test: the private dirs in `dir` (default tmpdir) that belong to `pid`. */
export function privateDirsOf(pid: number, dir = tmpdir()): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => parsePrivateDirName(n)?.pid === pid)
      .map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}
