import { describe, expect, it } from "vitest";
import { FakeClock, flush } from "./clock.js";
import { RateLimitedQueue } from "./queue.js";

function harness(opts: { failUntil?: number; hold?: boolean } = {}) {
  const clock = new FakeClock();
  const q = new RateLimitedQueue({ clock, baseDelayMs: 5, maxDelayMs: 300_000 });
  const runs: { key: string; at: number }[] = [];
  let inFlight = 0;
  let maxInFlightPerKey = 0;
  const perKey = new Map<string, number>();
  const release: (() => void)[] = [];
  const errors: number[] = [];
  const done = q.run(
    4,
    async (key) => {
      runs.push({ key, at: clock.now() });
      inFlight++;
      perKey.set(key, (perKey.get(key) ?? 0) + 1);
      maxInFlightPerKey = Math.max(maxInFlightPerKey, perKey.get(key) ?? 0);
      try {
        if (opts.hold) await new Promise<void>((r) => release.push(r));
        if (opts.failUntil !== undefined && runs.filter((r) => r.key === key).length <= opts.failUntil) throw new Error("transient");
      } finally {
        inFlight--;
        perKey.set(key, (perKey.get(key) ?? 1) - 1);
      }
    },
    (_k, _e, ms) => errors.push(ms),
  );
  return { clock, q, runs, release, errors, done, maxPerKey: () => maxInFlightPerKey, inFlight: () => inFlight };
}

describe("RateLimitedQueue", () => {
  it("backs off per item: 5 ms doubling, capped at 5 min; forgets on success", async () => {
    const h = harness({ failUntil: 20 });
    h.q.add("a");
    await h.clock.advance(24 * 3600_000);
    const a = h.runs.filter((r) => r.key === "a").map((r) => r.at);
    const gaps = a.slice(1).map((t, i) => t - (a[i] ?? 0));
    expect(gaps.slice(0, 6)).toEqual([5, 10, 20, 40, 80, 160]);
    expect(Math.max(...gaps)).toBe(300_000);
    expect(h.errors.at(-1)).toBe(300_000);
    // 20 failures, then a success: nothing more, and the next failure starts from 5 ms.
    expect(a).toHaveLength(21);
    expect(h.q.numRequeues("a")).toBe(0);
    expect(h.q.addRateLimited("a")).toBe(5);
    h.q.stop();
    await h.done;
  });

  it("addAfter keeps the earliest due time", async () => {
    const h = harness();
    h.q.addAfter("k", 1_000);
    h.q.addAfter("k", 60_000);
    await h.clock.advance(1_000);
    expect(h.runs.map((r) => r.at)).toEqual([1_000]);
    h.q.addAfter("k", 60_000);
    h.q.addAfter("k", 2_000);
    await h.clock.advance(60_000);
    expect(h.runs.map((r) => r.at)).toEqual([1_000, 3_000]);
    h.q.stop();
    await h.done;
  });

  it("never runs one key on two workers; a key added while running runs once more after", async () => {
    const h = harness({ hold: true });
    h.q.add("k");
    h.q.add("other");
    await flush();
    expect(h.runs.map((r) => r.key)).toEqual(["k", "other"]);
    h.q.add("k");
    h.q.add("k");
    await flush();
    expect(h.runs.filter((r) => r.key === "k")).toHaveLength(1);
    h.release.shift()?.();
    await flush();
    expect(h.runs.filter((r) => r.key === "k")).toHaveLength(2);
    expect(h.maxPerKey()).toBe(1);
    for (const r of h.release.splice(0)) r();
    await flush();
    h.q.stop();
    for (const r of h.release.splice(0)) r();
    await h.done;
  });

  it("a failed reconcile is not retried every few seconds forever", async () => {
    const h = harness({ failUntil: 1_000 });
    h.q.add("bad");
    await h.clock.advance(3600_000);
    // 5 ms doubling to 5 min: 16 quick retries, then one every 5 minutes.
    expect(h.runs.length).toBeLessThan(16 + 13);
    h.q.stop();
    await h.done;
  });
});
