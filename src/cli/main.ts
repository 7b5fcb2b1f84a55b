#!/usr/bin/env node
// The `replicator` command's entry (also installed as `kubectl-replicator`); the
// command itself is ./command.ts. Before it loads the command's modules, this turns
// on Node's compile cache (module.enableCompileCache, Node >= 22.1): the bytecode of
// the modules a run loads is kept on disk and reused by the next run, instead of
// every run parsing and compiling them again. Where the cache cannot be written (a
// read-only home, Node 20) the command runs as before, only without it.
import module from "node:module";
import { compileCacheDir, ensureCacheDir } from "../lib/cache-dir.js";

const dir = compileCacheDir();
// The directory is made here first: Node would make it with a recursive mkdir,
// which never returns where nothing can be created (under /proc). Absent before
// Node 22.1; a failure is reported in its result, not thrown, and leaves the cache off.
if (dir !== undefined && ensureCacheDir(dir)) (module as { enableCompileCache?: (d: string) => unknown }).enableCompileCache?.(dir);
await import("./command.js");
