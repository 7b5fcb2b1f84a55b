import { describe, expect, it } from "vitest";
import { compileCacheDir, replicatorCacheDir } from "./cache-dir.js";

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
