// The CLI's entry turns on Node's compile cache in the user's cache directory
// (src/cli/main.ts): a run leaves the compiled modules there for the next one,
// REPLICATOR_COMPILE_CACHE=off leaves none, and a cache directory that cannot be
// written changes nothing a user sees.
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { TOOL_VERSION } from "../../src/version.js";

let home: string;

beforeAll(async () => {
  home = await mkdtemp(path.join(tmpdir(), "replicator-cli-start-"));
});

afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

/** Every file under `dir`, recursively ([] when it does not exist). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

describe("the CLI's compile cache", () => {
  it("is written under the cache directory by a run, and the run's output is unchanged", async () => {
    const cache = path.join(home, "on");
    const r = await runCli(["--version"], { XDG_CACHE_HOME: cache });
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe(TOOL_VERSION);
    const files = await filesUnder(path.join(cache, "replicator", "node-compile-cache"));
    // One entry per compiled module: the command's own modules at least.
    expect(files.length).toBeGreaterThan(10);
    const again = await runCli(["--version"], { XDG_CACHE_HOME: cache });
    expect(again.exitCode).toBe(0);
    expect(again.stdout.trim()).toBe(TOOL_VERSION);
  });

  it("is not written with REPLICATOR_COMPILE_CACHE=off", async () => {
    const cache = path.join(home, "off");
    const r = await runCli(["--version"], { XDG_CACHE_HOME: cache, REPLICATOR_COMPILE_CACHE: "off" });
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(TOOL_VERSION);
    expect(await filesUnder(cache)).toEqual([]);
  });

  it("changes nothing when its directory cannot be made", async () => {
    // A regular file where the cache directory's parent should be.
    const blocker = path.join(home, "a-file");
    await writeFile(blocker, "");
    const r = await runCli(["list", "--repository", "file:///nonexistent-replicator-repo", "--cluster", "x"], { XDG_CACHE_HOME: blocker });
    const plain = await runCli(["list", "--repository", "file:///nonexistent-replicator-repo", "--cluster", "x"], { XDG_CACHE_HOME: blocker, REPLICATOR_COMPILE_CACHE: "off" });
    expect(r.exitCode).toBe(plain.exitCode);
    expect(r.stdout).toBe(plain.stdout);
    expect(r.stderr).toBe(plain.stderr);
    expect(r.stderr).not.toContain("compile");
    // Where a recursive mkdir never returns: the command still runs at once.
    const proc = await runCli(["--version"], { XDG_CACHE_HOME: "/proc/replicator-no-such-dir" });
    expect(proc.exitCode).toBe(0);
    expect(proc.stdout.trim()).toBe(TOOL_VERSION);
  });
});
