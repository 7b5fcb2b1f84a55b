// Retention of snapshot backups: a deleted backup takes its VolumeSnapshot with it, and a backup a cloned volume still needs is in use.
import { Repository } from "../../../storage/repository.js";
import { PROVISIONED_ANNOTATION } from "../provision/decide.js";
import { isNotFound } from "../../../kube/rest.js";
import { SEEDED_FROM_ANNOTATION, recordOf, vsPath, type SnapshotRecord, type VolumeSnapshotObj } from "./volumesnapshot.js";
import type { SnapshotHost } from "./host.js";

export class SnapshotRetention {
  constructor(private readonly host: SnapshotHost) {}

  /** The VolumeSnapshot of every snapshot backup of a repository's cluster (read before pruning). */
  async snapshotRefs(repo: Repository): Promise<Map<string, SnapshotRecord>> {
    const out = new Map<string, SnapshotRecord>();
    const { backups } = await repo.list();
    for (const b of backups) {
      const rec = b.manifest.kind === "snapshot" ? recordOf(b.manifest.details) : undefined;
      if (rec) out.set(b.name, rec);
    }
    return out;
  }

  /** Delete the VolumeSnapshots of deleted backups (only the very one each backup recorded, by uid). */
  async deleteSnapshots(names: Iterable<string>, refs: Map<string, SnapshotRecord>): Promise<string[]> {
    const deleted: string[] = [];
    for (const name of names) {
      const rec = refs.get(name);
      if (!rec) continue;
      const vs = await this.host.rest.get<VolumeSnapshotObj>(vsPath(rec.namespace, rec.name)).catch((err: unknown) => {
        if (isNotFound(err)) return undefined;
        throw err;
      });
      if (!vs || (rec.uid && vs.metadata.uid !== rec.uid)) continue;
      await this.host.rest.delete(vsPath(rec.namespace, rec.name)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      deleted.push(`${rec.namespace}/${rec.name}`);
    }
    return deleted;
  }

  /** Snapshot backups that a volume created from them still needs: it is not restored until it is bound. */
  backupsInUse(ns: string): Set<string> {
    const used = new Set<string>();
    for (const p of this.host.pvcs(ns)) {
      const a = p.metadata.annotations ?? {};
      const from = a[SEEDED_FROM_ANNOTATION];
      // Until it is bound (with WaitForFirstConsumer: until a pod uses it), the volume is not restored yet.
      if (from && !a[PROVISIONED_ANNOTATION] && p.status?.phase !== "Bound" && !p.metadata.deletionTimestamp) used.add(from);
    }
    return used;
  }
}
