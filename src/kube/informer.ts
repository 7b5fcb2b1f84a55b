// List-watch informers with client-go's reflector behaviour:
// - one LIST at start; after that the WATCH carries every change, restarted
//   from the last resourceVersion it saw when the server ends it (its
//   timeoutSeconds) or when it goes silent (the watchdog);
// - bookmarks (allowWatchBookmarks=true) keep that resourceVersion fresh, so a
//   restart rarely finds it expired;
// - a relist happens only when the watch ends with 410 Gone (the version is
//   too old) or fails (an error, not a clean end), after a backoff;
// - resync re-delivers every cached object to the handler from the local
//   cache: it never drops the watch and never asks the API server.
// Watches can stop silently or hang (client-node #596/#958/#2432), hence the
// watchdog: a watch with no event and no bookmark for 2× its timeoutSeconds
// is restarted. Hand-written rather than client-node's informer because that
// one stops on errors other than 410 and does not re-emit adds after a
// restart (#795), and we need the fake clock in tests.
import type { Logger } from "../lib/log.js";
import { realClock, type Clock } from "../operator/runtime/clock.js";
import { isGone, type KubeRest, type WatchEvent } from "./rest.js";

export interface KObject {
  metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; labels?: Record<string, string> };
}

export const keyOf = (o: KObject): string => `${o.metadata.namespace ?? ""}/${o.metadata.name}`;

export interface InformerOptions {
  /** How often every cached object is re-delivered (from the cache). 0: never. */
  resyncMs: number;
  labelSelector?: string;
  /** The watch's server-side timeout; client-go picks 5-10 min. */
  watchTimeoutSeconds?: number;
  clock?: Clock;
}

/** Counters a test (or the metrics endpoint) can read. */
export interface InformerStats {
  lists: number;
  watches: number;
  watchdogRestarts: number;
  resyncs: number;
}

const isAborted = (signal: AbortSignal): boolean => signal.aborted;

export class Informer<T extends KObject> {
  private cache = new Map<string, T>();
  private synced = false;
  private readonly clock: Clock;
  readonly stats: InformerStats = { lists: 0, watches: 0, watchdogRestarts: 0, resyncs: 0 };

  constructor(
    private readonly rest: Pick<KubeRest, "list" | "watch">,
    private readonly path: string,
    private readonly onChange: (key: string, obj: T | undefined) => void,
    private readonly log: Logger,
    private readonly opts: InformerOptions = { resyncMs: 30_000 },
  ) {
    this.clock = opts.clock ?? realClock;
  }

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
    const stopResync = this.startResync(signal);
    try {
      await this.listAndWatch(signal);
    } finally {
      stopResync();
    }
  }

  /** Re-deliver every cached object on a timer, from the cache. */
  private startResync(signal: AbortSignal): () => void {
    if (this.opts.resyncMs <= 0) return () => undefined;
    const every = this.opts.resyncMs;
    const tick = (): void => {
      if (signal.aborted) return;
      if (this.synced) {
        this.stats.resyncs++;
        for (const [k, v] of this.cache) this.onChange(k, v);
      }
      timer = this.clock.after(every, tick);
    };
    let timer = this.clock.after(every, tick);
    return () => { timer.cancel(); };
  }

  private async listAndWatch(signal: AbortSignal): Promise<void> {
    let backoff = 500;
    let rv: string | undefined;
    while (!signal.aborted) {
      try {
        rv ??= await this.relist();
        // Watch until the server ends it, the watchdog fires, or it fails.
        rv = await this.watchOnce(rv, signal);
        backoff = 500;
      } catch (err) {
        if (isAborted(signal)) return;
        const status = (err as { status?: number }).status;
        rv = undefined;
        if (isGone(err) || status === 410) {
          this.log.info({ path: this.path }, "watch expired (410 Gone); relisting");
          continue;
        }
        this.log.warn({ err: (err as Error).message, path: this.path, backoffMs: backoff }, "list or watch failed; relisting after a backoff");
        await this.clock.sleep(backoff, signal);
        backoff = Math.min(backoff * 2, 30_000);
      }
    }
  }

  /** One watch from `rv`; returns the last resourceVersion seen. Throws on failure (410 included). */
  private async watchOnce(rv: string, signal: AbortSignal): Promise<string> {
    const timeoutS = this.opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 300);
    const silentMs = 2 * timeoutS * 1000;
    const watchAbort = new AbortController();
    const onAbort = (): void => { watchAbort.abort(); };
    signal.addEventListener("abort", onAbort, { once: true });
    let last = rv;
    const bark = (): void => {
      this.stats.watchdogRestarts++;
      this.log.warn({ path: this.path, silentMs }, "watch silent for twice its timeout; restarting it");
      watchAbort.abort();
    };
    let dog = this.clock.after(silentMs, bark);
    const q: Record<string, string> = { timeoutSeconds: String(timeoutS) };
    if (this.opts.labelSelector) q.labelSelector = this.opts.labelSelector;
    this.stats.watches++;
    try {
      await this.rest.watch<T>(
        this.path,
        rv,
        (e: WatchEvent<T>) => {
          dog.cancel();
          dog = this.clock.after(silentMs, bark);
          if (e.type === "ERROR") {
            const code = (e.object as unknown as { code?: number }).code;
            throw Object.assign(new Error(`watch error event (${code ?? "?"})`), { status: code });
          }
          const v = e.object.metadata.resourceVersion;
          if (v) last = v;
          if (e.type === "BOOKMARK") return;
          const key = keyOf(e.object);
          if (e.type === "DELETED") this.cache.delete(key);
          else this.cache.set(key, e.object);
          this.onChange(key, e.type === "DELETED" ? undefined : e.object);
        },
        watchAbort.signal,
        silentMs + 5_000,
        q,
      );
    } finally {
      dog.cancel();
      signal.removeEventListener("abort", onAbort);
    }
    return last;
  }

  /** List everything, replace the cache, and deliver a change for every key (added, changed, or gone). */
  private async relist(): Promise<string> {
    const q: Record<string, string> = {};
    if (this.opts.labelSelector) q.labelSelector = this.opts.labelSelector;
    this.stats.lists++;
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

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return realClock.sleep(ms, signal);
}
