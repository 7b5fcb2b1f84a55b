// A rate-limited work queue with client-go's workqueue semantics:
// - a key is processed by at most one worker at a time; a key added while it
//   is being processed runs once more afterwards (never twice concurrently);
// - `addAfter` keeps the EARLIEST due time: a longer delay never postpones a
//   shorter one already pending;
// - a failed reconcile is retried with per-item exponential backoff (5 ms
//   doubling, capped), and `forget` (done by `run` on success) resets it.
//
// The cap is 5 minutes, not client-go's 1000 s: a failed reconcile here is
// nearly always a transient fault (S3, MariaDB, the API server) on a backup a
// user or a schedule is waiting for, and schedules run every few minutes to
// hours; 5 minutes bounds how long a healed fault stays unnoticed, and a key
// that keeps failing still costs only one attempt every 5 minutes (the 5 ms
// start reaches the cap after 16 failures, about 10 minutes in). client-go's
// overall token bucket (10 qps) is left out: the operator's keys are few
// (one per resource) and each reconcile already waits on I/O.
import { realClock, type Clock, type Timer } from "./clock.js";

export interface QueueOptions {
  clock?: Clock;
  baseDelayMs?: number;
  maxDelayMs?: number;
}

export const DEFAULT_BASE_DELAY_MS = 5;
export const DEFAULT_MAX_DELAY_MS = 5 * 60_000;

export class RateLimitedQueue {
  private readonly clock: Clock;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  /** Keys ready to be processed, in order. */
  private readonly ready = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, { at: number; timer: Timer }>();
  private readonly failures = new Map<string, number>();
  private waiters: (() => void)[] = [];
  private stopped = false;

  constructor(opts: QueueOptions = {}) {
    this.clock = opts.clock ?? realClock;
    this.baseDelayMs = opts.baseDelayMs ?? DEFAULT_BASE_DELAY_MS;
    this.maxDelayMs = opts.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  }

  /** Process `key` as soon as a worker is free (after its current run, if it is running). */
  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.ready.add(key);
    this.waiters.shift()?.();
  }

  /** Process `key` after `ms`; if it is already due sooner, that stays. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const at = this.clock.now() + ms;
    const prev = this.delayed.get(key);
    if (prev && prev.at <= at) return;
    prev?.timer.cancel();
    const timer = this.clock.after(ms, () => {
      if (this.delayed.get(key)?.timer !== timer) return;
      this.delayed.delete(key);
      this.add(key);
    });
    this.delayed.set(key, { at, timer });
  }

  /** Retry `key` after its backoff: base × 2^failures, capped; each call counts a failure. */
  addRateLimited(key: string): number {
    const n = this.failures.get(key) ?? 0;
    this.failures.set(key, n + 1);
    const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** Math.min(n, 52));
    this.addAfter(key, delay);
    return delay;
  }

  /** The key succeeded: its next failure starts from the base delay again. */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** When `key` is due next (monotonic ms), if it waits on a timer. */
  dueAt(key: string): number | undefined {
    return this.delayed.get(key)?.at;
  }

  get length(): number {
    return this.ready.size;
  }

  stop(): void {
    this.stopped = true;
    for (const d of this.delayed.values()) d.timer.cancel();
    this.delayed.clear();
    for (const w of this.waiters) w();
    this.waiters = [];
  }

  /**
   * Run `worker` over keys with `concurrency` workers until stopped. A worker
   * that throws gets its key retried with backoff (`onError` hears of it);
   * one that returns has its key forgotten.
   */
  async run(concurrency: number, worker: (key: string) => Promise<void>, onError?: (key: string, err: unknown, retryInMs: number) => void): Promise<void> {
    const loop = async (): Promise<void> => {
      while (!this.stopped) {
        const key = this.ready.values().next().value;
        if (key === undefined) {
          await new Promise<void>((r) => this.waiters.push(r));
          continue;
        }
        this.ready.delete(key);
        this.active.add(key);
        try {
          await worker(key);
          this.forget(key);
        } catch (err) {
          const ms = this.addRateLimited(key);
          onError?.(key, err, ms);
        } finally {
          this.active.delete(key);
          if (this.dirty.delete(key)) this.add(key);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, loop));
  }
}
