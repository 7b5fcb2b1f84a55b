// The operator's watches cut and stalled while it runs, through a TCP proxy
// in front of the API server: nothing is missed (backups applied during the
// fault complete), a cut watch relists at most once, and a stalled watch is
// restarted by the watchdog from its resourceVersion, without a relist.
import net from "node:net";
import { readFile, writeFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_IMAGE, OPERATOR_NS, mariadbStatefulSet, startE2eEnv, type E2eEnv, backupFinished, backupYaml, podReady } from "../harness/e2e-env.js";
import { startOperator, type OperatorProcess } from "../harness/operator.js";

const NS = "watchfault";
let env: E2eEnv;
let op: OperatorProcess | undefined;
let proxy: ApiProxy | undefined;

/** A TCP proxy that can cut every connection, or stall the ones open now (new ones pass). */
interface ApiProxy {
  port: number;
  cut(): void;
  stallOpen(): void;
  close(): Promise<void>;
}

async function startProxy(target: { host: string; port: number }): Promise<ApiProxy> {
  const pairs = new Set<{ a: net.Socket; b: net.Socket; stalled: boolean }>();
  const server = net.createServer((a) => {
    const b = net.connect(target.port, target.host);
    const pair = { a, b, stalled: false };
    pairs.add(pair);
    a.on("data", (d) => { if (!pair.stalled) b.write(d); });
    b.on("data", (d) => { if (!pair.stalled) a.write(d); });
    const end = (): void => { a.destroy(); b.destroy(); pairs.delete(pair); };
    a.on("error", end).on("close", end);
    b.on("error", end).on("close", end);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  return {
    port: typeof addr === "object" && addr ? addr.port : 0,
    cut: () => { for (const p of [...pairs]) { p.a.destroy(); p.b.destroy(); } },
    stallOpen: () => { for (const p of pairs) p.stalled = true; },
    close: () => new Promise<void>((r) => { for (const p of [...pairs]) { p.a.destroy(); p.b.destroy(); } server.close(() => { r(); }); }),
  };
}

const backup = (name: string): string => backupYaml(NS, name);

async function completed(name: string): Promise<void> {
  const s = await backupFinished(env, NS, name, 180_000);
  expect(s.phase, s.message).toBe("Completed");
}

async function totals(): Promise<{ lists: number; watchdog: number }> {
  const text = await (await fetch(`${op!.healthUrl}/metrics`)).text();
  const sum = (name: string): number => text.split("\n").filter((l) => l.startsWith(`${name}{`)).reduce((s, l) => s + Number(l.split(" ").at(-1)), 0);
  return { lists: sum("replicator_informer_lists_total"), watchdog: sum("replicator_informer_watchdog_restarts_total") };
}

beforeAll(async () => {
  env = await startE2eEnv({ operator: "process" });
  // The operator talks to the API server through the proxy.
  await env.operator.stop();
  const kc = await readFile(env.operatorKubeconfig, "utf8");
  const server = /server:\s*"?(https:\/\/([\d.]+):(\d+))"?/.exec(kc);
  if (!server) throw new Error(`no server in ${env.operatorKubeconfig}`);
  // (A real node's API server certificate names 127.0.0.1 too.)
  proxy = await startProxy({ host: server[2]!, port: Number(server[3]) });
  const proxied = `${env.operatorKubeconfig}.proxied`;
  await writeFile(proxied, kc.replace(server[1]!, `https://127.0.0.1:${proxy.port}`));
  // A 10 s watch timeout (the default is 5-10 min) so that the watchdog (2x) fires within the test.
  op = await startOperator({ kubeconfig: proxied, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS, identity: "operator-proxied", env: { WATCH_TIMEOUT_SECONDS: "10" } });
  env.operator = op;
  await env.setUpNamespace(NS, "watchfault");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1), { namespace: NS });
  await podReady(env, NS, "db-0");
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
  await proxy?.close();
}, 120_000);

describe("watch faults", () => {
  it("a cut watch: nothing missed, at most one relist per informer", async () => {
    await env.cp.applyYaml(backup("w1"), { namespace: NS });
    await completed("w1");
    const before = await totals();
    proxy!.cut();
    await env.cp.applyYaml(backup("w2"), { namespace: NS });
    await completed("w2");
    const after = await totals();
    console.log(`cut: informer LISTs ${before.lists} -> ${after.lists}`);
    expect(after.lists - before.lists).toBeLessThanOrEqual(8); // 8 informers
  }, 300_000);

  it("a stalled watch: restarted by the watchdog from its version, no relist, nothing missed", async () => {
    const before = await totals();
    proxy!.stallOpen();
    await env.cp.applyYaml(backup("w3"), { namespace: NS });
    await completed("w3");
    const after = await totals();
    console.log(`stall: watchdog restarts ${before.watchdog} -> ${after.watchdog}, LISTs ${before.lists} -> ${after.lists}`);
    expect(after.watchdog).toBeGreaterThan(before.watchdog);
    expect(after.lists).toBe(before.lists);
    // Leader election has its own connections: the stalled pool never cost the lease.
    expect(await op!.logs()).not.toContain("lost the leader lease");
  }, 300_000);
});
