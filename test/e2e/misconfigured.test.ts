// What a user sees when the database side is set up wrong, as a first run
// on a real node found it: every case is named on the resource (condition
// and event) with its fix, and nothing loops.
// - binary logging off on the master: the backup completes with a warning
//   condition and event naming the cause; the slaves' gate says so instead of
//   "take a backup", and never uses the position-less backup;
// - a slave that already replicates before the operator acts (CHANGE MASTER
//   in an init script): reported, never restored over, no retry loop; the
//   documented way to keep it opens the gate;
// - a ReplicatorRestore of `latest` onto a running server takes the newest
//   logical backup, not a newer physical one;
// - a Secret without the key a resource names: the Secret and key are named.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mariadbStatefulSet, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";

const NS = "misconf";
let env: E2eEnv;

interface Cond { type: string; status: string; reason?: string; message?: string }
interface Status { phase?: string; backupName?: string; message?: string; position?: string; replicating?: boolean; conditions?: Cond[] }
interface EventList { items: { type: string; reason: string; message: string; involvedObject: { kind: string; name: string } }[] }

const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;
const podPath = (name: string): string => `/api/v1/namespaces/${NS}/pods/${name}`;

async function gate(pod: string): Promise<Cond | undefined> {
  const p = await env.cp.api.get<{ status?: { conditions?: Cond[] } }>(podPath(pod));
  return p.status?.conditions?.find((c) => c.type === "replicator.dev/provisioned");
}
const isReady = async (pod: string): Promise<boolean> =>
  ((await env.cp.api.get<{ status?: { conditions?: Cond[] } }>(podPath(pod))).status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True");
const events = async (name: string): Promise<EventList["items"]> => (await env.cp.api.get<EventList>(`/api/v1/namespaces/${NS}/events`)).items.filter((e) => e.involvedObject.name === name);
const restoresFor = async (pod: string): Promise<string[]> =>
  (await env.cp.api.get<{ items: { metadata: { name: string } }[] }>(`${crPath("replicatorrestores")}?labelSelector=replicator.dev%2Fprovision-pod%3D${pod}`)).items.map((i) => i.metadata.name);

async function apply(yaml: string): Promise<void> {
  await env.cp.applyYaml(yaml, { namespace: NS });
}

async function backup(name: string, sts: string, method = "mysqldump"): Promise<Status> {
  await apply(`apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: ${name}, namespace: ${NS} }
spec:
  method: ${method}
  source: { statefulSet: ${sts}, credentialsSecret: { name: db-credentials } }
`);
  return env.waitFor(`backup ${name}`, async () => {
    const o = await env.cp.api.get<{ status?: Status }>(crPath("replicatorbackups", name));
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  }, 180_000);
}

async function masterWithData(pod: string): Promise<void> {
  await env.sql(NS, pod, "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
  await env.sql(NS, pod, "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB");
  await env.sql(NS, pod, `INSERT INTO app.t VALUES ${Array.from({ length: 50 }, (_, i) => `(${i + 1}, 'row')`).join(",")}`);
}

beforeAll(async () => {
  env = await startE2eEnv();
  await env.setUpNamespace(NS, "misconf");
  // nolog: binary logging off (the options a server gets last win). pre: normal, with a slave configured behind the operator's back.
  await apply(mariadbStatefulSet(NS, "nolog", 2, { provision: true, args: ["--skip-log-bin"] }));
  await apply(mariadbStatefulSet(NS, "pre", 2, { provision: true }));
  await apply(mariadbStatefulSet(NS, "tgt", 1, { args: ["--server-id=99"] }));
  // The operator logs in to provisioned pods with the Secret this annotation names (default <statefulset>-credentials).
  for (const sts of ["nolog", "pre"]) {
    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/${sts}`, { metadata: { annotations: { "replicator.dev/credentials-secret": "db-credentials" } } }, "merge");
  }
  for (const pod of ["nolog-0", "pre-0", "tgt-0"]) await env.waitFor(`${pod} to be Ready`, async () => ((await isReady(pod)) ? true : undefined), 180_000);
  await masterWithData("nolog-0");
  await masterWithData("pre-0");
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("a misconfigured database side is named, with its fix", () => {
  it("binary logging off: the backup completes with ReplicationPosition=False and a Warning event naming the cause", async () => {
    const s = await backup("nolog-backup", "nolog");
    expect(s.phase, s.message).toBe("Completed");
    expect(s.position).toBeUndefined();
    const cause = "binary logging is off on nolog-0: the backup has no replication position; set log_bin and server_id in nolog-0's server configuration and take a new backup to seed slaves (this one restores data only)";
    expect(s.conditions?.find((c) => c.type === "ReplicationPosition")).toMatchObject({ status: "False", reason: "BinaryLoggingOff", message: cause });
    expect(s.message).toContain(cause);
    const ev = await env.waitFor("the BinaryLoggingOff event", async () => (await events("nolog-backup")).find((e) => e.reason === "BinaryLoggingOff"));
    expect(ev.type).toBe("Warning");
    expect(ev.message).toContain(cause);
  });

  it("binary logging off: the slave's gate names it instead of 'take a backup', and the position-less backup is never used", async () => {
    const g = await env.waitFor("the BinaryLoggingOff gate", async () => {
      const c = await gate("nolog-1");
      return c?.reason === "BinaryLoggingOff" ? c : undefined;
    });
    expect(g.status).toBe("False");
    expect(g.message).toBe(
      "binary logging is off on the master nolog-0: no backup of it has a replication position, so none can seed a slave; set log_bin and server_id in nolog-0's server configuration, restart it, then take a backup: kubectl replicator backup nolog",
    );
    expect(g.message).not.toContain("take one");
    expect(await restoresFor("nolog-1")).toEqual([]);
    expect(await isReady("nolog-1")).toBe(false);
    expect((await events("nolog-1")).some((e) => e.involvedObject.kind === "Pod" && e.type === "Warning" && e.reason === "BinaryLoggingOff")).toBe(true);
  });

  it("a slave that already replicates before the operator acts is reported, never restored over, and kept once annotated", async () => {
    // What mariadb-cluster.yaml's init script does on a new slave: point it at the master from the start of the binlog.
    await env.waitFor("pre-1 to be waiting for a backup", async () => ((await gate("pre-1"))?.reason === "NoBackup" ? true : undefined));
    const master = await env.podAddress(NS, "pre-0");
    await env.sql(NS, "pre-1", `CHANGE MASTER TO MASTER_HOST='${master}', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD='replpass', MASTER_USE_GTID=slave_pos; START SLAVE`);
    await env.waitFor("pre-1 to replicate by itself", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "pre-1", "SELECT COUNT(*) AS n FROM app.t");
      return Number(r?.n) === 50 ? true : undefined;
    });
    const s = await backup("pre-logical", "pre");
    expect(s.phase, s.message).toBe("Completed");
    expect(s.conditions?.find((c) => c.type === "ReplicationPosition")).toMatchObject({ status: "True", reason: "PositionRecorded" });
    const g = await env.waitFor("the AlreadyReplicating gate", async () => {
      const c = await gate("pre-1");
      return c?.reason === "AlreadyReplicating" ? c : undefined;
    });
    expect(g.message).toContain(`the server is already a slave of ${master}:3306 (IO thread running, SQL thread running)`);
    expect(g.message).toContain("Remove CHANGE MASTER from the pod's init scripts");
    expect(g.message).toContain("kubectl annotate pvc data-pre-1 replicator.dev/provisioned=manual");
    const warnings = (await events("pre-1")).filter((e) => e.reason === "AlreadyReplicating");
    expect(warnings.map((e) => e.type)).toEqual(["Warning"]);
    // No restore is started, and none is retried: a while later there is still none and one event.
    await new Promise((r) => setTimeout(r, 8_000));
    expect(await restoresFor("pre-1")).toEqual([]);
    expect((await events("pre-1")).filter((e) => e.reason === "AlreadyReplicating")).toHaveLength(1);
    // The documented way to keep this slave as it is.
    await env.cp.api.patch(`/api/v1/namespaces/${NS}/persistentvolumeclaims/data-pre-1`, { metadata: { annotations: { "replicator.dev/provisioned": "manual" } } }, "merge");
    await env.waitFor("pre-1 to be Ready once kept", async () => ((await isReady("pre-1")) ? true : undefined), 90_000);
  });

  it("restore of latest onto a running server takes the newest logical backup, not a newer physical one", async () => {
    const logical = (await env.cp.api.get<{ status?: Status }>(crPath("replicatorbackups", "pre-logical"))).status?.backupName ?? "";
    const physical = await backup("pre-physical", "pre", "mariabackup");
    expect(physical.phase, physical.message).toBe("Completed");
    expect((physical.backupName ?? "") > logical).toBe(true);
    await apply(`apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: latest-into-tgt, namespace: ${NS} }
spec:
  cluster: pre
  backup: latest
  target: { pod: tgt-0, credentialsSecret: { name: db-credentials } }
  replicateFrom: { statefulSet: pre, credentialsSecret: { name: db-replication } }
`);
    const s = await env.waitFor("the restore", async () => {
      const o = await env.cp.api.get<{ status?: Status }>(crPath("replicatorrestores", "latest-into-tgt"));
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    }, 180_000);
    expect(s.phase, s.message).toBe("Completed");
    expect(s.backupName).toBe(logical);
    expect(s.replicating).toBe(true);
    await env.sql(NS, "pre-0", "INSERT INTO app.t VALUES (51, 'after')");
    await env.waitFor("tgt-0 to replicate", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "tgt-0", "SELECT COUNT(*) AS n FROM app.t");
      return Number(r?.n) === 51 ? true : undefined;
    });
  });

  it("restore of latest with no backup that can seed a running slave: one Pending message naming why and the fix", async () => {
    await apply(`apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: from-nolog, namespace: ${NS} }
spec:
  cluster: nolog
  target: { pod: tgt-0, credentialsSecret: { name: db-credentials } }
  replicateFrom: { statefulSet: nolog, credentialsSecret: { name: db-replication } }
`);
    const s = await env.waitFor("the NoRestorableBackup condition", async () => {
      const o = await env.cp.api.get<{ status?: Status }>(crPath("replicatorrestores", "from-nolog"));
      return o.status?.conditions?.find((c) => c.type === "Ready")?.reason === "NoRestorableBackup" ? o.status : undefined;
    });
    expect(s.phase).toBe("Pending");
    expect(s.message).toMatch(
      /^no logical backup of cluster nolog in repository default has a replication position, which spec\.replicateFrom needs \(the newest, \S+-mysqldump-nolog-0: binary logging was off on nolog-0 when it was taken\); set log_bin and server_id on the master and take a new backup: kubectl replicator backup nolog --method mysqldump$/,
    );
  });

  it("a Secret without the key a resource names: the Secret and the key are named, not a stuck Job", async () => {
    await apply(`apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: wrong-keys, namespace: ${NS} }
spec:
  cluster: pre
  target: { pod: tgt-0, credentialsSecret: { name: db-credentials } }
  replicateFrom:
    statefulSet: pre
    credentialsSecret: { name: db-credentials, userKey: replication-username, passwordKey: replication-password }
`);
    const s = await env.waitFor("the SecretInvalid condition", async () => {
      const o = await env.cp.api.get<{ status?: Status }>(crPath("replicatorrestores", "wrong-keys"));
      return o.status?.conditions?.find((c) => c.type === "Ready")?.reason === "SecretInvalid" ? o.status : undefined;
    });
    expect(s.phase).toBe("Pending");
    expect(s.message).toBe(
      'Secret db-credentials (spec.replicateFrom.credentialsSecret) has no key "replication-username" (spec.replicateFrom.credentialsSecret.userKey); its keys are password, username. Add the key, or set spec.replicateFrom.credentialsSecret.userKey/passwordKey to the keys it has',
    );
    const jobs = await env.cp.api.get<{ items: unknown[] }>(`/apis/batch/v1/namespaces/${NS}/jobs?labelSelector=app.kubernetes.io%2Finstance%3Dwrong-keys`);
    expect(jobs.items).toHaveLength(0);
  });
});
