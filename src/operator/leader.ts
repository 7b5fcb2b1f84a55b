// Leader election on a coordination.k8s.io Lease with client-go's rules and
// timings (lease 15 s, renew deadline 10 s, retry period 2 s):
// - a candidate measures the lease's age on its OWN monotonic clock, from when
//   it last saw the record change; it never compares the holder's renewTime
//   (another machine's wall clock) with its own;
// - every request is bounded by a timeout below the renew deadline, so one
//   hanging call cannot outlive it;
// - the leader is the leader only until its renew deadline (10 s after the
//   start of its last successful renewal): `isLeader()` reads the monotonic
//   clock, so a process frozen past it (SIGSTOP, a long GC, a suspended VM)
//   stops acting the instant it runs again, before any timer or I/O callback
//   can act, and `onLost` (main.ts: exit, as controller-runtime does) runs.
// The 5 s between the renew deadline and the lease duration is the margin
// that keeps two leaders from acting at once.
import type { Logger } from "../lib/log.js";
import { isConflict, isNotFound, type KubeRest } from "../kube/rest.js";
import { realClock, type Clock } from "./runtime/clock.js";

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  renewTime?: string;
  acquireTime?: string;
  leaseTransitions?: number;
}

export interface LeaseObj {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

/** The three calls election needs (a fake in tests). `update` fails with a 409 when resourceVersion moved. */
export interface LeaseClient {
  get(): Promise<LeaseObj | undefined>;
  create(spec: LeaseSpec): Promise<LeaseObj>;
  update(lease: LeaseObj): Promise<LeaseObj>;
}

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  /** Each API call's bound; below the renew deadline. */
  requestTimeoutMs?: number;
}

export const LEASE_DURATION_MS = 15_000;
export const RENEW_DEADLINE_MS = 10_000;
export const RETRY_PERIOD_MS = 2_000;
export const REQUEST_TIMEOUT_MS = 5_000;

/** Read through a call: TypeScript narrows `signal.aborted` across awaits. */
const isAborted = (signal: AbortSignal): boolean => signal.aborted;

const microTime = (d: Date): string => d.toISOString().replace(/Z$/, "000Z");

/** The fields that identify a renewal: any change means the holder is alive. */
const recordKey = (s: LeaseSpec | undefined): string =>
  JSON.stringify([s?.holderIdentity ?? "", s?.renewTime ?? "", s?.acquireTime ?? "", s?.leaseTransitions ?? 0, s?.leaseDurationSeconds ?? 0]);

export class LeaderElector {
  private readonly leaseMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private readonly requestTimeoutMs: number;
  private observed: { key: string; at: number; lease: LeaseObj | undefined } = { key: "", at: -Infinity, lease: undefined };
  /** Monotonic time until which this process may act as leader (-Infinity: not leader). */
  private deadline = -Infinity;
  private lost = false;
  private lostHandlers: (() => void)[] = [];

  constructor(
    private readonly client: LeaseClient,
    private readonly o: LeaderOptions,
    private readonly log: Logger,
    private readonly clock: Clock = realClock,
    private readonly wallNow: () => Date = () => new Date(),
  ) {
    this.leaseMs = o.leaseDurationMs ?? LEASE_DURATION_MS;
    this.renewDeadlineMs = o.renewDeadlineMs ?? RENEW_DEADLINE_MS;
    this.retryMs = o.retryPeriodMs ?? RETRY_PERIOD_MS;
    this.requestTimeoutMs = Math.min(o.requestTimeoutMs ?? REQUEST_TIMEOUT_MS, this.renewDeadlineMs - 1);
    if (!(this.renewDeadlineMs < this.leaseMs)) throw new Error("the renew deadline must be shorter than the lease duration");
  }

  /** True only while the last successful renewal is younger than the renew deadline (monotonic clock). */
  isLeader(): boolean {
    if (this.lost) return false;
    if (this.deadline === -Infinity) return false;
    if (this.clock.now() < this.deadline) return true;
    this.loseLeadership("renew deadline passed");
    return false;
  }

  /** Throw (and lose leadership) unless this process may act now. Call before every write. */
  fence(what: string): void {
    if (!this.isLeader()) throw Object.assign(new Error(`not the leader: refusing ${what}`), { reason: "NotLeader" });
  }

  onLost(fn: () => void): void {
    this.lostHandlers.push(fn);
  }

  /** Resolves true once this process holds the lease (false if `signal` aborted first). */
  async acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      const started = this.clock.now();
      if (await this.tryAcquireOrRenew()) {
        this.deadline = started + this.renewDeadlineMs;
        this.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, "became leader");
        return true;
      }
      await this.clock.sleep(this.retryMs, signal);
    }
    return false;
  }

  /** Renew every retry period until `signal` aborts or a renew deadline passes (then onLost). */
  async renewLoop(signal: AbortSignal): Promise<void> {
    // Fires at the deadline even while a renewal request hangs.
    let guard = this.clock.after(Math.max(0, this.deadline - this.clock.now()), () => this.isLeader());
    try {
      while (!signal.aborted && !this.lost) {
        await this.clock.sleep(this.retryMs, signal);
        if (isAborted(signal) || !this.isLeader()) break;
        const started = this.clock.now();
        const ok = await this.tryAcquireOrRenew();
        // A success that came back after the deadline does not count: the process already stopped acting.
        if (ok && this.isLeader()) {
          this.deadline = started + this.renewDeadlineMs;
          guard.cancel();
          guard = this.clock.after(Math.max(0, this.deadline - this.clock.now()), () => this.isLeader());
        }
      }
    } finally {
      guard.cancel();
    }
  }

  /** Give the lease up (on a clean shutdown): another replica can take over at once. */
  async release(): Promise<void> {
    const was = !this.lost && this.clock.now() < this.deadline;
    this.deadline = -Infinity;
    const lease = this.observed.lease;
    if (!was || lease?.spec.holderIdentity !== this.o.identity) return;
    await this.bounded(
      this.client.update({ ...lease, spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(this.wallNow()) } }),
    ).catch(() => undefined);
  }

  private loseLeadership(why: string): void {
    if (this.lost) return;
    this.lost = true;
    this.deadline = -Infinity;
    this.log.error({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity, why }, "lost the leader lease");
    for (const fn of this.lostHandlers) fn();
  }

  private async bounded<T>(p: Promise<T>): Promise<T> {
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.clock.after(this.requestTimeoutMs, () => { reject(new Error(`lease request timed out after ${this.requestTimeoutMs} ms`)); });
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      timer?.cancel();
    }
  }

  /** One attempt, as client-go's tryAcquireOrRenew. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = this.wallNow();
    try {
      const lease = await this.bounded(this.client.get());
      if (!lease) {
        const spec: LeaseSpec = { holderIdentity: this.o.identity, leaseDurationSeconds: Math.round(this.leaseMs / 1000), acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 };
        const created = await this.bounded(this.client.create(spec));
        this.see(created);
        return true;
      }
      this.see(lease);
      const holder = lease.spec.holderIdentity ?? "";
      const mine = holder === this.o.identity;
      // Its age on OUR clock, from when we saw the record change; the holder's own duration if it set one.
      const duration = (lease.spec.leaseDurationSeconds ?? this.leaseMs / 1000) * 1000;
      if (holder && !mine && this.clock.now() < this.observed.at + duration) return false;
      const spec: LeaseSpec = { ...lease.spec, holderIdentity: this.o.identity, leaseDurationSeconds: Math.round(this.leaseMs / 1000), renewTime: microTime(now) };
      if (!mine) {
        spec.acquireTime = microTime(now);
        spec.leaseTransitions = (lease.spec.leaseTransitions ?? 0) + 1;
      }
      const updated = await this.bounded(this.client.update({ ...lease, spec }));
      this.see(updated);
      return true;
    } catch (err) {
      if (!isConflict(err)) this.log.warn({ err: (err as Error).message }, "leader election attempt failed");
      return false;
    }
  }

  private see(lease: LeaseObj): void {
    const key = recordKey(lease.spec);
    if (key !== this.observed.key) this.observed = { key, at: this.clock.now(), lease };
    else this.observed.lease = lease;
  }
}

/** A LeaseClient over the REST client. */
export function leaseClient(rest: KubeRest, namespace: string, name: string): LeaseClient {
  const path = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`;
  return {
    get: () =>
      rest.get<LeaseObj>(`${path}/${name}`).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      }),
    create: (spec) => rest.create<LeaseObj>(path, { apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name, namespace }, spec }),
    update: (lease) => rest.put<LeaseObj>(`${path}/${name}`, { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease }),
  };
}
