// A TEST CSI DRIVER with its snapshot controller and provisioner, for the
// volumesnapshot method on the test bench (there is no storage system here):
//
//  - VolumeSnapshots whose class (spec.volumeSnapshotClassName, else the
//    default class) names this driver are cut: every process of the pods
//    that mount the source PVC is frozen (SIGSTOP), the PVC's directory is
//    copied, and they resume (SIGCONT), so the copy is one point in time, as
//    a block-level snapshot is. Then the driver does what the snapshot
//    controller does with a CSI CreateSnapshot reply: a VolumeSnapshotContent,
//    and the VolumeSnapshot's status (boundVolumeSnapshotContentName,
//    creationTime, restoreSize, readyToUse: false), and readyToUse: true
//    `readyDelayMs` later (a driver still "uploading" after the cut).
//    Snapshots of another driver's class are left alone (never cut).
//  - PVCs whose dataSource is such a snapshot are provisioned (immediate
//    binding): the snapshot's copy becomes the PVC's directory, and a PV
//    pre-bound to the claim lets the real PV controller bind them. Paths the
//    server wrote into its binlog/relay-log index files are rewritten to the
//    new directory (on a real node every clone is mounted at the same path).
//  - The test kubelet does not start a pod until its snapshot-sourced volumes
//    are provisioned (what a scheduler and kubelet wait for).
//  - A deleted VolumeSnapshot's copy and content are deleted (deletionPolicy Delete).
import { existsSync } from "node:fs";
import { cp, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { execa } from "execa";
import type { ControlPlane } from "./controlplane.js";
import type { Kubelet } from "./kubelet.js";
import type { Pod } from "./pod-types.js";
import { isNotFound, type KubeHttp } from "./rest.js";

const repoRoot = path.resolve(import.meta.dirname, "../../..");
export const TEST_CSI_DRIVER = "test.csi.replicator.dev";
export const SNAPSHOT_CRDS_DIR = path.join(repoRoot, ".tools/snapshot-crds");
const SNAP_API = "/apis/snapshot.storage.k8s.io/v1";
const CRD_FILES = ["volumesnapshotclasses", "volumesnapshotcontents", "volumesnapshots"].map((p) => `snapshot.storage.k8s.io_${p}.yaml`);
const DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class";

/** Install the CSI snapshot CRDs (copied from the Go module cache by hack/snapshot-crds.sh, run here if needed). */
export async function installSnapshotCrds(cp: ControlPlane): Promise<void> {
  if (!CRD_FILES.every((f) => existsSync(path.join(SNAPSHOT_CRDS_DIR, f)))) {
    await execa("bash", [path.join(repoRoot, "hack/snapshot-crds.sh")], { env: { SNAPSHOT_CRDS_DIR } });
  }
  for (const f of CRD_FILES) await cp.applyYaml(path.join(SNAPSHOT_CRDS_DIR, f));
}

interface Meta {
  name: string;
  namespace: string;
  uid: string;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
}
interface VolumeSnapshot {
  metadata: Meta;
  spec: { source: { persistentVolumeClaimName?: string }; volumeSnapshotClassName?: string };
  status?: { creationTime?: string; readyToUse?: boolean };
}
interface SnapshotClass {
  metadata: { name: string; annotations?: Record<string, string> };
  driver: string;
}
interface Pvc {
  metadata: Meta;
  spec: {
    accessModes?: string[];
    storageClassName?: string;
    volumeMode?: string;
    resources?: { requests?: Record<string, string> };
    dataSource?: { apiGroup?: string; kind: string; name: string };
    dataSourceRef?: { apiGroup?: string; kind: string; name: string };
  };
}

export interface CutSnapshot {
  namespace: string;
  name: string;
  /** The source PVC's directory when it was copied. */
  sourceDir: string;
  cutAt: number;
  readyAt?: number;
  /** How long the source's processes were frozen for the copy. */
  frozenMs: number;
  bytes: number;
}

export interface TestCsiDriver {
  /** Snapshots this driver cut, by `namespace/name`. */
  readonly cut: Map<string, CutSnapshot>;
  /** Snapshots left alone (another driver's class), by `namespace/name`. */
  readonly ignored: Set<string>;
  /** PVCs provisioned from a snapshot, by `namespace/name` → the snapshot's name. */
  readonly provisioned: Map<string, string>;
  stop(): Promise<void>;
}

const snapshotSource = (pvc: Pvc): string | undefined => {
  const ds = pvc.spec.dataSourceRef ?? pvc.spec.dataSource;
  return ds?.kind === "VolumeSnapshot" ? ds.name : undefined;
};

export async function startTestCsiDriver(opts: {
  api: KubeHttp;
  kubelet: Kubelet;
  /** Where snapshot copies live (default: <kubelet stateDir>/csi-snapshots). */
  stateDir?: string;
  /** Between the cut and readyToUse (default 1.5 s). */
  readyDelayMs?: number;
  pollMs?: number;
  /** Create a default VolumeSnapshotClass "test-csi" for this driver (default true). */
  defaultClass?: boolean;
}): Promise<TestCsiDriver> {
  const { api, kubelet } = opts;
  const dir = opts.stateDir ?? path.join(kubelet.stateDir, "csi-snapshots");
  const readyDelayMs = opts.readyDelayMs ?? 1_500;
  const pollMs = opts.pollMs ?? 200;
  await mkdir(dir, { recursive: true });
  if (opts.defaultClass !== false) {
    await api
      .post(`${SNAP_API}/volumesnapshotclasses`, {
        apiVersion: "snapshot.storage.k8s.io/v1",
        kind: "VolumeSnapshotClass",
        metadata: { name: "test-csi", annotations: { [DEFAULT_CLASS_ANNOTATION]: "true" } },
        driver: TEST_CSI_DRIVER,
        deletionPolicy: "Delete",
      })
      .catch((err: unknown) => {
        if ((err as { status?: number }).status !== 409) throw err;
      });
  }
  const cut = new Map<string, CutSnapshot>();
  const uids = new Map<string, string>(); // ns/name → uid of what was cut
  const ignored = new Set<string>();
  const provisioned = new Map<string, string>();
  const populatedUids = new Set<string>();
  const log = (line: string): void => {
    void writeFile(path.join(dir, "driver.log"), `${new Date().toISOString()} ${line}\n`, { flag: "a" }).catch(() => undefined);
  };
  const snapDir = (uid: string): string => path.join(dir, uid);
  const state = { stopped: false };

  async function cutSnapshot(vs: VolumeSnapshot): Promise<void> {
    const { namespace: ns, name, uid } = vs.metadata;
    const claim = vs.spec.source.persistentVolumeClaimName;
    if (!claim) return;
    const source = kubelet.pvcDir(ns, claim);
    const pods = (await api.get<{ items: Pod[] }>(`/api/v1/namespaces/${ns}/pods`)).items.filter(
      (p) => !p.metadata.deletionTimestamp && (p.spec.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === claim),
    );
    const t0 = Date.now();
    for (const p of pods) kubelet.signalContainer(ns, p.metadata.name, "SIGSTOP");
    try {
      // Let I/O already submitted (InnoDB's async writes) land before the copy.
      await delay(100);
      await rm(snapDir(uid), { recursive: true, force: true });
      if (existsSync(source)) await cp(source, snapDir(uid), { recursive: true });
      else await mkdir(snapDir(uid), { recursive: true });
    } finally {
      for (const p of pods) kubelet.signalContainer(ns, p.metadata.name, "SIGCONT");
    }
    const frozenMs = Date.now() - t0;
    const bytes = await duBytes(snapDir(uid));
    const content = `snapcontent-${uid}`;
    await api
      .post(`${SNAP_API}/volumesnapshotcontents`, {
        apiVersion: "snapshot.storage.k8s.io/v1",
        kind: "VolumeSnapshotContent",
        metadata: { name: content },
        spec: {
          driver: TEST_CSI_DRIVER,
          deletionPolicy: "Delete",
          source: { volumeHandle: `${ns}/${claim}` },
          volumeSnapshotRef: { apiVersion: "snapshot.storage.k8s.io/v1", kind: "VolumeSnapshot", name, namespace: ns, uid },
          ...(vs.spec.volumeSnapshotClassName ? { volumeSnapshotClassName: vs.spec.volumeSnapshotClassName } : {}),
        },
      })
      .catch((err: unknown) => {
        if ((err as { status?: number }).status !== 409) throw err;
      });
    const creationTime = new Date(t0).toISOString().replace(/\.\d{3}Z$/, "Z");
    await api.patch(
      `${SNAP_API}/namespaces/${ns}/volumesnapshots/${name}/status`,
      { status: { boundVolumeSnapshotContentName: content, creationTime, readyToUse: false, restoreSize: String(bytes) } },
      "merge",
    );
    cut.set(`${ns}/${name}`, { namespace: ns, name, sourceDir: source, cutAt: Date.now(), frozenMs, bytes });
    uids.set(`${ns}/${name}`, uid);
    log(`cut ${ns}/${name} from ${claim} (${bytes} bytes, frozen ${frozenMs} ms)`);
  }

  async function provision(pvc: Pvc, snap: CutSnapshot, uid: string): Promise<void> {
    const { namespace: ns, name } = pvc.metadata;
    const target = kubelet.pvcDir(ns, name);
    await rm(target, { recursive: true, force: true });
    await mkdir(path.dirname(target), { recursive: true });
    await cp(snapDir(uid), target, { recursive: true });
    await rewritePaths(target, snap.sourceDir, target);
    await api
      .post("/api/v1/persistentvolumes", {
        apiVersion: "v1",
        kind: "PersistentVolume",
        metadata: { name: `pvc-${pvc.metadata.uid}`, annotations: { "pv.kubernetes.io/provisioned-by": TEST_CSI_DRIVER } },
        spec: {
          capacity: { storage: pvc.spec.resources?.requests?.storage ?? "1Gi" },
          accessModes: pvc.spec.accessModes ?? ["ReadWriteOnce"],
          persistentVolumeReclaimPolicy: "Delete",
          storageClassName: pvc.spec.storageClassName ?? "",
          volumeMode: pvc.spec.volumeMode ?? "Filesystem",
          claimRef: { apiVersion: "v1", kind: "PersistentVolumeClaim", namespace: ns, name, uid: pvc.metadata.uid },
          csi: { driver: TEST_CSI_DRIVER, volumeHandle: `${ns}/${name}/${pvc.metadata.uid}` },
        },
      })
      .catch((err: unknown) => {
        if ((err as { status?: number }).status !== 409) throw err;
      });
    populatedUids.add(pvc.metadata.uid);
    provisioned.set(`${ns}/${name}`, snap.name);
    log(`provisioned ${ns}/${name} from ${snap.namespace}/${snap.name}`);
  }

  async function tick(): Promise<void> {
    const classes = (await api.get<{ items: SnapshotClass[] }>(`${SNAP_API}/volumesnapshotclasses`)).items;
    const snapshots = (await api.get<{ items: VolumeSnapshot[] }>(`${SNAP_API}/volumesnapshots`)).items;
    for (const vs of snapshots) {
      const key = `${vs.metadata.namespace}/${vs.metadata.name}`;
      if (vs.metadata.deletionTimestamp) continue;
      const done = cut.get(key);
      if (done && uids.get(key) === vs.metadata.uid) {
        if (done.readyAt === undefined && Date.now() - done.cutAt >= readyDelayMs) {
          await api.patch(`${SNAP_API}/namespaces/${vs.metadata.namespace}/volumesnapshots/${vs.metadata.name}/status`, { status: { readyToUse: true } }, "merge");
          done.readyAt = Date.now();
          log(`ready ${key}`);
        }
        continue;
      }
      if (ignored.has(key) || vs.status?.creationTime) continue;
      const cls = vs.spec.volumeSnapshotClassName
        ? classes.find((c) => c.metadata.name === vs.spec.volumeSnapshotClassName)
        : classes.find((c) => c.metadata.annotations?.[DEFAULT_CLASS_ANNOTATION] === "true");
      if (cls?.driver !== TEST_CSI_DRIVER) {
        ignored.add(key);
        log(`ignored ${key}: class ${cls?.metadata.name ?? "(none)"} is not this driver's`);
        continue;
      }
      await cutSnapshot(vs);
    }
    // Deleted snapshots: their copy and content go too.
    for (const [key, snap] of [...cut]) {
      const uid = uids.get(key) ?? "";
      if (snapshots.some((v) => v.metadata.uid === uid)) continue;
      cut.delete(key);
      uids.delete(key);
      await rm(snapDir(uid), { recursive: true, force: true });
      await api.delete(`${SNAP_API}/volumesnapshotcontents/snapcontent-${uid}`).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      log(`deleted ${snap.namespace}/${snap.name}`);
    }
    // Volumes from snapshots.
    const pvcs = (await api.get<{ items: Pvc[] }>("/api/v1/persistentvolumeclaims")).items;
    for (const pvc of pvcs) {
      const from = snapshotSource(pvc);
      if (!from || pvc.metadata.deletionTimestamp || populatedUids.has(pvc.metadata.uid)) continue;
      const key = `${pvc.metadata.namespace}/${from}`;
      const snap = cut.get(key);
      const uid = uids.get(key);
      if (!snap?.readyAt || !uid) continue; // not ready (yet), or not this driver's
      await provision(pvc, snap, uid);
    }
  }

  // The kubelet waits for snapshot-sourced volumes.
  kubelet.addPodStartHook(async (pod: Pod) => {
    if (state.stopped) return;
    for (const v of pod.spec.volumes ?? []) {
      const claim = v.persistentVolumeClaim?.claimName;
      if (!claim) continue;
      const pvc = await api.get<Pvc>(`/api/v1/namespaces/${pod.metadata.namespace}/persistentvolumeclaims/${claim}`).catch(() => undefined);
      if (!pvc || !snapshotSource(pvc)) continue;
      if (!populatedUids.has(pvc.metadata.uid)) throw new Error(`volume ${claim} is being provisioned from VolumeSnapshot ${snapshotSource(pvc) ?? ""}`);
    }
  });

  const loop = (async () => {
    while (!state.stopped) {
      try {
        await tick();
      } catch (err) {
        log(`tick: ${err instanceof Error ? err.message : String(err)}`);
      }
      await delay(pollMs);
    }
  })();

  return {
    cut,
    ignored,
    provisioned,
    stop: async () => {
      state.stopped = true;
      await loop;
    },
  };
}

async function duBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

/** Rewrite `from` to `to` in the server's small files that name other files (binlog/relay-log indexes, replication info). */
async function rewritePaths(root: string, from: string, to: string): Promise<void> {
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (!e.isFile() || !/\.(index|info)$/.test(e.name)) continue;
    const file = path.join(e.parentPath, e.name);
    const text = await readFile(file, "utf8");
    if (text.includes(from)) await writeFile(file, text.split(from).join(to));
  }
}
