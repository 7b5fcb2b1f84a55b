// The spare volume of a provisioned StatefulSet: its next ordinal's data volume, pre-created from the newest usable snapshot.
import { checkMasterCanServe } from "../../../db/replication.js";
import { oneLine } from "../../../lib/errors.js";
import { positionText, type ReplicationPosition } from "../../../storage/catalog.js";
import { Repository } from "../../../storage/repository.js";
import { PROVISIONED_ANNOTATION, provisionSettings, type ProvisionSettings } from "../provision/decide.js";
import { isAlreadyExists } from "../../../kube/rest.js";
import { selectServerPod } from "../../observe.js";
import { decideSpare } from "./decide.js";
import { SEEDED_FROM_ANNOTATION, buildPvcFromSnapshot, pvcPath, seedPositionOf, type SnapshotRecord } from "./volumesnapshot.js";
import { usableRecord, type SnapshotHost, type SnapshotStatefulSet } from "./host.js";

/** How often the spare volume of a StatefulSet is re-evaluated without a trigger. */
const SPARE_RECHECK_MS = 60_000;

export class SpareVolumes {
  private readonly spareCheckedAt = new Map<string, { at: number; replicas: number }>();
  private readonly staleWarned = new Set<string>();

  constructor(private readonly host: SnapshotHost) {}

  /** React to a StatefulSet event: re-evaluate its spare when replicas changed or a while has passed. */
  statefulSetChanged(ns: string, sts: SnapshotStatefulSet): void {
    const key = `${ns}/${sts.metadata.name}`;
    const last = this.spareCheckedAt.get(key);
    const replicas = sts.spec?.replicas ?? 1;
    if (!last || last.replicas !== replicas || Date.now() - last.at > SPARE_RECHECK_MS) this.host.enqueue(`snapshot-spare/${key}`);
  }

  /** The "snapshot-spare/<ns>/<sts>" queue key: the StatefulSet's provisioning settings, then its spare. */
  async reconcileSpareOf(ns: string, stsName: string): Promise<void> {
    const sts = this.host.statefulSet(ns, stsName);
    const settings = sts ? provisionSettings(sts) : undefined;
    if (!settings || "error" in settings) return;
    await this.reconcileSpare(ns, stsName, settings);
  }

  async reconcileSpare(ns: string, stsName: string, settings: ProvisionSettings): Promise<void> {
    const sts = this.host.statefulSet(ns, stsName);
    if (!sts) return;
    const log = this.host.log.child({ controller: "snapshot-spare", namespace: ns, name: stsName });
    const replicas = sts.spec?.replicas ?? 1;
    this.spareCheckedAt.set(`${ns}/${stsName}`, { at: Date.now(), replicas });
    this.host.enqueue(`snapshot-spare/${ns}/${stsName}`, SPARE_RECHECK_MS);
    const claimName = `${settings.dataVolume}-${stsName}-${replicas}`;
    const pvc = this.host.pvc(ns, claimName);
    const observed = {
      replicas,
      claimName,
      pvc: pvc ? { annotations: pvc.metadata.annotations ?? {}, deleting: Boolean(pvc.metadata.deletionTimestamp) } : undefined,
      podExists: this.host.pod(ns, `${stsName}-${replicas}`) !== undefined,
      candidate: undefined as { backup: string } | undefined,
      seededFromAnnotation: SEEDED_FROM_ANNOTATION,
      provisionedAnnotation: PROVISIONED_ANNOTATION,
    };
    // Cheap answers first: most of the time there is nothing to look up.
    // (A candidate newer than anything: only the cases that need a storage lookup remain.)
    const early = decideSpare({ ...observed, candidate: { backup: "\uffff" } });
    if (early.kind === "none" || early.kind === "wait") return;
    const candidate = await this.usableSnapshot(ns, stsName, settings).catch((err: unknown) => {
      log.warn({ err: oneLine(err) }, "could not look for a snapshot for the spare volume; nothing changed");
      return undefined;
    });
    const plan = decideSpare({ ...observed, candidate: candidate ? { backup: candidate.backup } : undefined });
    switch (plan.kind) {
      case "none":
      case "wait":
        return;
      case "stale": {
        // Older is fine while the master still has the binlogs after it; say so when it has not.
        const pos = seedPositionOf(pvc?.metadata.annotations);
        const warnKey = `${ns}/${claimName}/${plan.from}`;
        if (!pos || this.staleWarned.has(warnKey)) return;
        const check = await this.masterCanServe(ns, stsName, settings, pos).catch(() => undefined);
        if (!check || check.ok) return;
        this.staleWarned.add(warnKey);
        await this.host.event(
          { apiVersion: "apps/v1", kind: "StatefulSet", metadata: sts.metadata },
          "Warning",
          "SpareVolumeStale",
          `spare volume ${claimName} (cloned from ${plan.from}) can no longer seed a slave: ${check.reason ?? "the master cannot serve its position"}. The operator deletes no volume: delete ${claimName}, and it is created again from ${plan.to}`,
        );
        return;
      }
      case "create": {
        if (!candidate) return;
        const tpl = sts.spec?.volumeClaimTemplates?.find((t) => t.metadata?.name === settings.dataVolume);
        const body = buildPvcFromSnapshot({
          namespace: ns,
          name: claimName,
          template: {
            labels: { ...(tpl?.metadata?.labels ?? {}), ...(sts.spec?.selector?.matchLabels ?? {}) },
            accessModes: tpl?.spec?.accessModes,
            storageClassName: tpl?.spec?.storageClassName,
            volumeMode: tpl?.spec?.volumeMode,
            size: tpl?.spec?.resources?.requests?.storage,
          },
          snapshot: candidate.record.name,
          backupName: candidate.backup,
          position: candidate.position,
          restoreSize: candidate.record.restoreSize,
          labels: { "replicator.dev/cluster": settings.cluster },
        });
        try {
          await this.host.rest.create(pvcPath(ns), body);
        } catch (err) {
          if (isAlreadyExists(err)) return; // the StatefulSet controller was quicker: that pod provisions the other way
          throw err;
        }
        log.info({ pvc: claimName, backup: candidate.backup, volumeSnapshot: candidate.record.name }, "spare volume created from the newest snapshot");
        await this.host.event(
          { apiVersion: "apps/v1", kind: "StatefulSet", metadata: sts.metadata },
          "Normal",
          "SpareVolumeCreated",
          `${claimName} created from VolumeSnapshot ${candidate.record.name} (${candidate.backup}, position ${positionText(candidate.position) ?? "-"}): the next slave starts as a clone`,
        );
        return;
      }
    }
  }

  /** The newest snapshot backup of the cluster whose VolumeSnapshot is here and ready, and whose position the master can still serve. */
  private async usableSnapshot(
    ns: string,
    stsName: string,
    s: ProvisionSettings,
  ): Promise<{ backup: string; record: SnapshotRecord; position: ReplicationPosition } | undefined> {
    const repoSpec = this.host.repository(ns, s.repository);
    if (!repoSpec) return undefined;
    const store = await this.host.openStore(ns, repoSpec);
    if (!store) return undefined;
    const { backups } = await new Repository(store, s.cluster).list();
    const named = (s.backup === "latest" ? backups : backups.filter((b) => b.name === s.backup)).reverse();
    const candidates = named.filter((b) => b.manifest.kind === "snapshot" && b.manifest.replication);
    if (candidates.length === 0) return undefined;
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) return undefined;
    const c = await this.host.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    try {
      for (const b of candidates) {
        const usable = await usableRecord(this.host, ns, b);
        if (!usable || !b.manifest.replication) continue;
        const check = await checkMasterCanServe(c, b.manifest.replication, `master ${master.pod}`);
        if (check.ok) return { backup: b.name, record: usable, position: b.manifest.replication };
      }
      return undefined;
    } finally {
      c.destroy();
    }
  }

  private async masterCanServe(ns: string, stsName: string, s: ProvisionSettings, pos: ReplicationPosition): Promise<{ ok: boolean; reason?: string | undefined }> {
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) return { ok: true }; // unknown now: not a reason to warn
    const c = await this.host.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    try {
      return await checkMasterCanServe(c, pos, `master ${master.pod}`);
    } finally {
      c.destroy();
    }
  }
}
