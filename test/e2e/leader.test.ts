// Two operator processes at once, the leader frozen (SIGSTOP) past its lease
// and resumed: the standby takes over after the lease duration measured on its
// own clock, and the old leader never acts again (it exits the moment it runs,
// as controller-runtime does). Production timings: lease 15 s, renew 10 s.
// Proven on the source too: its general log shows exactly one FLUSH TABLES
// WITH READ LOCK per backup (each backup is made to take one, lock: ftwrl), so
// no second leader ever ran a backup session against it.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_IMAGE, OPERATOR_NS, mariadbStatefulSet, startE2eEnv, type E2eEnv, backupFinished, backupYaml, podReady } from "../harness/e2e-env.js";
import { startOperator, type OperatorProcess } from "../harness/operator.js";

const NS = "leader";
let env: E2eEnv;
let standby: OperatorProcess | undefined;

interface Lease { spec: { holderIdentity?: string; leaseTransitions?: number } }
const leasePath = `/apis/coordination.k8s.io/v1/namespaces/${OPERATOR_NS}/leases/replicator-operator`;

const backup = (name: string): string => backupYaml(NS, name, `  # Every backup session takes exactly one FLUSH TABLES WITH READ LOCK, counted in the source's general log.
  options: { lock: ftwrl }
`);

/** The FLUSH TABLES WITH READ LOCK statements the source's general log holds, with their sessions. */
async function ftwrlSessions(): Promise<{ thread: number; at: string }[]> {
  const rows = await env.sql<{ thread_id: number; event_time: Date | string }>(
    NS,
    "db-0",
    "SELECT thread_id, event_time FROM mysql.general_log WHERE command_type = 'Query' AND CONVERT(argument USING utf8mb4) LIKE 'FLUSH TABLES WITH READ LOCK%' ORDER BY event_time",
  );
  return rows.map((r) => ({ thread: r.thread_id, at: String(r.event_time) }));
}

async function completed(name: string): Promise<void> {
  const s = await backupFinished(env, NS, name);
  expect(s.phase, s.message).toBe("Completed");
}

/** Log lines of a process, parsed (pino JSON). */
async function logLines(p: OperatorProcess): Promise<{ time: string; msg: string; [k: string]: unknown }[]> {
  return (await p.logs())
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as { time: string; msg: string });
}

beforeAll(async () => {
  env = await startE2eEnv({ operator: "process" });
  await env.setUpNamespace(NS, "leader");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1), { namespace: NS });
  await podReady(env, NS, "db-0");
  // Every statement the source runs, into mysql.general_log (read back at the end).
  await env.sql(NS, "db-0", "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1");
}, 600_000);

afterAll(async () => {
  await standby?.stop().catch(() => undefined);
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("leader election with two operator processes", () => {
  it("a leader frozen past its lease never acts again; the standby takes over and each backup gets one Job", async () => {
    const leader = env.operator;
    const first = await env.waitFor("a leader", async () => (await env.cp.api.get<Lease>(leasePath)).spec.holderIdentity || undefined);
    standby = await startOperator({ kubeconfig: env.operatorKubeconfig, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS, identity: "operator-standby" });
    await env.cp.applyYaml(backup("before"), { namespace: NS });
    await completed("before");
    expect((await env.cp.api.get<Lease>(leasePath)).spec.holderIdentity).toBe(first);

    process.kill(leader.pid, "SIGSTOP");
    const frozenAt = new Date();
    try {
      await env.waitFor("the standby to take the lease", async () => ((await env.cp.api.get<Lease>(leasePath)).spec.holderIdentity === "operator-standby" ? true : undefined), 60_000);
      console.log(`standby took the lease ${Date.now() - frozenAt.getTime()} ms after the leader was frozen`);
      await env.cp.applyYaml(backup("while-frozen"), { namespace: NS });
      await completed("while-frozen");
    } finally {
      process.kill(leader.pid, "SIGCONT");
    }
    // It runs again: past its renew deadline, it stops acting and exits at once.
    expect(await leader.exited).toBe(1);
    await env.cp.applyYaml(backup("after"), { namespace: NS });
    await completed("after");

    const lines = await logLines(leader);
    const actedAfterFreeze = lines.filter((l) => Date.parse(l.time) > frozenAt.getTime() && /created|changed|applied|started/.test(l.msg) && !/lost the leader lease/.test(l.msg));
    expect(actedAfterFreeze).toEqual([]);
    const lost = lines.find((l) => l.msg === "lost the leader lease");
    console.log(`old leader after SIGCONT: ${JSON.stringify(lost)}; exit code 1`);
    expect(lost).toBeDefined();
    // One Job and one BackupStarted event per backup, all from one leader at a time.
    const jobs = await env.cp.api.get<{ items: { metadata: { name: string } }[] }>(`/apis/batch/v1/namespaces/${NS}/jobs`);
    expect(jobs.items.map((j) => j.metadata.name).sort()).toEqual(["after-backup", "before-backup", "while-frozen-backup"]);
    const events = await env.cp.api.get<{ items: { reason: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    const started = events.items.filter((e) => e.reason === "BackupStarted").map((e) => e.involvedObject.name).sort();
    expect(started).toEqual(["after", "before", "while-frozen"]);
    expect((await env.cp.api.get<Lease>(leasePath)).spec.holderIdentity).toBe("operator-standby");
    // The standby's own log: it became leader once.
    expect((await logLines(standby)).filter((l) => l.msg === "became leader")).toHaveLength(1);
    // On the source: one FLUSH TABLES WITH READ LOCK per backup, each in its own session; none from a second leader.
    const ftwrl = await ftwrlSessions();
    console.log(`FLUSH TABLES WITH READ LOCK on the source: ${JSON.stringify(ftwrl)}`);
    expect(ftwrl).toHaveLength(3);
    expect(new Set(ftwrl.map((f) => f.thread)).size).toBe(3);
  }, 300_000);
});
