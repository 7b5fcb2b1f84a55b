// Small helpers the kit's sandboxes share: a free loopback port, the tail of
// a server's log for a failed start, and a per-process template data directory.
import { rmSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        reject(new Error("no free port"));
        return;
      }
      srv.close(() => { resolve(addr.port); });
    });
  });
}

/** The last lines of a log file, or `missing` when there is none. */
export async function tailOf(file: string, missing: string, lines = 15): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trim().split("\n").slice(-lines).join("\n");
  } catch {
    return missing;
  }
}

export interface Template {
  /** The template's path, made on first use (once per process). */
  get: () => Promise<string>;
  /** Remove it (also done at process exit); the next get() makes a new one. */
  remove: () => void;
}

/**
 * A data directory made once per process (by `build`, inside a new temp dir
 * `base`) and copied for each sandbox server. A failed build leaves nothing.
 */
export function cachedTemplate(prefix: string, build: (base: string) => Promise<string>): Template {
  let made: Promise<string> | undefined;
  let base: string | undefined;
  const remove = (): void => {
    if (base) rmSync(base, { recursive: true, force: true });
    base = undefined;
    made = undefined;
  };
  return {
    get: () => {
      made ??= (async () => {
        base = await mkdtemp(path.join(tmpdir(), prefix));
        try {
          const dir = await build(base);
          // Synchronously: nothing asynchronous runs in an exit handler.
          process.once("exit", remove);
          return dir;
        } catch (err) {
          remove();
          throw err;
        }
      })();
      return made;
    },
    remove,
  };
}
