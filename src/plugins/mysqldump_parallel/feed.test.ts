import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FEED_MEMORY_BYTES, PartFeed, SinkGone, SpillBudget, spillFile } from "./feed.js";

/**
 * A sink that takes `perTick` bytes per timer tick, and hashes what it got;
 * with `gate`, it takes nothing until the gate opens (a client that is busy
 * for as long as the test needs, whatever the machine's speed).
 */
function slowSink(perTick: number, gate?: Promise<void>): { sink: Writable; got: () => { bytes: number; sha: string } } {
  const hash = createHash("sha256");
  let bytes = 0;
  const sink = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      void (gate ?? Promise.resolve()).then(() => {
        hash.update(chunk);
        bytes += chunk.length;
        setTimeout(cb, chunk.length > perTick ? 1 : 0);
      });
    },
  });
  return { sink, got: () => ({ bytes, sha: hash.copy().digest("hex") }) };
}

const never = new Promise<void>(() => undefined);

describe("PartFeed", () => {
  let dir: string;
  beforeEach(async () => { dir = await mkdtemp(join(os.tmpdir(), "feed-test-")); });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it("writes every byte in order through memory and the spill file, without waiting on the slow sink, and removes the file", async () => {
    let open = (): void => undefined;
    const gate = new Promise<void>((r) => { open = r; });
    const { sink, got } = slowSink(16 * 1024, gate);
    const budget = new SpillBudget(64 * 1024 * 1024);
    const feed = new PartFeed(sink, never, spillFile(dir, 1), budget);
    const want = createHash("sha256");
    let total = 0;
    let peak = 0;
    // Chunks of odd sizes, several times the memory share: most of them must spill.
    for (let i = 0; total < 3 * FEED_MEMORY_BYTES; i++) {
      const b = randomBytes(1 + ((i * 7919) % 300_000));
      want.update(b);
      total += b.length;
      await feed.push(b);
      peak = Math.max(peak, budget.pending);
    }
    // The pushes ran ahead of the sink: the backlog went to disk.
    expect(peak).toBeGreaterThan(FEED_MEMORY_BYTES);
    expect(got().bytes).toBeLessThan(total);
    open();
    feed.end();
    await feed.done;
    expect(sink.writableEnded).toBe(true);
    expect(got()).toEqual({ bytes: total, sha: want.digest("hex") });
    expect(budget.pending).toBe(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it("keeps order when the spill file drains and fills again", async () => {
    const { sink, got } = slowSink(1024 * 1024);
    const feed = new PartFeed(sink, never, spillFile(dir, 2), new SpillBudget(1024 * 1024 * 1024));
    const want = createHash("sha256");
    let total = 0;
    for (let round = 0; round < 4; round++) {
      for (let i = 0; i < 40; i++) {
        const b = randomBytes(200_000 + round * 1000 + i);
        want.update(b);
        total += b.length;
        await feed.push(b);
      }
      // Let the pump catch up, so the file is emptied (and reused) between bursts.
      while (feed.backlog > 0) await new Promise((r) => setTimeout(r, 5));
    }
    feed.end();
    await feed.done;
    expect(got()).toEqual({ bytes: total, sha: want.digest("hex") });
  });

  it("with no spill budget keeps nothing on disk: the pushes wait for the sink instead", async () => {
    const { sink, got } = slowSink(16 * 1024);
    const budget = new SpillBudget(0);
    const feed = new PartFeed(sink, never, spillFile(dir, 3), budget);
    const want = createHash("sha256");
    let total = 0;
    let maxBacklog = 0;
    for (let i = 0; i < 60; i++) {
      const b = randomBytes(300_000);
      want.update(b);
      total += b.length;
      await feed.push(b);
      maxBacklog = Math.max(maxBacklog, feed.backlog);
      expect(existsSync(spillFile(dir, 3))).toBe(false);
    }
    expect(maxBacklog).toBeLessThanOrEqual(FEED_MEMORY_BYTES + 300_000);
    feed.end();
    await feed.done;
    expect(got()).toEqual({ bytes: total, sha: want.digest("hex") });
  });

  it("fails with SinkGone when the client exits, and a later push says so", async () => {
    const sink = new Writable({ highWaterMark: 1024, write() { /* never calls back: a stuck client */ } });
    let exit!: () => void;
    const gone = new Promise<void>((r) => { exit = r; });
    const feed = new PartFeed(sink, gone, spillFile(dir, 4), new SpillBudget(1024 * 1024 * 1024));
    for (let i = 0; i < 30; i++) await feed.push(randomBytes(200_000));
    exit();
    await expect(feed.done).rejects.toBeInstanceOf(SinkGone);
    await expect(feed.push(Buffer.from("x"))).rejects.toBeInstanceOf(SinkGone);
    expect(await readdir(dir)).toEqual([]);
  });

  it("on abort drops its backlog, ends the sink and removes the spill file (a failed restore does not wait on it)", async () => {
    // The client takes nothing before the abort, however fast the disk is: the backlog is certain.
    let open = (): void => undefined;
    const gate = new Promise<void>((r) => { open = r; });
    const { sink, got } = slowSink(1024, gate);
    const budget = new SpillBudget(1024 * 1024 * 1024);
    const feed = new PartFeed(sink, never, spillFile(dir, 6), budget);
    for (let i = 0; i < 40; i++) await feed.push(randomBytes(200_000));
    expect(feed.backlog).toBeGreaterThan(FEED_MEMORY_BYTES);
    open();
    feed.abort();
    await feed.done;
    expect(sink.writableEnded).toBe(true);
    expect(got().bytes).toBeLessThan(40 * 200_000);
    expect(await readdir(dir)).toEqual([]);
  });

  it("shares 64 MiB of memory between many feeds, 4 MiB each at most and 256 KiB at least", () => {
    const b = new SpillBudget(0);
    expect(b.memoryPerFeed).toBe(FEED_MEMORY_BYTES);
    b.shareMemory(3);
    expect(b.memoryPerFeed).toBe(FEED_MEMORY_BYTES);
    b.shareMemory(64);
    expect(b.memoryPerFeed).toBe(1024 * 1024);
    b.shareMemory(1000);
    expect(b.memoryPerFeed).toBe(256 * 1024);
  });

  it("keeps only its share in memory, the rest on disk", async () => {
    const sink = new Writable({ highWaterMark: 1024, write() { /* a client that reads nothing yet */ } });
    const budget = new SpillBudget(1024 * 1024 * 1024);
    budget.shareMemory(64);
    let kill!: () => void;
    const gone = new Promise<void>((r) => { kill = r; });
    const feed = new PartFeed(sink, gone, spillFile(dir, 7), budget);
    for (let i = 0; i < 40; i++) await feed.push(randomBytes(100_000));
    // At most one chunk went into the sink; of the rest, at most 1 MiB is in memory.
    expect(feed.backlog).toBeGreaterThanOrEqual(39 * 100_000);
    expect(feed.backlog - budget.pending).toBeLessThanOrEqual(1024 * 1024);
    expect(budget.pending).toBeGreaterThanOrEqual(39 * 100_000 - 1024 * 1024);
    // As a failed restore does: abort the feed, kill its client.
    feed.abort();
    kill();
    await expect(feed.done).rejects.toBeInstanceOf(SinkGone);
    expect(await readdir(dir)).toEqual([]);
  });

  it("names the spill directory and the way out when the spill file cannot be written", async () => {
    const { sink } = slowSink(1);
    const feed = new PartFeed(sink, never, join(dir, "missing", "part-5.sql"), new SpillBudget(1024 * 1024 * 1024));
    let err: unknown;
    try {
      for (let i = 0; i < 40; i++) await feed.push(randomBytes(200_000));
    } catch (e) {
      err = e;
    }
    expect(String(err)).toMatch(/could not keep .* in .*missing\/part-5\.sql .*ENOENT.*spillMb/);
    feed.end();
    await feed.done;
  });
});
