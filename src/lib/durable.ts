// Making a restored data directory durable (the physical methods' restores: mariabackup,
// pg_basebackup): the files an extractor (mbstream, tar) writes are written back while it
// extracts, and all of them are on disk before the agent removes the directory's sentinel.
// A shell pipeline leaves that writing to the kernel, after it has exited.
import { constants } from "node:fs";
import { open, readdir } from "node:fs/promises";
import { createInterface } from "node:readline";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnTool } from "./exec.js";
import type { Logger } from "./log.js";

export interface DurableContext {
  log: Logger;
  signal: AbortSignal;
}

/** The pause between two background flushes while an extractor writes. */
const FLUSH_PAUSE_MS = 250;

/** One `sync --file-system dir` (syncfs(2) of its filesystem): true when it ran. */
export async function syncFileSystem(ctx: DurableContext, dir: string): Promise<boolean> {
  const r = await spawnTool("sync", ["--file-system", dir], { what: "flush the restored files to disk", stdout: "ignore", signal: ctx.signal }).exit;
  return r.exitCode === 0;
}

/**
 * Make everything under `dir` durable: one syncfs(2) of its filesystem, or, where `sync` is
 * missing or fails, an fsync of every file and directory.
 */
export async function syncDurable(ctx: DurableContext, dir: string): Promise<void> {
  if (await syncFileSystem(ctx, dir)) return;
  ctx.log.debug("sync --file-system did not run; fsyncing every file");
  await syncTree(dir);
}

/**
 * A shell that runs `sync --file-system DIR` each time it reads a line and answers with the exit
 * code, for the background flush: one fork of this process (large: the agent's heap) for the
 * whole extraction, where one per flush cost the event loop a fork every 250 ms.
 */
export interface Flusher {
  /** The shell's process id. */
  pid: number | undefined;
  /** One syncfs of the directory's filesystem: true when it ran. */
  flush(): Promise<boolean>;
  /** Ends the shell (after the flush in progress) and waits for it. */
  close(): Promise<void>;
}

const FLUSH_LOOP = 'while read -r _; do sync --file-system -- "$1"; echo "$?"; done';

export function startFlusher(ctx: DurableContext, dir: string): Flusher {
  const child = spawnTool("sh", ["-c", FLUSH_LOOP, "sh", dir], { what: "flush the restored files to disk", stdin: "pipe", stdout: "pipe", signal: ctx.signal });
  const answers: ((ok: boolean) => void)[] = [];
  let gone = false;
  if (child.stdout) createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (code) => answers.shift()?.(code.trim() === "0"));
  const exited = child.exit.then(() => {
    gone = true;
    for (const answer of answers.splice(0)) answer(false);
  });
  child.stdin?.on("error", () => undefined);
  return {
    pid: child.pid,
    flush: () =>
      new Promise<boolean>((resolve) => {
        if (gone || !child.stdin || child.stdin.destroyed) {
          resolve(false);
          return;
        }
        answers.push(resolve);
        child.stdin.write("\n");
      }),
    close: async () => {
      child.stdin?.end();
      await exited;
    },
  };
}

/**
 * Writes back what an extractor writes under `dir` while it writes (a syncfs, a short pause,
 * again) until `until` settles, so the disk works beside the decompression and the extraction
 * instead of after them, and the durable sync at the end has only the last stretch left. Never
 * rejects; it stops at the first failure (syncDurable then fsyncs every file) and when `until`
 * settles.
 */
async function flushWhile(ctx: DurableContext, dir: string, until: Promise<unknown>): Promise<void> {
  const state = { over: false };
  const settled = until.then(() => { state.over = true; }, () => { state.over = true; });
  let flusher: Flusher | undefined;
  try {
    flusher = startFlusher(ctx, dir);
    while (!state.over && !ctx.signal.aborted) {
      if (!(await flusher.flush())) return;
      await Promise.race([settled, sleep(FLUSH_PAUSE_MS, undefined, { ref: false })]);
    }
  } catch (err) {
    ctx.log.debug({ err }, "a background flush of the extracted files failed");
  } finally {
    await flusher?.close();
  }
}

/**
 * `extraction`, with `dir` written back while it runs (flushWhile): settles as the extraction did,
 * once the background flush has stopped too.
 */
export function extractFlushing<T>(ctx: DurableContext, dir: string, extraction: Promise<T>): Promise<T> {
  const flushing = flushWhile(ctx, dir, extraction);
  return extraction.finally(() => flushing);
}

/** fsync every file and directory under `dir`. */
async function syncTree(dir: string): Promise<void> {
  const paths: string[] = [dir];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile() || e.isDirectory()) paths.push(path.join(e.parentPath, e.name));
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < paths.length) {
      const p = paths[next++] as string;
      const fh = await open(p, constants.O_RDONLY);
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
}
