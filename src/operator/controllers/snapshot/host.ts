// What the operator lends the volumesnapshot controllers, and what they share.
import type { RepositorySpec } from "../../../api/v1alpha1.js";
import type { Conn } from "../../../db/connection.js";
import type { Logger } from "../../../lib/log.js";
import type { BackupEntry } from "../../../storage/catalog.js";
import type { ObjectStore } from "../../../storage/object-store.js";
import type { ProvisionPod } from "../provision/observe.js";
import type { KubeRest } from "../../../kube/rest.js";
import type { Metrics } from "../../metrics.js";
import type { PodLike } from "../../observe.js";
import { recordOf, snapshotState, vsPath, type PvcObj, type SnapshotRecord, type VolumeSnapshotObj } from "./volumesnapshot.js";

/** A pod as this controller reads it (what PodLike, ProvisionPod and dataVolumeOf read). */
export interface SnapshotPod extends PodLike {
  metadata: PodLike["metadata"] & { namespace: string; uid?: string; creationTimestamp?: string; annotations?: Record<string, string> };
  spec?: {
    nodeName?: string;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string }; downwardAPI?: { items?: { fieldRef?: { fieldPath?: string } }[] } }[];
    containers?: { name: string; volumeMounts?: { name: string; mountPath: string; subPath?: string }[] }[];
    initContainers?: { name: string; command?: string[]; args?: string[] }[];
  };
  status?: PodLike["status"] & ProvisionPod["status"];
}

export interface SnapshotStatefulSet {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    volumeClaimTemplates?: {
      metadata?: { name?: string; labels?: Record<string, string> };
      spec?: { accessModes?: string[]; storageClassName?: string; volumeMode?: string; resources?: { requests?: Record<string, string> } };
    }[];
  };
}

/** What the operator lends this controller. */
export interface SnapshotHost {
  rest: KubeRest;
  log: Logger;
  metrics: Metrics;
  now: () => Date;
  enqueue(key: string, afterMs?: number): void;
  pod(ns: string, name: string): SnapshotPod | undefined;
  pods(ns: string): SnapshotPod[];
  pvc(ns: string, name: string): PvcObj | undefined;
  pvcs(ns: string): PvcObj[];
  statefulSet(ns: string, name: string): SnapshotStatefulSet | undefined;
  repository(ns: string, name: string): RepositorySpec | undefined;
  openStore(ns: string, repo: RepositorySpec): Promise<ObjectStore | undefined>;
  secret(ns: string, name: string): Promise<(key: string) => string | undefined>;
  connectWith(ns: string, secret: { name: string; userKey?: string; passwordKey?: string }, host: string, port: number, what: string): Promise<Conn>;
  masterAddress(ns: string, master: { pod: string; address: string }): string;
  event(obj: { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; uid?: string } }, type: "Normal" | "Warning", reason: string, message: string): Promise<void>;
  setGate(pod: SnapshotPod, status: "True" | "False", reason: string, message: string): Promise<void>;
  markPvc(ns: string, name: string, backup: string): Promise<void>;
}

/** A backup's VolumeSnapshot, when it is in this namespace, the very one recorded, and ready. */
export async function usableRecord(host: Pick<SnapshotHost, "rest">, ns: string, b: BackupEntry): Promise<SnapshotRecord | undefined> {
  const rec = recordOf(b.manifest.details);
  if (rec?.namespace !== ns) return undefined;
  const vs = await host.rest.get<VolumeSnapshotObj>(vsPath(ns, rec.name)).catch(() => undefined);
  if (!vs || vs.metadata.deletionTimestamp || (rec.uid && vs.metadata.uid !== rec.uid)) return undefined;
  return snapshotState(vs).state === "ready" ? rec : undefined;
}
