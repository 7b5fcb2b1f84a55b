// CSI VolumeSnapshots (snapshot.storage.k8s.io/v1) as the `volumesnapshot`
// backup method uses them, pure: names, the objects the operator creates (a
// VolumeSnapshot of a data PVC, a PVC whose dataSource is one), what a
// snapshot's status says, and the small record stored in the repository.
import { createHash } from "node:crypto";
import { z } from "zod";
import { replicationPositionSchema, type ReplicationPosition } from "../../../storage/catalog.js";

export const SNAPSHOT_METHOD = "volumesnapshot";
export const SNAPSHOT_GROUP = "snapshot.storage.k8s.io";
export const SNAPSHOT_API_VERSION = `${SNAPSHOT_GROUP}/v1`;
/** The repository object of a snapshot backup: which VolumeSnapshot holds the data. */
export const SNAPSHOT_OBJECT = "snapshot.json";

/** On a PVC the operator created from a snapshot backup: the backup's name. */
export const SEEDED_FROM_ANNOTATION = "replicator.dev/seeded-from";
/** On that PVC: the backup's replication position (JSON), so seeding needs no storage read. */
export const SEED_POSITION_ANNOTATION = "replicator.dev/seed-position";
/** On a VolumeSnapshot: the exact name of the backup it holds. */
export const BACKUP_ANNOTATION = "replicator.dev/backup";

export const vsPath = (ns: string, name?: string): string => `/apis/${SNAPSHOT_API_VERSION}/namespaces/${ns}/volumesnapshots${name ? `/${name}` : ""}`;
export const pvcPath = (ns: string, name?: string): string => `/api/v1/namespaces/${ns}/persistentvolumeclaims${name ? `/${name}` : ""}`;

/**
 * The VolumeSnapshot of a backup: its name, lower-cased. Backup names are
 * `<yyyymmddThhmmssZ>-<method>-<source>` with a sanitised source, so the
 * lower-cased name is a valid DNS subdomain, and it sorts and states the
 * method like every other backup.
 */
export function volumeSnapshotName(backupName: string): string {
  return backupName.toLowerCase();
}

/** A label value: at most 63 characters, alphanumeric at both ends. */
export const labelValue = (s: string): string => s.toLowerCase().replace(/[^a-z0-9._-]/g, "-").slice(0, 63).replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");

export interface VolumeSnapshotObj {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec: { source: { persistentVolumeClaimName?: string; volumeSnapshotContentName?: string }; volumeSnapshotClassName?: string };
  status?: {
    boundVolumeSnapshotContentName?: string;
    creationTime?: string;
    readyToUse?: boolean;
    restoreSize?: string | number;
    error?: { message?: string; time?: string };
  };
}

export function buildVolumeSnapshot(i: {
  namespace: string;
  backupName: string;
  cluster: string;
  claimName: string;
  className?: string | undefined;
  sourcePod: string;
}): VolumeSnapshotObj {
  return {
    apiVersion: SNAPSHOT_API_VERSION,
    kind: "VolumeSnapshot",
    metadata: {
      name: volumeSnapshotName(i.backupName),
      namespace: i.namespace,
      // No owner: like a backup's objects in S3, the snapshot lives as long as the
      // stored backup (retention deletes both), not as long as the resource.
      labels: {
        "app.kubernetes.io/managed-by": "replicator-operator",
        "replicator.dev/cluster": labelValue(i.cluster),
        "replicator.dev/backup-name": labelValue(i.backupName),
        "replicator.dev/source-pod": labelValue(i.sourcePod),
      },
      annotations: { [BACKUP_ANNOTATION]: i.backupName },
    },
    spec: { source: { persistentVolumeClaimName: i.claimName }, ...(i.className ? { volumeSnapshotClassName: i.className } : {}) },
  };
}

export type SnapshotState =
  | { state: "pending"; error?: string | undefined }
  /** The point in time is cut (status.creationTime): the database may resume writes. */
  | { state: "cut"; creationTime: string }
  /** Usable for restores (status.readyToUse). */
  | { state: "ready"; creationTime: string; restoreSize: string | undefined; content: string | undefined };

/**
 * What a VolumeSnapshot's status says. Per the CSI spec a driver returns from
 * CreateSnapshot once the snapshot is cut, with ready_to_use false while it
 * is still being processed (e.g. uploaded); the snapshot controller copies
 * creation_time to status.creationTime. So creationTime is the moment the
 * database lock may be released, and readyToUse the moment the backup is usable.
 */
export function snapshotState(vs: VolumeSnapshotObj | undefined): SnapshotState {
  const s = vs?.status;
  if (!s?.creationTime) return { state: "pending", error: s?.error?.message };
  if (s.readyToUse !== true) return { state: "cut", creationTime: s.creationTime };
  return {
    state: "ready",
    creationTime: s.creationTime,
    restoreSize: s.restoreSize === undefined ? undefined : String(s.restoreSize),
    content: s.boundVolumeSnapshotContentName,
  };
}

// ------------------------------------------------------------ the record in the repository

export const snapshotRecordSchema = z.object({
  apiVersion: z.literal(SNAPSHOT_API_VERSION),
  kind: z.literal("VolumeSnapshot"),
  namespace: z.string(),
  name: z.string(),
  uid: z.string(),
  volumeSnapshotClassName: z.string().optional(),
  volumeSnapshotContentName: z.string().optional(),
  creationTime: z.string(),
  restoreSize: z.string().optional(),
  source: z.object({
    persistentVolumeClaimName: z.string(),
    storageClassName: z.string().optional(),
    /** The source claim's requested size. */
    size: z.string().optional(),
  }),
});
export type SnapshotRecord = z.infer<typeof snapshotRecordSchema>;

/** The record as stored (stable key order), with its size and sha256 for the manifest. */
export function encodeRecord(r: SnapshotRecord): { body: string; size: number; sha256: string } {
  const body = `${JSON.stringify(r, null, 2)}\n`;
  return { body, size: Buffer.byteLength(body), sha256: createHash("sha256").update(body).digest("hex") };
}

/** The snapshot record of a manifest's details (written there too, so listing needs no extra read). */
export function recordOf(details: Record<string, unknown> | undefined): SnapshotRecord | undefined {
  const r = snapshotRecordSchema.safeParse(details?.volumeSnapshot);
  return r.success ? r.data : undefined;
}

// ------------------------------------------------------------ PVCs from a snapshot

export interface PvcTemplate {
  labels?: Record<string, string> | undefined;
  accessModes?: string[] | undefined;
  storageClassName?: string | undefined;
  volumeMode?: string | undefined;
  /** The requested size, e.g. "10Gi". */
  size?: string | undefined;
}

export interface PvcObj {
  metadata: { name: string; namespace: string; uid?: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec?: {
    accessModes?: string[];
    storageClassName?: string;
    volumeMode?: string;
    resources?: { requests?: Record<string, string> };
    dataSource?: { apiGroup?: string; kind: string; name: string };
    dataSourceRef?: { apiGroup?: string; kind: string; name: string };
  };
  status?: { phase?: string };
}

/** A PVC whose dataSource is the backup's VolumeSnapshot, sized for it. */
export function buildPvcFromSnapshot(i: {
  namespace: string;
  name: string;
  template: PvcTemplate;
  snapshot: string;
  backupName: string;
  position: ReplicationPosition | undefined;
  restoreSize?: string | undefined;
  labels?: Record<string, string>;
}): PvcObj & { apiVersion: string; kind: string } {
  const size = largerQuantity(i.template.size, i.restoreSize) ?? "1Gi";
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name: i.name,
      namespace: i.namespace,
      labels: { ...(i.template.labels ?? {}), ...(i.labels ?? {}) },
      annotations: {
        [SEEDED_FROM_ANNOTATION]: i.backupName,
        ...(i.position ? { [SEED_POSITION_ANNOTATION]: JSON.stringify(i.position) } : {}),
      },
    },
    spec: {
      accessModes: i.template.accessModes?.length ? i.template.accessModes : ["ReadWriteOnce"],
      ...(i.template.storageClassName ? { storageClassName: i.template.storageClassName } : {}),
      ...(i.template.volumeMode ? { volumeMode: i.template.volumeMode } : {}),
      resources: { requests: { storage: size } },
      dataSource: { apiGroup: SNAPSHOT_GROUP, kind: "VolumeSnapshot", name: i.snapshot },
    },
  };
}

/** The VolumeSnapshot a PVC is restored from, if any (dataSourceRef or dataSource). */
export function snapshotSourceOf(pvc: PvcObj | undefined): string | undefined {
  const ds = pvc?.spec?.dataSourceRef ?? pvc?.spec?.dataSource;
  return ds?.kind === "VolumeSnapshot" && (ds.apiGroup ?? SNAPSHOT_GROUP) === SNAPSHOT_GROUP ? ds.name : undefined;
}

/** The position recorded on a seeded PVC. */
export function seedPositionOf(annotations: Record<string, string> | undefined): ReplicationPosition | undefined {
  const text = annotations?.[SEED_POSITION_ANNOTATION];
  if (!text) return undefined;
  try {
    const r = replicationPositionSchema.safeParse(JSON.parse(text));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------ quantities

const SUFFIX: Record<string, number> = {
  "": 1,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

/** A Kubernetes quantity in bytes ("10Gi", "500M", "1073741824"); undefined when unreadable. */
export function quantityBytes(q: string | number | undefined): number | undefined {
  if (q === undefined) return undefined;
  if (typeof q === "number") return q;
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kMGTPE]i?|Ki)?\s*$/.exec(q);
  if (!m?.[1]) return undefined;
  const mult = SUFFIX[m[2] ?? ""];
  return mult === undefined ? undefined : Math.ceil(Number(m[1]) * mult);
}

/** The larger of two quantities, as written; an unreadable one loses. */
export function largerQuantity(a: string | undefined, b: string | undefined): string | undefined {
  const [x, y] = [quantityBytes(a), quantityBytes(b)];
  if (x === undefined) return y === undefined ? a ?? b : b;
  if (y === undefined) return a;
  return y > x ? b : a;
}
