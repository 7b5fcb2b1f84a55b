// The volumesnapshot method inside the operator, one file per job:
//   - snapshot-backups.ts: it runs snapshot backups itself (no Job);
//   - spare-volumes.ts: it keeps each provisioned StatefulSet's next data
//     volume pre-created from the newest usable snapshot;
//   - cloned-volumes.ts: it turns a pod that starts on such a clone into a slave;
//   - volume-restore.ts: it restores a snapshot backup into a new PVC;
//   - retention.ts: it deletes a snapshot's VolumeSnapshot when retention
//     deletes its backup.
// The backup, restore and provision controllers call in here, through this
// one object that lends each job the same host; the rules are in ./decide.ts.
import type { ReplicatorBackup, ReplicatorRestore, RepositorySpec, RestoreStatus } from "../../../api/v1alpha1.js";
import type { Repository } from "../../../storage/repository.js";
import type { BackupPlan } from "../backup/decide.js";
import type { ProvisionSettings } from "../provision/decide.js";
import type { PvcObj, SnapshotRecord } from "./volumesnapshot.js";
import type { SnapshotHost, SnapshotPod, SnapshotStatefulSet } from "./host.js";
import { SnapshotBackups } from "./snapshot-backups.js";
import { SnapshotRetention } from "./retention.js";
import { SpareVolumes } from "./spare-volumes.js";
import { ClonedVolumes } from "./cloned-volumes.js";
import { VolumeRestores, type RestoreSpecWithVolume } from "./volume-restore.js";

export type { SnapshotHost, SnapshotPod, SnapshotStatefulSet } from "./host.js";
export { isSnapshotBackup, snapshotOptions } from "./snapshot-backups.js";
export { seedClone } from "./cloned-volumes.js";
export { volumeOnlyBackup, type RestoreSpecWithVolume } from "./volume-restore.js";

export class SnapshotController {
  private readonly backups: SnapshotBackups;
  private readonly retention: SnapshotRetention;
  private readonly spares: SpareVolumes;
  private readonly clones: ClonedVolumes;
  private readonly volumeRestores: VolumeRestores;

  constructor(host: SnapshotHost) {
    this.backups = new SnapshotBackups(host);
    this.retention = new SnapshotRetention(host);
    this.spares = new SpareVolumes(host);
    this.clones = new ClonedVolumes(host);
    this.volumeRestores = new VolumeRestores(host);
  }

  // ------------------------------------------------------------ backups (snapshot-backups.ts)

  busyPods(ns: string): Map<string, string[]> {
    return this.backups.busyPods(ns);
  }

  beforeDecide(b: ReplicatorBackup): ReturnType<SnapshotBackups["beforeDecide"]> {
    return this.backups.beforeDecide(b);
  }

  recorded(b: ReplicatorBackup): void {
    this.backups.recorded(b);
  }

  start(b: ReplicatorBackup, plan: Extract<BackupPlan, { kind: "createJob" }>): ReturnType<SnapshotBackups["start"]> {
    return this.backups.start(b, plan);
  }

  // ------------------------------------------------------------ retention (retention.ts)

  snapshotRefs(repo: Repository): Promise<Map<string, SnapshotRecord>> {
    return this.retention.snapshotRefs(repo);
  }

  deleteSnapshots(names: Iterable<string>, refs: Map<string, SnapshotRecord>): Promise<string[]> {
    return this.retention.deleteSnapshots(names, refs);
  }

  backupsInUse(ns: string): Set<string> {
    return this.retention.backupsInUse(ns);
  }

  // ------------------------------------------------------------ the spare volume of a StatefulSet (spare-volumes.ts)

  statefulSetChanged(ns: string, sts: SnapshotStatefulSet): void {
    this.spares.statefulSetChanged(ns, sts);
  }

  reconcileSpareOf(ns: string, stsName: string): Promise<void> {
    return this.spares.reconcileSpareOf(ns, stsName);
  }

  reconcileSpare(ns: string, stsName: string, settings: ProvisionSettings): Promise<void> {
    return this.spares.reconcileSpare(ns, stsName, settings);
  }

  // ------------------------------------------------------------ a pod on a cloned volume (cloned-volumes.ts)

  provisionSeeded(pod: SnapshotPod, pvc: PvcObj, s: ProvisionSettings, stsName: string): Promise<boolean> {
    return this.clones.provisionSeeded(pod, pvc, s, stsName);
  }

  // ------------------------------------------------------------ restore into a new volume (volume-restore.ts)

  reconcileVolumeRestore(r: ReplicatorRestore, spec: RestoreSpecWithVolume, repoSpec: RepositorySpec | undefined): Promise<RestoreStatus | undefined> {
    return this.volumeRestores.reconcileVolumeRestore(r, spec, repoSpec);
  }
}
