// Small helpers the kit's sandboxes share: a free loopback port, and the tail
// of a server's log for a failed start.
import { readFile } from "node:fs/promises";
import net from "node:net";

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
