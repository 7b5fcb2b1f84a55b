// List-watch with restart, backoff, a watchdog and a periodic relist, plus a
// per-object work queue. Watches can stop silently or hang (client-node
// #596/#958/#2432); the relist makes every object reconcile again anyway, so
// a lost event delays work by at most one resync period.
import type { Logger } from "../../lib/log.js";
import { isGone, type KubeRest } from "./rest.js";

export interface KObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; labels?: Record<string, string> };
}

export const keyOf = (o: KObject): string => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;

export class Informer<T extends KObject> {
  private cache = new Map<string, T>();
  private synced = false;

  constructor(
    private readonly rest: KubeRest,
    private readonly path: string,
    private readonly onChange: (key: string, obj: T | undefined) => void,
    private readonly log: Logger,
    private readonly opts: { resyncMs: number; labelSelector?: string } = { resyncMs: 30_000 },
  ) {}

  get hasSynced(): boolean {
    return this.synced;
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(): T[] {
    return [...this.cache.values()];
  }

  async run(signal: AbortSignal): Promise<void> {
    let backoff = 500;
    while (!signal.aborted) {
      try {
        const rv = await this.relist();
        backoff = 500;
        const watchAbort = new AbortController();
        const onAbort = (): void => { watchAbort.abort(); };
        signal.addEventListener("abort", onAbort, { once: true });
        // Relist periodically even while the watch looks healthy.
        const resync = setTimeout(() => { watchAbort.abort(); }, this.opts.resyncMs);
        try {
          await this.rest.watch<T>(
            this.path,
            rv,
            (e) => {
              if (e.type === "ERROR") throw Object.assign(new Error("watch error event"), { status: (e.object as unknown as { code?: number }).code });
              if (e.type === "BOOKMARK") return;
              const key = keyOf(e.object);
              if (e.type === "DELETED") this.cache.delete(key);
              else this.cache.set(key, e.object);
              this.onChange(key, e.type === "DELETED" ? undefined : e.object);
            },
            watchAbort.signal,
            90_000,
            this.opts.labelSelector ? { labelSelector: this.opts.labelSelector } : {},
          );
        } finally {
          clearTimeout(resync);
          signal.removeEventListener("abort", onAbort);
        }
      } catch (err) {
        if (isAborted(signal)) return;
        const status = (err as { status?: number }).status;
        if (!isGone(err) && status !== 410) {
          this.log.warn({ err: (err as Error).message, path: this.path, backoffMs: backoff }, "watch failed; relisting");
          await sleep(backoff, signal);
          backoff = Math.min(backoff * 2, 30_000);
        }
      }
    }
  }

  /** List everything, replace the cache, and emit a change for every key (added, changed, or gone). */
  private async relist(): Promise<string> {
    const q: Record<string, string> = {};
    if (this.opts.labelSelector) q.labelSelector = this.opts.labelSelector;
    const res = await this.rest.list<T>(this.path, q);
    const next = new Map<string, T>();
    for (const item of res.items) next.set(keyOf(item), item);
    const gone = [...this.cache.keys()].filter((k) => !next.has(k));
    this.cache = next;
    this.synced = true;
    for (const k of gone) this.onChange(k, undefined);
    for (const [k, v] of next) this.onChange(k, v);
    return res.metadata.resourceVersion ?? "0";
  }
}

/** Read through a call: TypeScript narrows `signal.aborted` across awaits. */
const isAborted = (signal: AbortSignal): boolean => signal.aborted;

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

/**
 * A work queue that processes each key at most once at a time; a key added
 * while it is being processed runs again afterwards. `after` delays a key.
 */
export class WorkQueue {
  private pending = new Set<string>();
  private active = new Set<string>();
  private dirty = new Set<string>();
  private timers = new Map<string, NodeJS.Timeout>();
  private waiters: (() => void)[] = [];
  private stopped = false;

  add(key: string): void {
    if (this.stopped) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.pending.add(key);
    this.waiters.shift()?.();
  }

  after(key: string, ms: number): void {
    if (this.stopped) return;
    const prev = this.timers.get(key);
    if (prev) clearTimeout(prev);
    const t = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, ms);
    t.unref();
    this.timers.set(key, t);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers.values()) clearTimeout(t);
    for (const w of this.waiters) w();
  }

  /** Run `worker` over keys with `concurrency` parallel workers until stopped. */
  async run(concurrency: number, worker: (key: string) => Promise<void>): Promise<void> {
    const loop = async (): Promise<void> => {
      while (!this.stopped) {
        const key = this.pending.values().next().value;
        if (key === undefined) {
          await new Promise<void>((r) => this.waiters.push(r));
          continue;
        }
        this.pending.delete(key);
        this.active.add(key);
        try {
          await worker(key);
        } finally {
          this.active.delete(key);
          if (this.dirty.delete(key)) this.add(key);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, loop));
  }
}
