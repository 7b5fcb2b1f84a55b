// Restores: a ReplicatorRestore becomes one restore Job into a running server
// (or, with spec.volume, a new PVC cloned from a volume snapshot: ../snapshot).
// The rules are in ./decide.ts.
import { restoreSpecSchema, validateSpec, type RestoreSpec } from "../../../api/v1alpha1.js";
import { buildRestoreJob, childName } from "../../builders/jobs.js";
import { sameStatus } from "../../conditions.js";
import { isAlreadyExists } from "../../../kube/rest.js";
import { volumeOnlyBackup, type RestoreSpecWithVolume, type SnapshotController } from "../snapshot/controller.js";
import { crPath, nsPath, type OperatorHost } from "../../host.js";
import { computeRestoreStatus, decideRestore, pointInTimeOf, untilText, type RestoreObserved, type RestorePreflight } from "./decide.js";
import { repositorySecretProblem, serverRefSecretProblem } from "../secrets.js";
import { faultReason } from "../catalog/decide.js";
import { oneLine } from "../../../lib/errors.js";
import { Repository } from "../../../storage/repository.js";

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type RestoreHost = Pick<OperatorHost, "event" | "expectations" | "jobPods" | "jobs" | "log" | "masterAddress" | "metrics" | "now" | "openStore" | "owner" | "podsIn" | "queue" | "repoObserved" | "rest" | "restores" | "settings">;

export class RestoreController {
  constructor(
    private readonly host: RestoreHost,
    private readonly snapshots: SnapshotController,
  ) {}

  async reconcileRestore(ns: string, name: string): Promise<void> {
    const r = this.host.restores.get(`${ns}/${name}`);
    if (!r || r.metadata.deletionTimestamp) return;
    const log = this.host.log.child({ controller: "restore", namespace: ns, name });
    const jobName = childName(name, "restore");
    const ownerKey = `restore/${ns}/${name}`;
    if (!this.host.expectations.satisfied(ownerKey)) {
      this.host.queue.addAfter(ownerKey, this.host.expectations.remainingMs(ownerKey));
      return;
    }
    const spec = validateSpec(restoreSpecSchema, r.spec);
    const volumeOnly = spec.ok && !spec.value.volume ? volumeOnlyBackup(spec.value.backup) : undefined;
    if (volumeOnly && r.status?.phase !== "Failed") {
      await this.host.event(r, "Warning", "InvalidSpec", volumeOnly);
      await this.host.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, {
        status: computeRestoreStatus(r.status, { kind: "invalid", message: volumeOnly }, this.host.now(), r.metadata.generation ?? 0),
      });
      return;
    }
    if (spec.ok && spec.value.volume) {
      // A volumesnapshot backup restored into a new PVC: no Job (src/operator/controllers/snapshot).
      const volumeSpec = { ...spec.value, volume: spec.value.volume } satisfies RestoreSpecWithVolume;
      const repoObs = this.host.repoObserved(ns, spec.value.repository);
      const status = await this.snapshots.reconcileVolumeRestore(r, volumeSpec, repoObs.found && repoObs.spec.ok ? repoObs.spec.value : undefined);
      if (status && !sameStatus(status, r.status)) {
        await this.host.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, { status });
        if (status.phase !== r.status?.phase) log.info({ phase: status.phase }, "restore phase changed");
        if (status.phase === "Failed") {
          this.host.metrics.restoreFinished(ns, "failed");
          await this.host.event(r, "Warning", status.conditions?.find((c) => c.type === "Ready")?.reason ?? "RestoreFailed", status.message ?? "");
        }
      }
      return;
    }
    const observed: RestoreObserved = {
      spec,
      status: r.status,
      generation: r.metadata.generation ?? 0,
      repository: this.host.repoObserved(ns, spec.ok ? spec.value.repository : (r.spec.repository ?? "default")),
      job: this.host.jobs.get(`${ns}/${jobName}`),
      jobPods: this.host.jobPods(ns, jobName),
      pods: this.host.podsIn(ns),
    };
    let plan = decideRestore(observed);
    if (plan.kind === "needPreflight" && spec.ok) {
      observed.preflight = await this.preflight(ns, spec.value);
      plan = decideRestore(observed);
    }
    switch (plan.kind) {
      case "done":
      case "running":
      case "needPreflight":
        break;
      case "invalid":
        await this.host.event(r, "Warning", "InvalidSpec", plan.message);
        break;
      case "wait":
        if (r.status?.conditions?.find((c) => c.type === "Ready")?.reason !== plan.reason) await this.host.event(r, "Normal", plan.reason, plan.message);
        this.host.queue.addAfter(`restore/${ns}/${name}`, plan.requeueMs);
        break;
      case "createJob": {
        // "latest" and "before" go to the Job resolved: the backup this server can load.
        const job = buildRestoreJob({
          owner: this.host.owner(r),
          spec: plan.backup ? { ...plan.spec, backup: plan.backup, before: undefined } : plan.spec,
          repo: plan.repo,
          targetPod: plan.targetPod,
          targetAddress: plan.targetAddress,
          masterAddress: plan.master ? this.host.masterAddress(ns, plan.master) : undefined,
          settings: this.host.settings.jobs,
        });
        this.host.expectations.expectCreation(`Job/${ns}/${jobName}`, [ownerKey]);
        try {
          await this.host.rest.create(nsPath("/apis/batch/v1", ns, "jobs"), job);
          log.info({ job: jobName, target: plan.targetPod, backup: plan.backup }, "restore job created");
          const until = untilText(plan.spec);
          await this.host.event(r, "Normal", "RestoreStarted", `restore Job ${jobName} started on ${plan.targetPod}${plan.backup ? `: ${plan.backup}` : ""}${until ? `: point in time ${until}` : ""}`);
        } catch (err) {
          if (!isAlreadyExists(err)) {
            this.host.expectations.creationFailed(`Job/${ns}/${jobName}`);
            throw err;
          }
          if (this.host.jobs.get(`${ns}/${jobName}`)) this.host.expectations.observed(`Job/${ns}/${jobName}`);
        }
        break;
      }
      case "succeeded":
        this.host.metrics.restoreFinished(ns, "succeeded");
        {
          const pitr = pointInTimeOf(plan.result);
          await this.host.event(
            r,
            "Normal",
            "RestoreSucceeded",
            pitr ? `restored ${pitr.backup}, replayed the binlog archive up to ${pitr.until}` : `restored ${plan.result.name ?? ""}${plan.result.replicating ? "; replicating" : ""}`,
          );
        }
        break;
      case "failed":
        this.host.metrics.restoreFinished(ns, "failed");
        await this.host.event(r, "Warning", plan.reason || "RestoreFailed", plan.message);
        break;
    }
    if (plan.kind === "done") return;
    const status = computeRestoreStatus(r.status, plan, this.host.now(), r.metadata.generation ?? 0, jobName);
    if (status && !sameStatus(status, r.status)) {
      await this.host.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, { status });
      if (status.phase !== r.status?.phase) log.info({ phase: status.phase }, "restore phase changed");
    }
  }

  /**
   * Before a Job is created: the credentials Secrets hold the keys the Job
   * reads, and the repository's backups, to resolve "latest" to one a running
   * server can load. Filesystem repositories are listed by the Job itself.
   */
  private async preflight(ns: string, spec: RestoreSpec): Promise<RestorePreflight> {
    const repo = this.host.repoObserved(ns, spec.repository);
    const repoSpec = repo.found && repo.spec.ok ? repo.spec.value : undefined;
    const problem =
      (await serverRefSecretProblem(this.host.rest, ns, spec.target, "target")) ??
      (spec.replicateFrom ? await serverRefSecretProblem(this.host.rest, ns, spec.replicateFrom, "replicateFrom") : undefined) ??
      (repoSpec ? await repositorySecretProblem(this.host.rest, ns, spec.repository, repoSpec) : undefined);
    if (problem) return { secretProblem: problem };
    if (!repoSpec?.s3) return { catalog: { kind: "unlisted" } };
    try {
      const store = await this.host.openStore(ns, repoSpec);
      if (!store) return { catalog: { kind: "unlisted" } };
      const { backups } = await new Repository(store, spec.cluster).list();
      return {
        catalog: {
          kind: "listed",
          backups: backups.map((b) => ({
            name: b.name,
            time: b.time,
            method: b.manifest.method,
            kind: b.manifest.kind,
            hasPosition: b.manifest.replication !== undefined,
            sourceRole: b.manifest.source.role,
            source: b.source,
          })),
        },
      };
    } catch (err) {
      // Never "no backup" on a storage fault: the restore waits and says what failed.
      return { catalog: { kind: "error", reason: faultReason(err), message: `cannot list the backups of cluster ${spec.cluster} in repository ${spec.repository}: ${oneLine(err)}` } };
    }
  }
}
