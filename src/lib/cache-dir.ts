// The directory of the CLI's cache files: $REPLICATOR_CACHE_DIR, else
// $XDG_CACHE_HOME/replicator, else ~/.cache/replicator: the user's own, never a
// shared /tmp. Kept free of heavy imports: the CLI's entry reads it first.
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
