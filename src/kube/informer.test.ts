import { describe, expect, it } from "vitest";
import { createLogger } from "../lib/log.js";
import { FakeClock, flush } from "../operator/runtime/clock.js";
import { Informer, type KObject } from "./informer.js";
import { KubeApiError, type WatchEvent } from "./rest.js";

const log = createLogger({ name: "test", level: "silent" });

interface Obj extends KObject { v?: number }
const obj = (name: string, rv: string, v = 0): Obj => ({ metadata: { name, namespace: "ns", resourceVersion: rv }, v });

/** A fake list-watch: lists return `items`; each watch is a handle the test drives. */
class FakeApi {
  items: Obj[] = [];
  rv = "10";
  lists = 0;
  watches: { rv: string; query: Record<string, string>; emit: (e: WatchEvent<Obj>) => void; end: () => void; fail: (e: Error) => void; signal: AbortSignal }[] = [];
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the KubeRest signature
  list<T>(): Promise<{ items: T[]; metadata: { resourceVersion?: string } }> {
    this.lists++;
    return Promise.resolve({ items: this.items as unknown as T[], metadata: { resourceVersion: this.rv } });
  }
  watch<T>(_path: string, rv: string, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal, _idleMs?: number, query: Record<string, string> = {}): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let done = false;
      const finish = (f: () => void): void => {
        if (!done) { done = true; f(); }
      };
      signal.addEventListener("abort", () => { finish(resolve); }, { once: true });
      this.watches.push({
        rv,
        query,
        signal,
        emit: (e) => {
          try {
            onEvent(e as unknown as WatchEvent<T>);
          } catch (err) {
            // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- reject wants an Error
            finish(() => { reject(err as Error); });
          }
        },
        end: () => { finish(resolve); },
        fail: (e) => { finish(() => { reject(e); }); },
      });
    });
  }
  get current() {
    const w = this.watches.at(-1);
    if (!w) throw new Error("no watch");
    return w;
  }
}

function start(opts: { resyncMs?: number; timeoutS?: number } = {}) {
  const clock = new FakeClock();
  const api = new FakeApi();
  api.items = [obj("a", "5"), obj("b", "6")];
  const seen: [string, number | undefined][] = [];
  const inf = new Informer<Obj>(api, "/api/v1/pods", (k, o) => seen.push([k, o?.v]), log, { resyncMs: opts.resyncMs ?? 30_000, watchTimeoutSeconds: opts.timeoutS ?? 300, clock });
  const abort = new AbortController();
  const done = inf.run(abort.signal);
  return { clock, api, seen, inf, abort, done };
}

describe("Informer", () => {
  it("resyncs from its cache: every object re-delivered, no relist, the same watch kept", async () => {
    const h = start({ resyncMs: 30_000 });
    await flush();
    expect(h.api.lists).toBe(1);
    expect(h.api.watches).toHaveLength(1);
    h.seen.length = 0;
    await h.clock.advance(30_000);
    expect(h.seen.map((s) => s[0]).sort()).toEqual(["ns/a", "ns/b"]);
    await h.clock.advance(90_000);
    expect(h.inf.stats.resyncs).toBe(4);
    expect(h.api.lists).toBe(1);
    expect(h.api.watches).toHaveLength(1);
    expect(h.api.current.signal.aborted).toBe(false);
    h.abort.abort();
    await h.done;
  });

  it("asks for bookmarks' timeout, applies events, and restarts a watch the server ended from the last version, without a relist", async () => {
    const h = start();
    await flush();
    expect(h.api.current.rv).toBe("10");
    expect(h.api.current.query.timeoutSeconds).toBe("300");
    h.api.current.emit({ type: "ADDED", object: obj("c", "11", 1) });
    h.api.current.emit({ type: "MODIFIED", object: obj("a", "12", 2) });
    h.api.current.emit({ type: "DELETED", object: obj("b", "13") });
    h.api.current.emit({ type: "BOOKMARK", object: obj("", "20") });
    expect(h.inf.list().map((o) => o.metadata.name).sort()).toEqual(["a", "c"]);
    expect(h.inf.get("ns/a")?.v).toBe(2);
    h.api.current.end();
    await flush();
    expect(h.api.watches).toHaveLength(2);
    expect(h.api.current.rv).toBe("20");
    expect(h.api.lists).toBe(1);
    h.abort.abort();
    await h.done;
  });

  it("relists on 410 Gone (as an error event or a status) at once", async () => {
    const h = start();
    await flush();
    h.api.rv = "30";
    h.api.current.emit({ type: "ERROR", object: { metadata: { name: "" }, code: 410 } as unknown as Obj });
    await flush();
    expect(h.api.lists).toBe(2);
    expect(h.api.current.rv).toBe("30");
    h.api.current.fail(new KubeApiError(410, "Expired", "too old"));
    await flush();
    expect(h.api.lists).toBe(3);
    h.abort.abort();
    await h.done;
  });

  it("relists after a backoff when the watch fails, and delivers what changed meanwhile", async () => {
    const h = start();
    await flush();
    h.api.items = [obj("a", "5"), obj("d", "40", 4)];
    h.api.current.fail(new Error("ECONNRESET"));
    await flush();
    expect(h.api.lists).toBe(1);
    h.seen.length = 0;
    await h.clock.advance(500);
    expect(h.api.lists).toBe(2);
    expect(h.seen).toEqual(expect.arrayContaining([["ns/b", undefined], ["ns/d", 4]]));
    h.abort.abort();
    await h.done;
  });

  it("a watchdog restarts a watch silent for twice its timeout (from its version, no relist)", async () => {
    const h = start({ timeoutS: 60, resyncMs: 0 });
    await flush();
    await h.clock.advance(119_000);
    h.api.current.emit({ type: "BOOKMARK", object: obj("", "15") });
    await h.clock.advance(119_000);
    expect(h.api.watches).toHaveLength(1);
    await h.clock.advance(1_000);
    expect(h.api.watches[0]?.signal.aborted).toBe(true);
    expect(h.api.watches).toHaveLength(2);
    expect(h.api.current.rv).toBe("15");
    expect(h.inf.stats.watchdogRestarts).toBe(1);
    expect(h.api.lists).toBe(1);
    h.abort.abort();
    await h.done;
  });
});
