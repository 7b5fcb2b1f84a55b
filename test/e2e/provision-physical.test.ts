// Self-provisioning from a PHYSICAL backup, end to end: a ReplicatorBackup
// with method mariabackup runs on the master's node with its data volume
// mounted; a new slave's `replicator provision` init container restores it
// into the empty data volume and writes the replica configuration before
// mariadbd starts; the operator marks the PVC once the started server
// replicates, and only then opens the readiness gate. Never twice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { foreignDataFiles, mariadbStatefulSet, realCluster, seedAppMaster, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";

const NS = "phys";
let env: E2eEnv;

interface PodObj {
  metadata: { uid: string; annotations?: Record<string, string> };
  status?: {
    conditions?: { type: string; status: string; reason?: string; message?: string }[];
    initContainerStatuses?: { name: string; state?: { running?: object; terminated?: { exitCode: number; message?: string } } }[];
  };
}
interface Pvc { metadata: { annotations?: Record<string, string> } }

const podPath = (name: string): string => `/api/v1/namespaces/${NS}/pods/${name}`;
const getPod = (name: string): Promise<PodObj> => env.cp.api.get<PodObj>(podPath(name));
const isReady = async (name: string): Promise<boolean> => (await getPod(name)).status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
const pvcMarker = async (pod: string): Promise<Record<string, string>> =>
  (await env.cp.api.get<Pvc>(`/api/v1/namespaces/${NS}/persistentvolumeclaims/data-${pod}`)).metadata.annotations ?? {};
const initResult = async (pod: string): Promise<{ ok?: boolean; action?: string; name?: string; reason?: string }> => {
  const t = (await getPod(pod)).status?.initContainerStatuses?.find((s) => s.name === "provision")?.state?.terminated;
  return JSON.parse(t?.message ?? "{}") as { ok?: boolean; action?: string; name?: string };
};

async function checksums(pod: string, extra = ""): Promise<Record<string, string>> {
  const rows = await env.sql<{ Table: string; Checksum: string | number }>(NS, pod, `CHECKSUM TABLE app.t, app.notes, app.blobs${extra}`);
  return Object.fromEntries(rows.map((r) => [r.Table, String(r.Checksum)]));
}

beforeAll(async () => {
  env = await startE2eEnv();
  await env.setUpNamespace(NS, "phys");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1, { provision: true, initContainer: true }), { namespace: NS });
  await env.waitFor("the master to be Ready", async () => ((await isReady("db-0")) ? true : undefined), 180_000);
  await seedAppMaster(env, NS, "db-0");
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("self-provisioning from a physical (mariabackup) backup", () => {
  let backupName = "";

  it("the master's init container is told there is nothing to restore; its volume is marked as the master", async () => {
    expect(await initResult("db-0")).toMatchObject({ ok: true, action: "skipped" });
    expect((await pvcMarker("db-0"))["replicator.dev/provisioned"]).toBe("master");
  });

  it("a mariabackup ReplicatorBackup runs beside the master with its data volume and records the position", async () => {
    await env.cp.applyYaml(
      `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: physical, namespace: ${NS} }
spec:
  method: mariabackup
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    type JobObj = { spec: { template: { spec: { nodeName?: string; volumes: { name: string; persistentVolumeClaim?: { claimName: string } }[] } } } };
    // The Job is seen while it runs: once the outcome is recorded the operator deletes it (below).
    let job: JobObj | undefined;
    const s = await env.waitFor("the physical backup", async () => {
      job ??= await env.cp.api.get<JobObj>(`/apis/batch/v1/namespaces/${NS}/jobs/physical-backup`).catch(() => undefined);
      const o = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; message?: string; position?: string } }>(
        `/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/physical`,
      );
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    }, 180_000);
    expect(s.phase, s.message).toBe("Completed");
    backupName = s.backupName ?? "";
    expect(backupName).toMatch(/^\d{8}T\d{6}Z-mariabackup-db-0$/);
    expect(job?.spec.template.spec.nodeName).toBe(env.nodeName);
    expect(job?.spec.template.spec.volumes).toContainEqual({ name: "data", persistentVolumeClaim: { claimName: "data-db-0" } });
  });

  it("a finished mariabackup backup leaves no pod holding the source's PVC (deleting it would hang in Terminating)", async () => {
    type PodList = { items: { metadata: { name: string }; spec: { volumes?: { persistentVolumeClaim?: { claimName: string } }[] } }[] };
    const holders = await env.waitFor("the backup Job's pods to release data-db-0", async () => {
      const pods = await env.cp.api.get<PodList>(`/api/v1/namespaces/${NS}/pods`);
      const names = pods.items.filter((p) => p.spec.volumes?.some((v) => v.persistentVolumeClaim?.claimName === "data-db-0")).map((p) => p.metadata.name);
      return names.length === 1 ? names : undefined;
    }, 60_000);
    expect(holders).toEqual(["db-0"]);
    // The outcome stays on the resource: its Job is gone, not its record.
    const b = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; jobName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/physical`);
    expect(b.status).toMatchObject({ phase: "Completed", backupName, jobName: "physical-backup" });
    const gone = await env.cp.api.get(`/apis/batch/v1/namespaces/${NS}/jobs/physical-backup`).then(() => false, () => true);
    expect(gone).toBe(true);
  });

  it("scaling up: the init container restores it before mariadbd starts; the slave replicates later writes, is marked, then Ready", async () => {
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2001, 'after the backup')");
    const t0 = Date.now();
    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: 2 } }, "merge");
    let readyBeforeMarked = false;
    await env.waitFor("db-1 to be provisioned and Ready", async () => {
      const ready = await isReady("db-1").catch(() => false);
      const marked = Boolean((await pvcMarker("db-1").catch(() => ({})) as Record<string, string>)["replicator.dev/provisioned"]);
      if (ready && !marked) readyBeforeMarked = true;
      return ready && marked ? true : undefined;
    }, 240_000);
    const seconds = (Date.now() - t0) / 1000;
    process.stdout.write(`physical provisioning: scale → Ready in ${seconds.toFixed(1)}s\n`);
    expect(readyBeforeMarked).toBe(false);
    expect((await pvcMarker("db-1"))["replicator.dev/provisioned"]).toBe(backupName);
    expect(await initResult("db-1")).toMatchObject({ ok: true, action: "restored", name: backupName });
    const pod = await getPod("db-1");
    expect(JSON.parse(pod.metadata.annotations?.["replicator.dev/provision-plan"] ?? "{}")).toMatchObject({ action: "restore", backup: backupName });
    // No ReplicatorRestore Job: the restore ran in the pod itself.
    const restores = await env.cp.api.get<{ items: unknown[] }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorrestores`);
    expect(restores.items).toHaveLength(0);
    const [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string; Using_Gtid: string }>(NS, "db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running, st?.Using_Gtid]).toEqual(["Yes", "Yes", "Slave_Pos"]);
    await env.waitFor("db-1 to replicate the row written after the backup", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "db-1", "SELECT COUNT(*) AS n FROM app.t WHERE id = 2001");
      return Number(r?.n) === 1 ? true : undefined;
    });
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2002, 'after provisioning'); UPDATE app.notes SET note = 'changed' WHERE id = 7");
    await env.waitFor("db-1 to catch up", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "db-1", "SELECT COUNT(*) AS n FROM app.t WHERE id = 2002");
      return Number(r?.n) === 1 ? true : undefined;
    });
    expect(await checksums("db-1")).toEqual(await checksums("db-0"));
    // On a real node: every file the restore wrote belongs to mysql (999), as the server needs.
    expect(await foreignDataFiles(NS, "db-1")).toEqual(realCluster ? [] : undefined);
    const events = await env.cp.api.get<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    expect(events.items.some((e) => e.involvedObject.name === "db-1" && e.reason === "Provisioning" && e.message.includes("the init container restores"))).toBe(true);
  });

  it("never provisions twice: a restarted pod's init container finds data and leaves it", async () => {
    const before = await pvcMarker("db-1");
    const oldUid = (await getPod("db-1")).metadata.uid;
    await env.cp.api.delete(podPath("db-1"));
    await env.waitFor("a new db-1 to be Ready", async () => {
      const p = await getPod("db-1").catch(() => undefined);
      return p && p.metadata.uid !== oldUid && (await isReady("db-1")) ? true : undefined;
    }, 180_000);
    expect(await initResult("db-1")).toMatchObject({ ok: true, action: "skipped", reason: "DatadirNotEmpty" });
    expect(await pvcMarker("db-1")).toEqual(before);
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2003, 'after the restart')");
    await env.waitFor("db-1 to replicate after its restart", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "db-1", "SELECT COUNT(*) AS n FROM app.t WHERE id = 2003");
      return Number(r?.n) === 1 ? true : undefined;
    });
  });
  it("a pod deleted mid-restore: the next pod restores again from the start (the sentinel), replicates, and is marked once", async () => {
    // About 250 MB of incompressible rows, so that the restore lasts long enough to be interrupted.
    await env.sql(NS, "db-0", "CREATE TABLE app.big (id INT PRIMARY KEY, b VARBINARY(1024)) ENGINE=InnoDB; INSERT INTO app.big SELECT seq, RANDOM_BYTES(1024) FROM app.seq_1_to_250000");
    await env.cp.applyYaml(
      `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: physical-big, namespace: ${NS} }
spec:
  method: mariabackup
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const b = await env.waitFor("the larger physical backup", async () => {
      const o = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; message?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/physical-big`);
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    }, 300_000);
    expect(b.phase, b.message).toBe("Completed");
    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: 3 } }, "merge");
    // Deleted (at once) while its init container restores: it has said "restoring the planned
    // backup" and not yet "provisioned /var/lib/mysql" (polled every 100 ms: that lasts seconds).
    const deadline = Date.now() + 240_000;
    let interrupted: { uid: string; log: string } | undefined;
    while (!interrupted) {
      if (Date.now() > deadline) throw new Error(`db-2's restore was never seen under way\n${await env.containerLog(NS, "db-2", "provision")}`);
      const p = await getPod("db-2").catch(() => undefined);
      const log = p ? await env.containerLog(NS, "db-2", "provision") : "";
      if (p && log.includes("restoring the planned backup")) {
        await env.cp.api.delete(podPath("db-2"), { gracePeriodSeconds: "0" });
        interrupted = { uid: p.metadata.uid, log };
      } else await new Promise((r) => setTimeout(r, 100));
    }
    expect(interrupted.log, "the restore had finished before the pod was deleted: make the backup larger").not.toContain("provisioned /var/lib/mysql");
    await env.waitFor("a new db-2 to be provisioned and Ready", async () => {
      const p = await getPod("db-2").catch(() => undefined);
      if (!p || p.metadata.uid === interrupted.uid) return undefined;
      const marked = Boolean((await pvcMarker("db-2").catch(() => ({})) as Record<string, string>)["replicator.dev/provisioned"]);
      return marked && (await isReady("db-2")) ? true : undefined;
    }, 300_000);
    // Not "skipped: DatadirNotEmpty": the half-restored directory was wiped and restored again.
    expect(await initResult("db-2")).toMatchObject({ ok: true, action: "restored", name: b.backupName });
    expect((await pvcMarker("db-2"))["replicator.dev/provisioned"]).toBe(b.backupName);
    const [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>(NS, "db-2", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2004, 'after the interrupted restore')");
    await env.waitFor("db-2 to catch up", async () => {
      const [r] = await env.sql<{ n: number | string }>(NS, "db-2", "SELECT COUNT(*) AS n FROM app.t WHERE id = 2004");
      return Number(r?.n) === 1 ? true : undefined;
    });
    expect(await checksums("db-2", ", app.big")).toEqual(await checksums("db-0", ", app.big"));
    expect(await foreignDataFiles(NS, "db-2")).toEqual(realCluster ? [] : undefined);
  }, 600_000);
});
