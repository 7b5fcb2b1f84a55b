// The volumesnapshot method, end to end on the test bench: the CSI snapshot
// CRDs installed in the real API server, and the test playing the CSI driver
// (test/harness/kube/csi.ts: it freezes the pod's processes, copies the PVC's
// directory, and writes the VolumeSnapshot's status; it provisions PVCs whose
// dataSource is such a snapshot). The operator takes the backup itself under
// FLUSH TABLES WITH READ LOCK with a watchdog, stores a manifest like every
// other backup, keeps the next slave's volume pre-created from the newest
// snapshot, and configures the clone as a slave once it runs.
// On a real cluster (E2E_KUBECONFIG) the cluster's own CSI driver and
// snapshot controller do that part (on hack/node's node: our hostpath driver,
// which copies the volume inside CreateSnapshot, so the cut is as long as the
// copy), and the class "absent-driver" is the only stand-in.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import mysql from "mysql2/promise";
import { runCli } from "../harness/cli.js";
import { foreignDataFiles, mariadbStatefulSet, realCluster, seedAppMaster, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";
import { installSnapshotCrds, startTestCsiDriver, type TestCsiDriver } from "../harness/kube/csi.js";

const NS = "snap";
const REPO = "s3://snap/k8s";
let env: E2eEnv;
let csi: TestCsiDriver | undefined;

interface BackupStatus {
  phase?: string;
  backupName?: string;
  method?: string;
  position?: string;
  message?: string;
  jobName?: string;
  replication?: { role?: string; gtid?: string; file?: string; position?: number };
}
interface VolumeSnapshot {
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec: { source: { persistentVolumeClaimName?: string }; volumeSnapshotClassName?: string };
  status?: { readyToUse?: boolean; creationTime?: string; boundVolumeSnapshotContentName?: string };
}
interface Pvc {
  metadata: { uid: string; annotations?: Record<string, string> };
  spec: { dataSource?: { kind: string; name: string } };
  status?: { phase?: string };
}
interface PodObj {
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] };
}

const cr = (plural: string, name = ""): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;
const vsPath = (name = ""): string => `/apis/snapshot.storage.k8s.io/v1/namespaces/${NS}/volumesnapshots${name ? `/${name}` : ""}`;
const pvcPath = (name: string): string => `/api/v1/namespaces/${NS}/persistentvolumeclaims/${name}`;
const getPod = (name: string): Promise<PodObj> => env.cp.api.get<PodObj>(`/api/v1/namespaces/${NS}/pods/${name}`);
const isReady = async (name: string): Promise<boolean> => (await getPod(name)).status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
const gone = async (path: string): Promise<boolean> =>
  env.cp.api.get(path).then(
    () => false,
    (err: unknown) => (err as { status?: number }).status === 404,
  );
const gtid = async (pod: string): Promise<string> => (await env.sql<{ pos: string }>(NS, pod, "SELECT @@gtid_binlog_pos AS pos"))[0]?.pos ?? "";
const seqOf = (pos: string | undefined): number => Number(/^0-\d+-(\d+)/.exec(pos ?? "")?.[1] ?? -1);
const count = async (pod: string, where = ""): Promise<number> => Number((await env.sql<{ n: number | string }>(NS, pod, `SELECT COUNT(*) AS n FROM app.t ${where}`))[0]?.n);
const listed = async (): Promise<{ name: string; method: string; replication?: { gtid?: string } }[]> => {
  const r = await runCli(["list", "--repository", REPO, "--cluster", "db", "--json"], env.s3.env);
  expect(r.exitCode, r.stderr).toBe(0);
  return r.json!.backups as { name: string; method: string; replication?: { gtid?: string } }[];
};

async function checksums(pod: string): Promise<Record<string, string>> {
  const rows = await env.sql<{ Table: string; Checksum: string | number }>(NS, pod, "CHECKSUM TABLE app.t, app.notes, app.blobs");
  return Object.fromEntries(rows.map((r) => [r.Table, String(r.Checksum)]));
}

async function snapshotBackup(name: string, options = ""): Promise<BackupStatus> {
  await env.cp.applyYaml(
    `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: ${name}, namespace: ${NS} }
spec:
  method: volumesnapshot
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
${options ? `  options: ${options}\n` : ""}`,
    { namespace: NS },
  );
  return env.waitFor(`backup ${name} to finish`, async () => {
    const o = await env.cp.api.get<{ status?: BackupStatus }>(cr("replicatorbackups", name));
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  }, 120_000);
}

/**
 * What an admin does for snapshots of a driver that does not exist: remove the
 * finalizers of their contents and of the VolumeSnapshots (otherwise they, and
 * the namespace, stay Terminating for ever).
 */
async function releaseAbsentDriverSnapshots(): Promise<void> {
  const contents = await env.cp.api.get<{ items: { metadata: { name: string }; spec: { driver: string } }[] }>("/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents");
  for (const c of contents.items.filter((x) => x.spec.driver === "absent.csi.example.com")) {
    await env.cp.api.patch(`/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/${c.metadata.name}`, { metadata: { finalizers: null } }, "merge").catch(() => undefined);
  }
  const snaps = await env.cp.api.get<{ items: VolumeSnapshot[] }>(vsPath());
  for (const v of snaps.items.filter((x) => x.spec.volumeSnapshotClassName === "absent-driver")) {
    await env.cp.api.patch(vsPath(v.metadata.name), { metadata: { finalizers: null } }, "merge").catch(() => undefined);
  }
  await env.waitFor("the absent driver's VolumeSnapshots to go", async () => {
    const l = await env.cp.api.get<{ items: VolumeSnapshot[] }>(vsPath());
    return l.items.some((x) => x.spec.volumeSnapshotClassName === "absent-driver") ? undefined : true;
  }, 30_000);
}

/** Inserts into app.w every 30 ms from one connection, recording when each started and ended. */
function startWriter(pod: string): { stop(): Promise<{ start: number; end: number }[]> } {
  const done: { start: number; end: number }[] = [];
  const state = { stopped: false };
  const run = (async () => {
    const c = await mysql.createConnection({ host: await env.podAddress(NS, pod), port: 3306, user: "root", password: "" });
    try {
      while (!state.stopped) {
        const start = Date.now();
        await c.query("INSERT INTO app.w (at) VALUES (NOW(6))");
        done.push({ start, end: Date.now() });
        await new Promise((r) => setTimeout(r, 30));
      }
    } finally {
      await c.end();
    }
  })();
  return {
    stop: async () => {
      state.stopped = true;
      await run;
      return done;
    },
  };
}

beforeAll(async () => {
  env = await startE2eEnv();
  if (!realCluster) {
    await installSnapshotCrds(env.cp);
    csi = await startTestCsiDriver({ api: env.cp.api, kubelet: env.kubelet!, readyDelayMs: 2_500 });
  }
  // A class whose driver does not run here: its snapshots are never cut.
  await env.cp.applyYaml(`apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotClass
metadata: { name: absent-driver }
driver: absent.csi.example.com
deletionPolicy: Delete
`);
  await env.setUpNamespace(NS, "snap", { prefix: "k8s", extraSpec: "  retention: { keep: 2 }" });
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1, { provision: true }), { namespace: NS });
  await env.waitFor("the master to be Ready", async () => ((await isReady("db-0")) ? true : undefined), 180_000);
  await seedAppMaster(env, NS, "db-0", ["CREATE TABLE app.w (id INT AUTO_INCREMENT PRIMARY KEY, at DATETIME(6)) ENGINE=InnoDB"]);
}, 600_000);

afterAll(async () => {
  await csi?.stop();
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("volumesnapshot backups", () => {
  const names: string[] = [];

  it("a backup while the master takes writes: they wait only until the snapshot is cut, and the position is where the master was", async () => {
    const before = await gtid("db-0");
    const writer = startWriter("db-0");
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    const s = await snapshotBackup("snap-1");
    const took = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 300));
    const writes = await writer.stop();
    const after = await gtid("db-0");
    expect(s.phase, s.message).toBe("Completed");
    const name = s.backupName ?? "";
    names.push(name);
    expect(name).toMatch(/^\d{8}T\d{6}Z-volumesnapshot-db-0$/);
    expect(s.method).toBe("volumesnapshot");
    expect(s.jobName).toBeUndefined();
    // Between the master's position before and after, in its own binlog coordinates.
    expect(s.replication?.role).toBe("master");
    expect(seqOf(s.position)).toBeGreaterThan(seqOf(before));
    expect(seqOf(s.position)).toBeLessThan(seqOf(after));
    expect(s.replication?.file).toMatch(/^mysql-bin\.\d+$/);

    // The VolumeSnapshot: named after the backup, of the master's data PVC, ready.
    const vs = await env.cp.api.get<VolumeSnapshot>(vsPath(name.toLowerCase()));
    expect(vs.spec.source.persistentVolumeClaimName).toBe("data-db-0");
    expect(vs.status?.readyToUse).toBe(true);
    expect(vs.metadata.annotations?.["replicator.dev/backup"]).toBe(name);
    // No Job: the operator ran it.
    const jobs = await env.cp.api.get<{ items: unknown[] }>(`/apis/batch/v1/namespaces/${NS}/jobs`);
    expect(jobs.items).toHaveLength(0);

    const longest = Math.max(...writes.map((w) => w.end - w.start));
    const events = await env.cp.api.get<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    const mine = events.items.filter((e) => e.involvedObject.name === "snap-1");
    expect(mine.map((e) => e.reason)).toEqual(expect.arrayContaining(["BackupStarted", "SnapshotTaken", "BackupSucceeded"]));
    const blocked = /writes were blocked for (\d+\.\d)s/.exec(mine.find((e) => e.reason === "SnapshotTaken")?.message ?? "");
    expect(blocked).not.toBeNull();
    if (csi) {
      // Writes blocked only while the lock was held: every write that started before the
      // snapshot was cut had finished before it became readyToUse (the lock went at the cut).
      const cut = csi.cut.get(`${NS}/${name.toLowerCase()}`);
      expect(cut?.readyAt).toBeDefined();
      const [cutAt, readyAt] = [cut?.cutAt ?? 0, cut?.readyAt ?? 0];
      const beforeCut = writes.filter((w) => w.start < cutAt && w.end > t0);
      expect(beforeCut.filter((w) => w.end - w.start > 200).length).toBeGreaterThan(0); // a write did wait for the lock...
      for (const w of beforeCut) expect(w.end).toBeLessThan(readyAt); // ...but not until readyToUse,
      expect(writes.filter((w) => w.start > cutAt && w.start < readyAt).length).toBeGreaterThan(3); // and writes went on meanwhile
      process.stdout.write(`snapshot backup: ${(took / 1000).toFixed(1)}s, longest blocked write ${longest} ms (source frozen ${cut?.frozenMs ?? 0} ms for the copy)\n`);
      // Beyond the storage's own cut (here: the frozen copy), the lock adds well under 2 s.
      expect(longest - (cut?.frozenMs ?? 0)).toBeLessThan(2_000);
    } else {
      // A real driver: the lock is held until the snapshot is cut (creationTime set). No write
      // waited longer than the block the operator measured and reported, plus a write's own time.
      process.stdout.write(`snapshot backup: ${(took / 1000).toFixed(1)}s, longest blocked write ${longest} ms, writes blocked ${blocked?.[1] ?? "?"} s by the operator's account\n`);
      expect(writes.filter((w) => w.end - w.start > 200).length).toBeGreaterThan(0); // a write did wait for the lock
      expect(longest).toBeLessThan(Number(blocked?.[1] ?? 0) * 1000 + 1_500);
      const slowest = writes.reduce((a, b) => (b.end - b.start > a.end - a.start ? b : a));
      const afterLock = writes.filter((w) => w.start >= slowest.end);
      expect(afterLock.length).toBeGreaterThan(3); // and writes went on after it, at once
      for (const w of afterLock) expect(w.end - w.start).toBeLessThan(1_000);
    }
    // A write right after completes at once.
    const w0 = Date.now();
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (3001, 'right after the backup')");
    expect(Date.now() - w0).toBeLessThan(1_000);

    // Listed like every other backup, with its position.
    const l = await listed();
    expect(l.map((b) => [b.name, b.method])).toContainEqual([name, "volumesnapshot"]);
    expect(l.find((b) => b.name === name)?.replication?.gtid).toBe(s.position);
  });

  it("the watchdog releases the lock when the snapshot is never cut, and the backup fails saying why", async () => {
    const t0 = Date.now();
    const result = snapshotBackup("stuck", "{ volumeSnapshotClassName: absent-driver, lockTimeoutSeconds: \"4\" }");
    // While the lock is held (the VolumeSnapshot exists, never cut), a write waits...
    const vsName = await env.waitFor("the stuck VolumeSnapshot", async () => {
      const l = await env.cp.api.get<{ items: VolumeSnapshot[] }>(vsPath());
      return l.items.find((v) => v.spec.volumeSnapshotClassName === "absent-driver")?.metadata.name;
    }, 30_000);
    const w0 = Date.now();
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (3002, 'waited for the watchdog')");
    const waited = Date.now() - w0;
    // ...until the watchdog kills the locking session, about 4 s after the lock was taken.
    expect(waited).toBeGreaterThan(1_000);
    expect(Date.now() - t0).toBeLessThan(15_000);
    const s = await result;
    expect(s.phase).toBe("Failed");
    expect(s.message).toContain("the watchdog released FLUSH TABLES WITH READ LOCK on db-0 after 4s");
    expect(s.message).toContain(`VolumeSnapshot ${vsName} of data-db-0 was not cut (no status.creationTime)`);
    expect(s.message).toContain("VolumeSnapshotClass absent-driver");
    expect(s.message).toContain("stay Terminating (an admin can remove their finalizers)");
    if (csi) expect(csi.ignored.has(`${NS}/${vsName}`)).toBe(true);
    // Nothing is left behind: no VolumeSnapshot, nothing stored; writes go through at once.
    // On a real cluster the snapshot controller keeps it Terminating: its content waits for a
    // driver that does not exist, until an admin removes the finalizers (done below).
    await env.waitFor("the stuck VolumeSnapshot to be deleted", async () => {
      const vs = await env.cp.api.get<VolumeSnapshot>(vsPath(vsName)).catch(() => undefined);
      return !vs || (realCluster && vs.metadata.deletionTimestamp) ? true : undefined;
    }, 30_000);
    if (realCluster) await releaseAbsentDriverSnapshots();
    expect((await listed()).map((b) => b.name)).not.toContain(s.backupName);
    const w1 = Date.now();
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (3003, 'after the watchdog')");
    expect(Date.now() - w1).toBeLessThan(1_000);
    const [p] = await env.sql<{ n: number | string }>(NS, "db-0", "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE STATE LIKE '%lock%'");
    expect(Number(p?.n)).toBe(0);
  });

  it("a backup of a quiet master records exactly the master's position", async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const pos = await gtid("db-0");
    const s = await snapshotBackup("snap-2");
    expect(s.phase, s.message).toBe("Completed");
    names.push(s.backupName ?? "");
    expect(s.position).toBe(pos);
    expect(await gtid("db-0")).toBe(pos);
  });

  it("a new slave starts on the spare volume cloned from a snapshot: replicates from its position, marked before Ready", async () => {
    // The operator keeps the next ordinal's claim pre-created from the newest usable snapshot.
    const spare = await env.waitFor("the spare volume data-db-1", async () => {
      const p = await env.cp.api.get<Pvc>(pvcPath("data-db-1")).catch(() => undefined);
      // A real StorageClass binds when the pod is scheduled (WaitForFirstConsumer).
      return p?.status?.phase === "Bound" || (realCluster && p?.spec.dataSource) ? p : undefined;
    }, 60_000);
    const seededFrom = spare.metadata.annotations?.["replicator.dev/seeded-from"] ?? "";
    expect(names).toContain(seededFrom);
    expect(spare.spec.dataSource).toEqual({ apiGroup: "snapshot.storage.k8s.io", kind: "VolumeSnapshot", name: seededFrom.toLowerCase() });
    expect(spare.metadata.annotations?.["replicator.dev/provisioned"]).toBeUndefined();

    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2001, 'after the backups'); UPDATE app.notes SET note = 'changed' WHERE id = 3");
    const t0 = Date.now();
    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: 2 } }, "merge");
    let readyBeforeMarked = false;
    await env.waitFor("db-1 to be provisioned and Ready", async () => {
      const ready = await isReady("db-1").catch(() => false);
      const p = await env.cp.api.get<Pvc>(pvcPath("data-db-1")).catch(() => undefined);
      const marked = Boolean(p?.metadata.annotations?.["replicator.dev/provisioned"]);
      if (ready && !marked) readyBeforeMarked = true;
      return ready && marked ? true : undefined;
    }, 180_000);
    process.stdout.write(`snapshot provisioning: scale → Ready in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`);
    expect(readyBeforeMarked).toBe(false);
    const marked = await env.cp.api.get<Pvc>(pvcPath("data-db-1"));
    expect(marked.metadata.uid).toBe(spare.metadata.uid); // the very volume the operator pre-created
    expect(marked.metadata.annotations?.["replicator.dev/provisioned"]).toBe(seededFrom);
    const gate = (await getPod("db-1")).status?.conditions?.find((c) => c.type === "replicator.dev/provisioned");
    expect(gate).toMatchObject({ status: "True", reason: "Provisioned" });
    expect(gate?.message).toContain(`cloned from snapshot backup ${seededFrom}`);
    // Neither a restore Job nor a ReplicatorRestore: the data came with the volume.
    expect((await env.cp.api.get<{ items: unknown[] }>(cr("replicatorrestores"))).items).toHaveLength(0);
    const [st] = await env.sql<{ Slave_IO_Running: string; Slave_SQL_Running: string; Using_Gtid: string; Last_SQL_Error: string }>(NS, "db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running, st?.Using_Gtid, st?.Last_SQL_Error]).toEqual(["Yes", "Yes", "Slave_Pos", ""]);
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2002, 'after provisioning')");
    await env.waitFor("db-1 to catch up", async () => ((await count("db-1", "WHERE id = 2002")) === 1 ? true : undefined));
    expect(await checksums("db-1")).toEqual(await checksums("db-0"));
    // On a real node: the clone keeps the owners of the master's files (999).
    expect(await foreignDataFiles(NS, "db-1")).toEqual(realCluster ? [] : undefined);
    const [w0] = await env.sql<{ n: number | string }>(NS, "db-0", "SELECT COUNT(*) AS n FROM app.w");
    const [w1] = await env.sql<{ n: number | string }>(NS, "db-1", "SELECT COUNT(*) AS n FROM app.w");
    expect(Number(w1?.n)).toBe(Number(w0?.n));
    // The next scale-up has its spare too, from the newest snapshot.
    const next = await env.waitFor("the spare volume data-db-2", async () => env.cp.api.get<Pvc>(pvcPath("data-db-2")).catch(() => undefined), 60_000);
    expect(next.metadata.annotations?.["replicator.dev/seeded-from"]).toBe(names[names.length - 1]);
  });

  it("retention keeps 2: a third snapshot backup deletes the oldest, and its VolumeSnapshot with it", async () => {
    await new Promise((r) => setTimeout(r, 1100));
    const s = await snapshotBackup("snap-3");
    expect(s.phase, s.message).toBe("Completed");
    const oldest = names[0] ?? "";
    names.push(s.backupName ?? "");
    await env.waitFor("the oldest VolumeSnapshot to be deleted", async () => ((await gone(vsPath(oldest.toLowerCase()))) ? true : undefined), 60_000);
    expect((await listed()).map((b) => b.name)).toEqual(names.slice(1));
    for (const n of names.slice(1)) expect((await env.cp.api.get<VolumeSnapshot>(vsPath(n.toLowerCase()))).status?.readyToUse).toBe(true);
    await env.waitFor("the oldest backup's resource to be deleted", async () => ((await gone(cr("replicatorbackups", "snap-1"))) ? true : undefined), 30_000);
  });

  it("a ReplicatorRestore with spec.volume creates the PVC from the snapshot; the server started on it replicates", async () => {
    await env.cp.applyYaml(
      `apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: copy, namespace: ${NS} }
spec:
  cluster: db
  volume: { claimName: data-copy-0 }
  target: { statefulSet: copy, credentialsSecret: { name: db-credentials } }
  replicateFrom: { statefulSet: db, credentialsSecret: { name: db-replication } }
`,
      { namespace: NS },
    );
    const pvc = await env.waitFor("the restored volume", async () => env.cp.api.get<Pvc>(pvcPath("data-copy-0")).catch(() => undefined), 30_000);
    const newest = names[names.length - 1] ?? "";
    expect(pvc.spec.dataSource).toMatchObject({ kind: "VolumeSnapshot", name: newest.toLowerCase() });
    const waiting = await env.waitFor("the restore to wait for its server", async () => {
      const o = await env.cp.api.get<{ status?: { phase?: string; backupName?: string; message?: string } }>(cr("replicatorrestores", "copy"));
      return o.status?.phase === "Running" ? o.status : undefined;
    }, 30_000);
    expect(waiting).toMatchObject({ phase: "Running", backupName: newest });
    expect(waiting.message).toContain("waiting for the target server to run on it");
    // A server on that volume (its own server id: ordinal 0 would clash with the master's).
    await env.cp.applyYaml(mariadbStatefulSet(NS, "copy", 1, { args: ["--server-id=100"] }), { namespace: NS });
    const s = await env.waitFor("the restore to finish", async () => {
      const o = await env.cp.api.get<{ status?: { phase?: string; message?: string; replicating?: boolean; targetPod?: string } }>(cr("replicatorrestores", "copy"));
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    }, 180_000);
    expect(s.phase, s.message).toBe("Completed");
    expect(s).toMatchObject({ replicating: true, targetPod: "copy-0" });
    await env.sql(NS, "db-0", "INSERT INTO app.t VALUES (2003, 'after the restore')");
    await env.waitFor("copy-0 to replicate", async () => ((await count("copy-0", "WHERE id = 2003")) === 1 ? true : undefined));
    expect(await checksums("copy-0")).toEqual(await checksums("db-0"));
    expect(await foreignDataFiles(NS, "copy-0")).toEqual(realCluster ? [] : undefined);
  });
});
