import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { compileCacheDir, ensureCacheDir, replicatorCacheDir } from "./cache-dir.js";

describe("the CLI's cache directories", () => {
  it("follow REPLICATOR_CACHE_DIR, then XDG_CACHE_HOME, then ~/.cache", () => {
    expect(replicatorCacheDir("x", { REPLICATOR_CACHE_DIR: "/c", XDG_CACHE_HOME: "/x", HOME: "/h" })).toBe("/c/x");
    expect(replicatorCacheDir("x", { XDG_CACHE_HOME: "/x", HOME: "/h" })).toBe("/x/replicator/x");
    expect(replicatorCacheDir("x", { REPLICATOR_CACHE_DIR: "relative", HOME: "/h" })).toBe("/h/.cache/replicator/x");
  });

  it("put Node's compile cache beside the manifests, and leave it off when asked", () => {
    expect(compileCacheDir({ HOME: "/h" })).toBe("/h/.cache/replicator/node-compile-cache");
    expect(compileCacheDir({ HOME: "/h", REPLICATOR_COMPILE_CACHE: "off" })).toBeUndefined();
    expect(compileCacheDir({ HOME: "/h", REPLICATOR_COMPILE_CACHE: "OFF" })).toBeUndefined();
  });
});

describe("ensureCacheDir", () => {
  it("makes the missing levels, 0700, and says where it cannot (a file in the way, /proc), at once", async () => {
    const base = await mkdtemp(path.join(tmpdir(), "replicator-cache-dir-"));
    try {
      const dir = path.join(base, "a", "b", "c");
      expect(ensureCacheDir(dir)).toBe(true);
      expect((await stat(dir)).isDirectory()).toBe(true);
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      expect(ensureCacheDir(dir)).toBe(true);
      await writeFile(path.join(base, "file"), "");
      expect(ensureCacheDir(path.join(base, "file", "x"))).toBe(false);
      expect(ensureCacheDir(path.join(base, "file"))).toBe(false);
      // Where a recursive mkdir loops forever.
      expect(ensureCacheDir("/proc/replicator-no-such-dir/replicator/node-compile-cache")).toBe(false);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});
