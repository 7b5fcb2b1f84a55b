// A snapshot backup restored into a new PersistentVolumeClaim (a ReplicatorRestore with spec.volume): no Job.
import type { ReplicatorRestore, RepositorySpec, RestoreStatus, ServerRef } from "../../../api/v1alpha1.js";
import type { Endpoint } from "../../../db/endpoint.js";
import { oneLine } from "../../../lib/errors.js";
import { parseBackupName, positionText, selectBackup, type BackupEntry, type Selector } from "../../../storage/catalog.js";
import { Repository } from "../../../storage/repository.js";
import { operationStatus } from "../../conditions.js";
import { isAlreadyExists } from "../../../kube/rest.js";
import { selectServerPod } from "../../observe.js";
import { SEEDED_FROM_ANNOTATION, SNAPSHOT_METHOD, buildPvcFromSnapshot, pvcPath, recordOf, seedPositionOf } from "./volumesnapshot.js";
import { seedClone } from "./cloned-volumes.js";
import { usableRecord, type SnapshotHost } from "./host.js";

/** Why a restore into a running server cannot use this backup (a volume snapshot), or undefined. */
export function volumeOnlyBackup(backup: string): string | undefined {
  if (parseBackupName(backup)?.method !== SNAPSHOT_METHOD) return undefined;
  return `spec.volume: backup ${backup} is a volume snapshot; it is restored into a new PersistentVolumeClaim: set spec.volume.claimName (and start the target server on that claim)`;
}

export class VolumeRestores {
  constructor(private readonly host: SnapshotHost) {}

  /**
   * A ReplicatorRestore with spec.volume: create that PVC from the chosen
   * snapshot backup's VolumeSnapshot; once the target pod runs on it, make it
   * a slave of replicateFrom (if given) and complete. Returns the new status.
   */
  async reconcileVolumeRestore(r: ReplicatorRestore, spec: RestoreSpecWithVolume, repoSpec: RepositorySpec | undefined): Promise<RestoreStatus | undefined> {
    const ns = r.metadata.namespace;
    const now = this.host.now();
    const gen = r.metadata.generation ?? 0;
    const key = `restore/${ns}/${r.metadata.name}`;
    const base: RestoreStatus = { ...(r.status ?? {}), observedGeneration: gen };
    if (r.status?.phase === "Completed" || r.status?.phase === "Failed") return undefined;
    const fail = (reason: string, message: string): RestoreStatus => operationStatus(base, { phase: "Failed", reason, message }, now, gen);
    const wait = (phase: "Pending" | "Running", reason: string, message: string, ms: number): RestoreStatus => {
      this.host.enqueue(key, ms);
      return operationStatus(base, { phase, reason, message }, now, gen);
    };
    if (!repoSpec) return wait("Pending", "RepositoryNotFound", `ReplicatorRepository ${spec.repository} not found; create it`, 15_000);
    const claimName = spec.volume.claimName;
    let pvc = this.host.pvc(ns, claimName);

    // 1. The volume: created once, from the chosen backup's snapshot.
    if (!base.backupName) {
      const store = await this.host.openStore(ns, repoSpec);
      if (!store) return fail("NeedsS3Repository", "restoring a volumesnapshot backup needs an S3 repository (the operator lists it)");
      let backups: BackupEntry[];
      try {
        // Throws on a storage fault (no partial listing): "latest" is never an older backup picked on a fault.
        ({ backups } = await new Repository(store, spec.cluster).list());
      } catch (err) {
        const reason = (err as { reason?: string }).reason === "StorageUnreachable" ? "StorageUnreachable" : "StorageError";
        return wait("Pending", reason, `could not list ${store.location}/${spec.cluster}: ${oneLine(err)}; retrying`, 30_000);
      }
      const snapshots = backups.filter((b) => b.manifest.kind === "snapshot");
      let chosen: BackupEntry;
      try {
        const sel: Selector = spec.before ? { kind: "before", time: new Date(spec.before) } : spec.backup === "latest" ? { kind: "latest" } : { kind: "name", name: spec.backup };
        chosen = selectBackup(snapshots, sel, `${store.location}/${spec.cluster} (volumesnapshot backups)`);
      } catch (err) {
        return fail((err as { reason?: string }).reason ?? "BackupNotFound", oneLine(err));
      }
      const rec = await usableRecord(this.host, ns, chosen);
      if (!rec) {
        return fail(
          "SnapshotUnavailable",
          `backup ${chosen.name}'s VolumeSnapshot ${recordOf(chosen.manifest.details)?.namespace ?? "?"}/${recordOf(chosen.manifest.details)?.name ?? "?"} is not in namespace ${ns} or not readyToUse; a PVC can only be restored from a snapshot in its own namespace`,
        );
      }
      if (pvc && pvc.metadata.annotations?.[SEEDED_FROM_ANNOTATION] !== chosen.name) {
        return fail("VolumeExists", `PersistentVolumeClaim ${claimName} already exists; restore into a new claim name`);
      }
      if (!pvc) {
        const body = buildPvcFromSnapshot({
          namespace: ns,
          name: claimName,
          template: { storageClassName: spec.volume.storageClassName ?? rec.source.storageClassName, size: spec.volume.size ?? rec.source.size, accessModes: spec.volume.accessModes },
          snapshot: rec.name,
          backupName: chosen.name,
          position: chosen.manifest.replication,
          restoreSize: rec.restoreSize,
          labels: { "replicator.dev/cluster": spec.cluster, "replicator.dev/restore": r.metadata.name },
        });
        await this.host.rest.create(pvcPath(ns), body).catch((err: unknown) => {
          if (!isAlreadyExists(err)) throw err;
        });
        pvc = body;
        await this.host.event(r, "Normal", "VolumeCreated", `PersistentVolumeClaim ${claimName} created from VolumeSnapshot ${rec.name} (${chosen.name})`);
      }
      base.backupName = chosen.name;
      const pos = positionText(chosen.manifest.replication);
      if (pos) base.position = pos;
      base.startedAt ??= now.toISOString();
    }

    // 2. The server on it.
    const targetRef = spec.target;
    const target = selectServerPod(targetRef, this.host.pods(ns));
    const pods = this.host.pods(ns).filter((p) => (p.spec?.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === claimName));
    if (!target.ok) return wait("Running", "WaitingForServer", `PersistentVolumeClaim ${claimName} holds ${base.backupName ?? ""}; waiting for the target server to run on it (${target.message})`, 5_000);
    if (!pods.some((p) => p.metadata.name === target.pod)) {
      return fail("TargetNotOnVolume", `target pod ${target.pod} does not mount PersistentVolumeClaim ${claimName}; restore a snapshot into a new claim and start the server on it`);
    }
    base.targetPod = target.pod;
    const recorded = seedPositionOf((pvc ?? this.host.pvc(ns, claimName))?.metadata.annotations);
    if (spec.replicateFrom) {
      const m = selectServerPod(spec.replicateFrom, this.host.pods(ns));
      if (!m.ok) return wait("Running", "MasterNotReady", `replicateFrom: ${m.message}`, 5_000);
      if (!recorded) return fail("NoPosition", `backup ${base.backupName ?? ""} recorded no replication position; it cannot seed a slave`);
      const repl = await this.host.secret(ns, spec.replicateFrom.credentialsSecret.name);
      const endpoint: Endpoint = {
        engine: "mysql",
        host: this.host.masterAddress(ns, m),
        port: spec.replicateFrom.port,
        user: repl(spec.replicateFrom.credentialsSecret.userKey) ?? "",
        password: repl(spec.replicateFrom.credentialsSecret.passwordKey),
      };
      try {
        const c = await this.host.connectWith(ns, targetRef.credentialsSecret, target.address, targetRef.port, `target ${target.pod}`);
        try {
          const seeded = await seedClone(c, endpoint, recorded);
          base.position = positionText(seeded.position) ?? base.position;
          base.replicating = true;
        } finally {
          c.destroy();
        }
      } catch (err) {
        return fail((err as { reason?: string }).reason ?? "ReplicationFailed", oneLine(err));
      }
    }
    await this.host.markPvc(ns, claimName, base.backupName ?? "restored");
    base.finishedAt = now.toISOString();
    const message = `restored ${base.backupName ?? ""} into volume ${claimName}; ${target.pod} runs on it${base.replicating ? " and replicates" : ""}`;
    await this.host.event(r, "Normal", "RestoreSucceeded", message);
    this.host.metrics.restoreFinished(ns, "succeeded");
    return operationStatus(base, { phase: "Completed", reason: "RestoreSucceeded", message }, now, gen);
  }
}

export type RestoreSpecWithVolume = {
  repository: string;
  cluster: string;
  backup: string;
  before?: string | undefined;
  target: ServerRef;
  replicateFrom?: ServerRef | undefined;
  volume: { claimName: string; storageClassName?: string | undefined; size?: string | undefined; accessModes?: string[] | undefined };
};
