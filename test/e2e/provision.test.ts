// Self-provisioning slaves, end to end: a StatefulSet annotated
// replicator.dev/provision with the readiness gate; scale it and the new pod
// restores the newest usable backup, replicates from the master, gets its
// PVC marked, and only then turns Ready. Never twice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { foreignDataFiles, mariadbStatefulSet, realCluster, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";

const NS = "prov";
let env: E2eEnv;

interface PodStatus { status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } }
interface Pvc { metadata: { name: string; uid: string; annotations?: Record<string, string> } }

const podPath = (name: string): string => `/api/v1/namespaces/${NS}/pods/${name}`;
const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;

async function condition(pod: string, type: string) {
  const p = await env.cp.api.get<PodStatus>(podPath(pod));
  return p.status?.conditions?.find((c) => c.type === type);
}

async function isReady(pod: string): Promise<boolean> {
  return (await condition(pod, "Ready"))?.status === "True";
}

async function pvc(pod: string): Promise<Pvc> {
  return env.cp.api.get<Pvc>(`/api/v1/namespaces/${NS}/persistentvolumeclaims/data-${pod}`);
}

async function count(pod: string, table: string): Promise<number> {
  const [r] = await env.sql<{ n: number | string }>(NS, pod, `SELECT COUNT(*) AS n FROM ${table}`);
  return Number(r?.n);
}

async function restoresFor(pod: string): Promise<string[]> {
  const l = await env.cp.api.get<{ items: { metadata: { name: string } }[] }>(`${crPath("replicatorrestores")}?labelSelector=replicator.dev%2Fprovision-pod%3D${pod}`);
  return l.items.map((i) => i.metadata.name);
}

async function scale(replicas: number): Promise<void> {
  await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas } }, "merge");
}

async function backupMaster(name: string): Promise<string> {
  await env.cp.applyYaml(
    `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: ${name}, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
    { namespace: NS },
  );
  const s = await env.waitFor(`backup ${name}`, async () => {
    const o = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; message?: string } }>(crPath("replicatorbackups", name));
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  });
  expect(s.phase, s.message).toBe("Completed");
  return s.backupName ?? "";
}

/** Watch a pod until Ready, recording whether it was ever Ready before its PVC was marked and replication ran. */
async function waitProvisioned(pod: string): Promise<{ readyBeforeMarked: boolean }> {
  let readyBeforeMarked = false;
  await env.waitFor(`${pod} to be provisioned and Ready`, async () => {
    const ready = await isReady(pod);
    const marked = Boolean((await pvc(pod)).metadata.annotations?.["replicator.dev/provisioned"]);
    if (ready && !marked) readyBeforeMarked = true;
    return ready && marked ? true : undefined;
  }, 180_000);
  return { readyBeforeMarked };
}

beforeAll(async () => {
  env = await startE2eEnv();
  await env.setUpNamespace(NS, "prov");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 3, { provision: true }), { namespace: NS });
  await env.waitFor("the master to be Ready", async () => ((await isReady("db-0")) ? true : undefined));
  await env.sql(NS, "db-0", "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
  await env.sql(NS, "db-0", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB");
  await env.sql(NS, "db-0", `INSERT INTO app.t VALUES ${Array.from({ length: 100 }, (_, i) => `(${i + 1}, 'before')`).join(",")}`);
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("self-provisioning slaves", () => {
  it("keeps slaves not Ready, saying why, while no backup exists; the master's volume is marked as the master", async () => {
    const gate = await env.waitFor("the NoBackup condition", async () => {
      const c = await condition("db-1", "replicator.dev/provisioned");
      return c?.reason === "NoBackup" ? c : undefined;
    });
    expect(gate.status).toBe("False");
    expect(gate.message).toBe("no backup of cluster db with a replication position in repository default; take one: kubectl replicator backup db");
    expect(await isReady("db-1")).toBe(false);
    expect((await pvc("db-0")).metadata.annotations?.["replicator.dev/provisioned"]).toBe("master");
    const events = await env.cp.api.get<{ items: { reason: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    expect(events.items.some((e) => e.involvedObject.name === "db-1" && e.reason === "NoBackup")).toBe(true);
  });

  it("provisions the slaves from a new backup; they replicate rows written after it", async () => {
    const name = await backupMaster("first");
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (101, 'after backup')");
    for (const pod of ["db-1", "db-2"]) {
      const { readyBeforeMarked } = await waitProvisioned(pod);
      expect(readyBeforeMarked).toBe(false);
      expect((await pvc(pod)).metadata.annotations?.["replicator.dev/provisioned"]).toBe(name);
      await env.waitFor(`${pod} to catch up`, async () => ((await count(pod, "app.t")) === 101 ? true : undefined));
    }
  });

  it("scaling to 4: the new pod restores, replicates newer rows, is marked, and is Ready only after that", async () => {
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (102, 'before scale')");
    await scale(4);
    const { readyBeforeMarked } = await waitProvisioned("db-3");
    expect(readyBeforeMarked).toBe(false);
    const [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>(NS, "db-3", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    await env.waitFor("db-3 to have row 102", async () => ((await count("db-3", "app.t WHERE id = 102")) === 1 ? true : undefined));
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (103, 'after scale')");
    await env.waitFor("db-3 to replicate row 103", async () => ((await count("db-3", "app.t WHERE id = 103")) === 1 ? true : undefined));
    // On a real node: the logical restore's files (written by the server) belong to mysql (999).
    expect(await foreignDataFiles(NS, "db-3")).toEqual(realCluster ? [] : undefined);
    expect(await restoresFor("db-3")).toHaveLength(1);
    const metrics = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
    expect(metrics).toMatch(/replicator_slaves_provisioned_total\{namespace="prov",cluster="db"\} 3/);
    expect(metrics).toMatch(/replicator_provision_last_seconds\{namespace="prov",cluster="db"\} [\d.]+/);
  });

  it("never provisions twice: not after a pod restart, nor an operator restart, nor a scale down and up", async () => {
    const before = (await pvc("db-3")).metadata.annotations?.["replicator.dev/provisioned-at"];
    const uid = async (pod: string): Promise<string> => (await env.cp.api.get<{ metadata: { uid: string } }>(podPath(pod))).metadata.uid;
    /** Wait for a new pod (another UID) of that name to be Ready: the operator must have opened its gate again. */
    const readyAgain = (pod: string, oldUid: string) =>
      env.waitFor(`a new ${pod} to be Ready`, async () => ((await uid(pod).catch(() => oldUid)) !== oldUid && (await isReady(pod).catch(() => false)) ? true : undefined), 120_000);
    const uid3 = await uid("db-3");
    await env.cp.api.delete(podPath("db-3"));
    await readyAgain("db-3", uid3);
    await env.restartOperator();
    const [uid2b, uid3b] = [await uid("db-2"), await uid("db-3")];
    await scale(2);
    await env.waitFor("db-3 and db-2 to go", async () => {
      const l = await env.cp.api.get<{ items: { metadata: { name: string } }[] }>(`/api/v1/namespaces/${NS}/pods?labelSelector=app%3Ddb`);
      return l.items.length === 2 ? true : undefined;
    });
    await scale(4);
    await readyAgain("db-2", uid2b);
    await readyAgain("db-3", uid3b);
    expect((await pvc("db-3")).metadata.annotations?.["replicator.dev/provisioned-at"]).toBe(before);
    expect(await restoresFor("db-3")).toHaveLength(1);
    expect(await restoresFor("db-2")).toHaveLength(1);
    // The data survived on the volume, and replication resumed.
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (104, 'after restarts')");
    await env.waitFor("db-3 to replicate row 104", async () => ((await count("db-3", "app.t WHERE id = 104")) === 1 ? true : undefined));
  });

  it("restores exactly once when the operator is killed in the middle of provisioning", async () => {
    await scale(5);
    await env.waitFor("db-4's restore to start", async () => ((await restoresFor("db-4")).length === 1 ? true : undefined));
    await env.restartOperator({ kill: true });
    await waitProvisioned("db-4");
    expect(await restoresFor("db-4")).toHaveLength(1);
    const jobs = await env.cp.api.get<{ items: unknown[] }>(`/apis/batch/v1/namespaces/${NS}/jobs?labelSelector=replicator.dev%2Fsource-pod%3Ddb-4`);
    expect(jobs.items).toHaveLength(1);
  });

  it("kubectl replicator offline|online stops and starts replication on a slave pod", async () => {
    const kenv = { REPLICATOR_MODE: "cluster", KUBECONFIG: env.cp.kubeconfigPath };
    const off = await runCli(["offline", "db-1", "-n", NS, "--timeout", "60"], kenv);
    expect(off.exitCode, off.stderr).toBe(0);
    expect(off.stdout).toContain("db-1: slave: replication stopped (STOP SLAVE)");
    let [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>(NS, "db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["No", "No"]);
    const on = await runCli(["online", "db-1", "-n", NS, "--timeout", "60"], kenv);
    expect(on.exitCode, on.stderr).toBe(0);
    [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>(NS, "db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
  });

  it("stays not Ready when the master has purged the binlogs past every backup, and provisions after a new backup", async () => {
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (105, 'x'); FLUSH BINARY LOGS; INSERT INTO app.t VALUES (106, 'y')");
    await env.waitFor("the master to purge its old binlogs", async () => {
      const logs = await env.sql<{ Log_name: string }>(NS, "db-0", "SHOW BINARY LOGS");
      if (logs.length === 1) return true;
      await env.sql(NS, "db-0", `PURGE BINARY LOGS TO '${logs[logs.length - 1]?.Log_name ?? ""}'`);
      return undefined;
    });
    await scale(6);
    const gate = await env.waitFor("the BinlogsPurged condition", async () => {
      const c = await condition("db-5", "replicator.dev/provisioned");
      return c?.reason === "BinlogsPurged" ? c : undefined;
    });
    expect(gate.message).toContain("the master has purged binlogs the backup needs");
    expect(gate.message).toContain("take a new backup, or raise the master's binlog retention");
    expect(await isReady("db-5")).toBe(false);
    const name = await backupMaster("second");
    await waitProvisioned("db-5");
    expect((await pvc("db-5")).metadata.annotations?.["replicator.dev/provisioned"]).toBe(name);
    expect(await count("db-5", "app.t")).toBeGreaterThanOrEqual(106);
    const list = await runCli(["list", "--repository", "s3://prov", "--cluster", "db", "--json"], env.s3.env);
    expect((list.json!.backups as unknown[]).length).toBe(2);
  });
});
