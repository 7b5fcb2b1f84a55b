import { describe, expect, it } from "vitest";
import { createLogger } from "../lib/log.js";
import { KubeApiError } from "../kube/rest.js";
import { LeaderElector, type LeaseClient, type LeaseObj, type LeaseSpec } from "./leader.js";
import { FakeClock, flush } from "./runtime/clock.js";

const log = createLogger({ name: "test", level: "silent" });

/** An in-memory Lease with resourceVersion conflicts, and switches to make calls fail or hang. */
class FakeLeaseStore {
  lease: LeaseObj | undefined;
  rv = 0;
  hang = false;
  fail = false;
  calls = 0;
  client(): LeaseClient {
    const gate = async (): Promise<void> => {
      this.calls++;
      if (this.hang) await new Promise<never>(() => undefined);
      if (this.fail) throw new Error("connect ECONNREFUSED");
    };
    return {
      get: async () => {
        await gate();
        return this.lease ? structuredClone(this.lease) : undefined;
      },
      create: async (spec: LeaseSpec) => {
        await gate();
        if (this.lease) throw new KubeApiError(409, "AlreadyExists", "exists");
        this.lease = { metadata: { name: "l", namespace: "ns", resourceVersion: String(++this.rv) }, spec };
        return structuredClone(this.lease);
      },
      update: async (l: LeaseObj) => {
        await gate();
        if (l.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) throw new KubeApiError(409, "Conflict", "conflict");
        this.lease = { ...l, metadata: { ...l.metadata, resourceVersion: String(++this.rv) } };
        return structuredClone(this.lease);
      },
    };
  }
  /** Another process renews: the record changes (its renewTime from ITS wall clock). */
  renewAs(holder: string, renewTime: string): void {
    this.lease = { metadata: { name: "l", namespace: "ns", resourceVersion: String(++this.rv) }, spec: { holderIdentity: holder, leaseDurationSeconds: 15, renewTime, leaseTransitions: 0 } };
  }
}

const elector = (store: FakeLeaseStore, clock: FakeClock, identity: string, wall: () => Date = () => new Date("2026-11-29T12:00:00Z")) =>
  new LeaderElector(store.client(), { namespace: "ns", name: "l", identity }, log, clock, wall);

describe("LeaderElector", () => {
  it("a standby never takes a lease whose record keeps changing, however old the holder's renewTime looks", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    store.renewAs("other", "1970-01-01T00:00:00.000000Z");
    const e = elector(store, clock, "me");
    const abort = new AbortController();
    let got: boolean | undefined;
    void e.acquire(abort.signal).then((v) => (got = v));
    for (let t = 0; t < 60; t++) {
      await clock.advance(2_000);
      store.renewAs("other", `1970-01-01T00:00:${String(t).padStart(2, "0")}.000000Z`);
    }
    expect(got).toBeUndefined();
    expect(e.isLeader()).toBe(false);
    abort.abort();
    await flush();
    expect(got).toBe(false);
  });

  it("takes the lease once the record has not changed for the lease duration on its own clock, whatever renewTime says", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    // The holder's clock runs an hour ahead: its renewTime is "in the future" for us.
    store.renewAs("other", "2026-11-29T13:00:00.000000Z");
    const e = elector(store, clock, "me");
    let got: boolean | undefined;
    const t0 = clock.now();
    void e.acquire(new AbortController().signal).then((v) => (got = v));
    await clock.advance(14_000);
    expect(got).toBeUndefined();
    await clock.advance(2_000);
    expect(got).toBe(true);
    expect(clock.now() - t0).toBeGreaterThanOrEqual(15_000);
    expect(store.lease?.spec.holderIdentity).toBe("me");
    expect(store.lease?.spec.leaseTransitions).toBe(1);
    expect(e.isLeader()).toBe(true);
  });

  it("renews every 2 s, and stays leader while renewals succeed", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const e = elector(store, clock, "me");
    expect(await e.acquire(new AbortController().signal)).toBe(true);
    const abort = new AbortController();
    void e.renewLoop(abort.signal);
    const before = store.rv;
    await clock.advance(60_000);
    expect(store.rv - before).toBe(30);
    expect(e.isLeader()).toBe(true);
    abort.abort();
  });

  it("stops acting the moment the renew deadline (10 s) passes, even while a renewal hangs", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const e = elector(store, clock, "me");
    const lost: number[] = [];
    e.onLost(() => lost.push(clock.now()));
    const acquiredAt = clock.now();
    expect(await e.acquire(new AbortController().signal)).toBe(true);
    void e.renewLoop(new AbortController().signal);
    await clock.advance(4_000); // renewals at 2 s and 4 s succeed
    store.hang = true;
    await clock.advance(9_999);
    expect(e.isLeader()).toBe(true);
    await clock.advance(1);
    // Deadline: 10 s after the start of the last successful renewal (at 4 s).
    expect(lost).toEqual([acquiredAt + 14_000]);
    expect(e.isLeader()).toBe(false);
    expect(() => { e.fence("POST /jobs"); }).toThrow(/not the leader/);
    // Even if the store answers again, it never acts as leader again.
    store.hang = false;
    await clock.advance(30_000);
    expect(e.isLeader()).toBe(false);
    expect(lost).toHaveLength(1);
  });

  it("a process frozen past its deadline refuses to act the instant it runs again, before any timer fires", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const e = elector(store, clock, "me");
    expect(await e.acquire(new AbortController().signal)).toBe(true);
    // Simulate SIGSTOP: time moves on, nothing runs (no timers, no callbacks).
    clock.jump(20_000);
    expect(() => { e.fence("POST /jobs"); }).toThrow(/not the leader/);
  });

  it("bounds each request below the renew deadline; failing renewals also end leadership at the deadline", async () => {
    const clock = new FakeClock();
    const store = new FakeLeaseStore();
    const e = elector(store, clock, "me");
    let lostAt = -1;
    e.onLost(() => (lostAt = clock.now()));
    expect(await e.acquire(new AbortController().signal)).toBe(true);
    void e.renewLoop(new AbortController().signal);
    store.fail = true;
    await clock.advance(20_000);
    expect(lostAt).toBe(10_000);
    // A hanging get is given up after 5 s (the request timeout), so a candidate keeps retrying.
    const store2 = new FakeLeaseStore();
    store2.hang = true;
    const c = elector(store2, clock, "x");
    void c.acquire(new AbortController().signal);
    await clock.advance(5_000 + 2_000 + 5_000);
    expect(store2.calls).toBe(2);
  });
});
