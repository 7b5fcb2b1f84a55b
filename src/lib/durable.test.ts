import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { alive } from "../../test/harness/proc.js";
import { startFlusher } from "./durable.js";
import { silentLogger } from "./log.js";

const log = silentLogger();

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), "durable-"));
  dirs.push(d);
  return d;
}

describe("startFlusher (the background flush of a restore)", () => {
  it("one shell answers every flush, each a syncfs of the directory's filesystem, and is gone after close", async () => {
    const dir = await tempDir();
    const f = startFlusher({ log, signal: new AbortController().signal }, dir);
    expect(f.pid).toBeGreaterThan(0);
    for (let i = 0; i < 3; i++) {
      await writeFile(path.join(dir, `f${String(i)}`), Buffer.alloc(1 << 20, i));
      expect(await f.flush()).toBe(true);
      expect(alive(f.pid as number)).toBe(true);
    }
    await f.close();
    expect(alive(f.pid as number)).toBe(false);
  });

  it("a flush that fails (the directory is gone) answers false, and the next one runs again", async () => {
    const dir = await tempDir();
    const sub = path.join(dir, "sub");
    const f = startFlusher({ log, signal: new AbortController().signal }, sub);
    expect(await f.flush()).toBe(false);
    await writeFile(sub, "now a file on the same filesystem");
    expect(await f.flush()).toBe(true);
    await f.close();
  });

  it("an abort ends the shell: a flush then answers false instead of waiting", async () => {
    const dir = await tempDir();
    const ac = new AbortController();
    const f = startFlusher({ log, signal: ac.signal }, dir);
    expect(await f.flush()).toBe(true);
    ac.abort();
    await f.close();
    expect(await f.flush()).toBe(false);
    expect(alive(f.pid as number)).toBe(false);
  });
});
