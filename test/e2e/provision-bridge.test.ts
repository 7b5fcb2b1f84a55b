// Self-provisioning past purged binlogs, end to end: the master has purged
// the binlogs after its only backup, but the cluster's binlog archive holds
// them; `kubectl scale` adds a slave that the operator provisions anyway
// (the restore Job replays the archived binlogs, then replicates), and that
// turns Ready with the master's rows and checksums.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { mariadbStatefulSet, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";

const NS = "provb";
let env: E2eEnv;

interface PodStatus { status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } }
interface Pvc { metadata: { annotations?: Record<string, string> } }

const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;

async function condition(pod: string, type: string) {
  const p = await env.cp.api.get<PodStatus>(`/api/v1/namespaces/${NS}/pods/${pod}`);
  return p.status?.conditions?.find((c) => c.type === type);
}

async function checksum(pod: string): Promise<string> {
  const rows = await env.sql<{ Checksum: number | string }>(NS, pod, "CHECKSUM TABLE app.t, app.j");
  return rows.map((r) => String(r.Checksum)).join(",");
}

async function archive(): Promise<void> {
  const master = `mysql://repl@${await env.podAddress(NS, "db-0")}:3306`;
  const a = await runCli(["binlog-archive", "--source", master, "--repository", "s3://provb", "--cluster", "db", "--once"], { ...env.s3.env, REPLICATOR_DB_PASSWORD: "replpass" });
  expect(a.stderr).toBe("");
  expect(a.exitCode).toBe(0);
}

beforeAll(async () => {
  env = await startE2eEnv();
  await env.setUpNamespace(NS, "provb");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1, { provision: true }), { namespace: NS });
  await env.waitFor("the master to be Ready", async () => ((await condition("db-0", "Ready"))?.status === "True" ? true : undefined));
  await env.sql(NS, "db-0", "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
  // app.j has no primary key: a transaction applied twice would show in its checksum.
  await env.sql(NS, "db-0", "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB; CREATE TABLE app.j (v VARCHAR(20)) ENGINE=InnoDB");
  await env.sql(NS, "db-0", `INSERT INTO app.t VALUES ${Array.from({ length: 100 }, (_, i) => `(${i + 1}, 'before')`).join(",")}`);
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("provisioning over the binlog archive", () => {
  it("kubectl scale: a slave is provisioned from a backup whose binlogs the master purged, through the archive, and replicates", async () => {
    await env.cp.applyYaml(
      `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: first, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const b = await env.waitFor("backup first", async () => {
      const o = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; message?: string } }>(crPath("replicatorbackups", "first"));
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    });
    expect(b.phase, b.message).toBe("Completed");
    await archive();
    for (let k = 0; k < 3; k++) {
      await env.sql(NS, "db-0", `INSERT INTO app.t VALUES (${200 + k}, 'after ${k}'); INSERT INTO app.j VALUES ('after ${k}'); FLUSH BINARY LOGS`);
    }
    await env.sql(NS, "db-0", "INSERT INTO app.j VALUES ('kept')");
    await archive();
    await env.waitFor("the master to purge its old binlogs", async () => {
      const logs = await env.sql<{ Log_name: string }>(NS, "db-0", "SHOW BINARY LOGS");
      if (logs.length === 1) return true;
      await env.sql(NS, "db-0", `PURGE BINARY LOGS TO '${logs[logs.length - 1]?.Log_name ?? ""}'`);
      return undefined;
    });
    await archive();

    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: 2 } }, "merge");
    let gate: Awaited<ReturnType<typeof condition>>;
    await env
      .waitFor("db-1 to be provisioned and Ready", async () => {
        gate = await condition("db-1", "replicator.dev/provisioned");
        const marked = (await env.cp.api.get<Pvc>(`/api/v1/namespaces/${NS}/persistentvolumeclaims/data-db-1`)).metadata.annotations?.["replicator.dev/provisioned"];
        return (await condition("db-1", "Ready"))?.status === "True" && marked ? true : undefined;
      }, 240_000)
      .catch((err: unknown) => {
        throw new Error(`${(err as Error).message}\n--- db-1's gate: ${JSON.stringify(gate)}`);
      });
    expect((await env.cp.api.get<Pvc>(`/api/v1/namespaces/${NS}/persistentvolumeclaims/data-db-1`)).metadata.annotations?.["replicator.dev/provisioned"]).toBe(b.backupName);

    // The operator said why it could: the archive's binlogs bridge what the master purged.
    const events = await env.cp.api.get<{ items: { reason?: string; message?: string; involvedObject?: { name?: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    const provisioning = events.items.filter((e) => e.involvedObject?.name === "db-1" && e.reason === "Provisioning").map((e) => e.message ?? "");
    expect(provisioning.join("\n")).toMatch(/replaying the archived binlogs .+ the master has purged \(through GTID \d+-\d+-\d+\)/);
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (300, 'after the seed'); INSERT INTO app.j VALUES ('after the seed')");
    const [m] = await env.sql<{ pos: string }>(NS, "db-0", "SELECT @@gtid_binlog_pos AS pos");
    await env.sql(NS, "db-1", `SELECT MASTER_GTID_WAIT('${m?.pos ?? ""}', 60)`);
    const [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>(NS, "db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    expect(await checksum("db-1")).toBe(await checksum("db-0"));
  });
});
