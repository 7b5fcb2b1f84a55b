// The directory of the CLI's cache files: $REPLICATOR_CACHE_DIR, else
// $XDG_CACHE_HOME/replicator, else ~/.cache/replicator: the user's own, never a
// shared /tmp. Kept free of heavy imports: the CLI's entry reads it first.
import { mkdirSync, statSync } from "node:fs";
import { homedir } from "node:os";
import path from "node:path";

/** `<cache dir>/<sub>`, or undefined when no home directory is known. */
export function replicatorCacheDir(sub: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.REPLICATOR_CACHE_DIR && path.isAbsolute(env.REPLICATOR_CACHE_DIR)) return path.join(env.REPLICATOR_CACHE_DIR, sub);
  const xdg = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : undefined;
  let home: string | undefined;
  try {
    home = env.HOME || homedir();
  } catch {
    home = undefined;
  }
  const base = xdg ?? (home ? path.join(home, ".cache") : undefined);
  return base ? path.join(base, "replicator", sub) : undefined;
}

/**
 * Where Node's compile cache goes (see src/cli/main.ts); undefined (no cache) when
 * REPLICATOR_COMPILE_CACHE=off or no home directory is known.
 */
export function compileCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if ((env.REPLICATOR_COMPILE_CACHE ?? "").toLowerCase() === "off") return undefined;
  return replicatorCacheDir("node-compile-cache", env);
}

/**
 * Makes `dir` (mode 0700) one level at a time, each level a single mkdir: false
 * when it cannot. Never a recursive mkdir: Node's (and so its compile cache's)
 * can loop forever where nothing can be created, as under /proc.
 */
export function ensureCacheDir(dir: string): boolean {
  const missing: string[] = [];
  for (let d = path.resolve(dir); ; ) {
    try {
      if (statSync(d).isDirectory()) break;
      return false;
    } catch {
      // Missing (or unreadable: the mkdir below then fails).
    }
    const parent = path.dirname(d);
    if (parent === d) return false;
    missing.unshift(d);
    d = parent;
  }
  try {
    for (const d of missing) mkdirSync(d, { mode: 0o700 });
    return true;
  } catch {
    return false;
  }
}
