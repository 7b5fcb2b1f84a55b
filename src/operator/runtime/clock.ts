// The runtime's one port to time: a monotonic clock with timers. Production
// uses performance.now() (never the wall clock, which can jump); tests pass a
// FakeClock and move it by hand.

export interface Timer {
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds; only differences mean anything. */
  now(): number;
  /** Run `fn` once after `ms`; the timer does not keep the process alive. */
  after(ms: number, fn: () => void): Timer;
  /** Resolve after `ms`, or at once when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  after(ms, fn) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref();
    return { cancel: () => { clearTimeout(t); } };
  },
  sleep(ms, signal) {
    return new Promise((resolve) => {
      if (signal?.aborted) { resolve(); return; }
      const done = (): void => {
        clearTimeout(t);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener("abort", done, { once: true });
    });
  },
};

/** A clock that moves only when told (tests). Timers fire in due order inside `advance`. */
export class FakeClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = 0) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): Timer {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return { cancel: () => { this.timers.delete(id); } };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) { resolve(); return; }
      const timer = this.after(ms, resolve);
      signal?.addEventListener("abort", () => { timer.cancel(); resolve(); }, { once: true });
    });
  }

  /** Move time forward without running any timer: a process that was frozen (SIGSTOP) and resumes. */
  jump(ms: number): void {
    this.t += ms;
  }

  /** Timers still waiting. */
  get pending(): number {
    return this.timers.size;
  }

  /** Move time forward by `ms`, firing every timer that falls due (in order), with microtasks flushed between. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await flush();
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.timers) if (e[1].at <= end && (!next || e[1].at < next[1].at || (e[1].at === next[1].at && e[0] < next[0]))) next = e;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = Math.max(this.t, next[1].at);
      next[1].fn();
    }
    this.t = end;
    await flush();
  }
}

/** Let pending promise callbacks run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
  await new Promise<void>((r) => setImmediate(r));
}
