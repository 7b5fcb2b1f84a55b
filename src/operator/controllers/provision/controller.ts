// Provisioning: each pod of an annotated StatefulSet is held behind a
// readiness gate until its volume is seeded from a backup (a ReplicatorRestore,
// or a plan for the init container) and replicates. The rules are in
// ./decide.ts, what is read from a pod in ./observe.ts.
import { API_VERSION, repositorySpecSchema, validateSpec } from "../../../api/v1alpha1.js";
import type { ProvisionPlanDoc } from "../../../api/provision-plan.js";
import { oneLine } from "../../../lib/errors.js";
import { checkMasterCanServe, getSlaveStatus } from "../../../db/replication.js";
import { queryRows } from "../../../db/connection.js";
import { positionText } from "../../../storage/catalog.js";
import { Repository } from "../../../storage/repository.js";
import { decideBridge, type ArchiveChain } from "../../../pitr/bridge.js";
import { ArchiveIndexCache } from "../../../pitr/archive-index-cache.js";
import { observeArchiveChains } from "../archive/observe.js";
import { childName, repositoryUrl, serverUrl } from "../../builders/jobs.js";
import { isAlreadyExists, isNotFound } from "../../../kube/rest.js";
import { isContainersReady, masterPodName, selectServerPod } from "../../observe.js";
import { faultReason } from "../catalog/decide.js";
import type { SnapshotController, SnapshotPod } from "../snapshot/controller.js";
import { crPath, nsPath, ownerSts, type OperatorHost, type PodObj } from "../../host.js";
import {
  GATE_CONDITION,
  PLAN_ANNOTATION,
  PROVISION_ANNOTATION,
  chooseSeed,
  decideProvision,
  provisionSettings,
  seedFrom,
  type SeedCandidate,
  type ProvisionPlan,
  type ProvisionSettings,
  type SeedChoice,
  type TargetReplication,
} from "./decide.js";
import { observeSecretKeys } from "../secrets.js";
import { secretProblem } from "../shared.js";
import { podPlan, provisionInitResult, takesPlan } from "./observe.js";

/** Gate reasons a human must act on: each gets a Warning event on the pod when the gate turns to it. */
const WARNING_REASONS = new Set(["NoBackup", "BinaryLoggingOff", "BinlogsPurged", "BridgeNeedsServer", "StorageUnreachable", "StorageError", "SecretInvalid", "AlreadyReplicating", "TargetNotEmpty"]);

/** On a provisioning ReplicatorRestore: the pod it seeds. */
export const PROVISION_POD_LABEL = "replicator.dev/provision-pod";

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type ProvisionHost = Pick<OperatorHost, "connectWith" | "event" | "expectations" | "log" | "markPvc" | "masterAddress" | "metrics" | "openStore" | "pods" | "podsIn" | "pvcs" | "queue" | "repositories" | "rest" | "restores" | "setGate" | "statefulSets">;

export class ProvisionController {
  constructor(
    private readonly host: ProvisionHost,
    private readonly snapshots: SnapshotController,
    /** Binlog indexes already read (shared with the archive status): a waiting slave reads only new or changed ones. */
    private readonly archiveIndexes: ArchiveIndexCache = new ArchiveIndexCache(),
  ) {}

  enqueueProvision(pod: PodObj): void {
    const sts = ownerSts(pod);
    if (!sts) return;
    const s = this.host.statefulSets.get(`${pod.metadata.namespace}/${sts}`);
    if (s?.metadata.annotations?.[PROVISION_ANNOTATION] !== undefined) this.host.queue.add(`provision/${pod.metadata.namespace}/${pod.metadata.name}`);
  }

  async reconcileProvision(ns: string, podName: string): Promise<void> {
    const pod = this.host.pods.get(`${ns}/${podName}`);
    if (!pod || pod.metadata.deletionTimestamp) return;
    const stsName = ownerSts(pod);
    const sts = stsName ? this.host.statefulSets.get(`${ns}/${stsName}`) : undefined;
    if (!sts) return;
    const settings = provisionSettings(sts);
    if (!settings) return;
    const log = this.host.log.child({ controller: "provision", namespace: ns, name: podName });
    const key = `provision/${ns}/${podName}`;
    // A ReplicatorRestore this operator created and the informer has not shown yet.
    if (!this.host.expectations.satisfied(key)) {
      this.host.queue.addAfter(key, this.host.expectations.remainingMs(key));
      return;
    }
    if ("error" in settings) {
      await this.host.setGate(pod, "False", "InvalidAnnotation", settings.error);
      return;
    }
    const pvcObj = this.host.pvcs.get(`${ns}/${settings.dataVolume}-${podName}`);
    const pvc = pvcObj ? { name: pvcObj.metadata.name, uid: pvcObj.metadata.uid ?? "", annotations: pvcObj.metadata.annotations ?? {} } : undefined;
    const restoreName = pvc ? childName(podName, `provision-${pvc.uid.slice(0, 8)}`) : "";
    const restore = pvc ? this.host.restores.get(`${ns}/${restoreName}`) : undefined;
    const master = selectServerPod({ statefulSet: sts.metadata.name, role: "master", port: settings.port, credentialsSecret: { name: settings.credentialsSecret, userKey: "username", passwordKey: "password" } }, this.host.podsIn(ns));
    const observed = {
      podReady: isContainersReady(pod),
      isMaster: master.ok ? master.pod === podName : masterPodName(sts.metadata.name, this.host.podsIn(ns)) === podName,
      pvc,
      restore: restore ? { name: restore.metadata.name, status: restore.status } : undefined,
      gate: pod.status?.conditions?.find((c) => c.type === GATE_CONDITION)?.status as "True" | "False" | undefined,
      seed: undefined as SeedChoice | undefined,
      takesPlan: takesPlan(pod),
      plan: podPlan(pod),
      init: provisionInitResult(pod),
      replicating: undefined as { ok: boolean; message: string } | undefined,
      target: undefined as TargetReplication | undefined,
    };
    // A volume cloned from a snapshot backup: configured once its server runs (src/operator/controllers/snapshot).
    if (pvcObj && !observed.isMaster && (await this.snapshots.provisionSeeded(pod as SnapshotPod, pvcObj, settings, sts.metadata.name))) return;
    let plan: ProvisionPlan = decideProvision(observed);
    if (plan.kind === "needSeed") {
      observed.seed = await this.planSeed(ns, sts.metadata.name, settings, observed.takesPlan).catch((err: unknown): SeedChoice => ({ ok: false, reason: faultReason(err), message: oneLine(err) }));
      plan = decideProvision(observed);
    }
    if (plan.kind === "needReplicationCheck") {
      observed.replicating = await this.replicationOf(ns, pod, settings).catch((err: unknown) => ({ ok: false, message: oneLine(err) }));
      plan = decideProvision(observed);
    }
    if (plan.kind === "needTargetCheck") {
      observed.target = await this.targetReplication(ns, pod, settings).catch((err: unknown): TargetReplication => ({ error: oneLine(err) }));
      plan = decideProvision(observed);
    }
    switch (plan.kind) {
      case "needSeed":
      case "needReplicationCheck":
      case "needTargetCheck":
        return;
      case "setPlan": {
        const doc = plan.plan.action === "none" ? plan.plan : this.restorePlanDoc(ns, sts.metadata.name, settings, plan.plan.backup);
        if (!doc) return;
        await this.host.rest.patch(nsPath("/api/v1", ns, "pods", podName), { metadata: { annotations: { [PLAN_ANNOTATION]: JSON.stringify(doc) } } });
        if (plan.plan.action === "restore") {
          await this.host.event(
            { apiVersion: "v1", kind: "Pod", metadata: pod.metadata },
            "Normal",
            "Provisioning",
            `volume ${pvc?.name ?? "?"} has no provision marker: the init container restores ${plan.plan.backup} (position ${plan.plan.position}) before the server starts`,
          );
          await this.host.setGate(pod, "False", "Provisioning", `restoring ${plan.plan.backup} in the init container`);
          log.info({ backup: plan.plan.backup }, "provision plan handed to the init container");
        }
        if (plan.then === "markMaster" && pvc) {
          await this.host.markPvc(ns, pvc.name, "master");
          await this.host.setGate(pod, "True", "Master", "the master is not provisioned from a backup");
        }
        this.host.queue.addAfter(key, 2_000);
        return;
      }
      case "wait":
        if (plan.gate === "False") {
          const prev = pod.status?.conditions?.find((c) => c.type === GATE_CONDITION);
          if ((prev as { reason?: string } | undefined)?.reason !== plan.reason && WARNING_REASONS.has(plan.reason)) {
            await this.host.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Warning", plan.reason, plan.message);
          }
          await this.host.setGate(pod, "False", plan.reason, plan.message);
        }
        if (plan.requeueMs > 0) this.host.queue.addAfter(key, plan.requeueMs);
        return;
      case "markMaster":
        if (!pvc) return;
        await this.host.markPvc(ns, pvc.name, "master");
        await this.host.setGate(pod, "True", "Master", "the master is not provisioned from a backup");
        log.info({ pvc: pvc.name }, "master volume marked");
        return;
      case "openGate":
        await this.host.setGate(pod, "True", "Provisioned", plan.message);
        return;
      case "createRestore": {
        if (!pvc || !pvcObj) return;
        const isNewVolume = Object.keys(pvc.annotations).length === 0;
        const child = `ReplicatorRestore/${ns}/${restoreName}`;
        this.host.expectations.expectCreation(child, [key]);
        await this.host.rest
          .create(crPath("replicatorrestores", ns), {
            apiVersion: API_VERSION,
            kind: "ReplicatorRestore",
            metadata: {
              name: restoreName,
              namespace: ns,
              labels: { [PROVISION_POD_LABEL]: podName, "replicator.dev/cluster": settings.cluster },
              ownerReferences: [{ apiVersion: "v1", kind: "PersistentVolumeClaim", name: pvc.name, uid: pvc.uid, controller: false, blockOwnerDeletion: false }],
            },
            spec: {
              repository: settings.repository,
              cluster: settings.cluster,
              backup: plan.backup,
              target: { pod: podName, port: settings.port, credentialsSecret: { name: settings.credentialsSecret } },
              replicateFrom: { statefulSet: sts.metadata.name, role: "master", port: settings.port, credentialsSecret: { name: settings.replicationSecret } },
            },
          })
          .catch((err: unknown) => {
            if (!isAlreadyExists(err)) {
              this.host.expectations.creationFailed(child);
              throw err;
            }
            if (this.host.restores.get(`${ns}/${restoreName}`)) this.host.expectations.observed(child);
          });
        log.info({ backup: plan.backup, restore: restoreName }, "provisioning started");
        await this.host.event(
          { apiVersion: "v1", kind: "Pod", metadata: pod.metadata },
          "Normal",
          "Provisioning",
          `volume ${pvc.name} has no provision marker${isNewVolume ? " (a new volume)" : ""}: restoring ${plan.backup} (position ${plan.position})` +
            (plan.bridge ? `, replaying the archived binlogs ${plan.bridge.binlogs.join(", ")} the master has purged (through GTID ${plan.bridge.through}),` : "") +
            " and replicating from the master",
        );
        await this.host.setGate(pod, "False", "Provisioning", `restoring ${plan.backup}`);
        this.host.queue.addAfter(key, 5_000);
        return;
      }
      case "markProvisioned": {
        if (!pvc) return;
        // The marker first: once it is written, this volume is never restored again.
        await this.host.markPvc(ns, pvc.name, plan.backup);
        await this.host.setGate(pod, "True", "Provisioned", plan.message);
        const created = pod.metadata.creationTimestamp ? Date.parse(pod.metadata.creationTimestamp) : Date.now();
        this.host.metrics.provisioned(ns, settings.cluster, (Date.now() - created) / 1000, restore?.status?.secondsBehindMaster);
        await this.host.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Normal", "Provisioned", `${plan.message}; volume ${pvc.name} marked`);
        log.info({ backup: plan.backup, pvc: pvc.name }, "slave provisioned");
        return;
      }
      case "retry": {
        this.host.metrics.provisionFailed(ns, settings.cluster);
        await this.host.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Warning", plan.reason, `${plan.message}; retrying in 30s`);
        await this.host.setGate(pod, "False", plan.reason, plan.message);
        // The failed restore left its sentinel: the next attempt redoes it.
        await this.host.rest.delete(crPath("replicatorrestores", ns, restoreName), { propagationPolicy: "Background" }).catch((err: unknown) => {
          if (!isNotFound(err)) throw err;
        });
        this.host.queue.addAfter(key, 30_000);
        return;
      }
    }
  }

  /** The newest backup whose position the master can still serve. */
  private async planSeed(ns: string, sts: string, s: ProvisionSettings, physicalOk = false): Promise<SeedChoice> {
    const repoObj = this.host.repositories.get(`${ns}/${s.repository}`);
    if (!repoObj) return { ok: false, reason: "StorageUnreachable", message: `ReplicatorRepository ${s.repository} not found` };
    const spec = validateSpec(repositorySpecSchema, repoObj.spec);
    if (!spec.ok) return { ok: false, reason: "StorageUnreachable", message: `ReplicatorRepository ${s.repository}: ${spec.message}` };
    const store = await this.host.openStore(ns, spec.value);
    if (!store) return { ok: false, reason: "StorageUnreachable", message: `provisioning needs an S3 repository; ${s.repository} is a filesystem repository` };
    for (const [name, what] of [[s.credentialsSecret, "replicator.dev/credentials-secret"], [s.replicationSecret, "replicator.dev/replication-secret"]] as const) {
      const problem = secretProblem(
        name,
        await observeSecretKeys(this.host.rest, ns, name),
        [{ key: "username", field: "read by the operator" }, { key: "password", field: "read by the operator" }],
        `annotation ${what} of StatefulSet ${sts}`,
        `The operator reads the keys username and password of the Secret named by ${what}; add them`,
      );
      if (problem) return { ok: false, reason: "SecretInvalid", message: problem };
    }
    // Throws on a storage fault (no partial listing): never an older backup chosen, never "NoBackup" (the caller reports the fault).
    const repository = new Repository(store, s.cluster);
    const { backups } = await repository.list();
    const chosen = (s.backup === "latest" ? backups : backups.filter((b) => b.name === s.backup)).reverse();
    const all = chosen.filter((b) => b.manifest.replication);
    // A backup without a position can never seed a slave: say why there is none, never just "take a backup".
    if (all.length === 0) {
      const noPosition = await this.whyNoPosition(ns, sts, s, chosen[0]);
      if (noPosition) return noPosition;
    }
    // A snapshot seeds only a volume created from it (the StatefulSet's spare, src/operator/controllers/snapshot), never a pod's existing volume.
    const named = all.filter((b) => b.manifest.kind !== "snapshot");
    if (named.length === 0 && all.length > 0) {
      return {
        ok: false,
        reason: "NoBackup",
        message: `the backups that could seed this slave are volume snapshots (${all[0]?.name ?? ""}), which seed only a volume cloned from them: this pod's volume was created empty. The operator keeps the next ordinal's volume pre-created from the newest snapshot; scale one at a time, or delete this pod and its PVC, or take a logical backup`,
      };
    }
    // Physical backups are restored before the server starts: only by the init container.
    const candidates = physicalOk ? named : named.filter((b) => b.manifest.kind === "logical");
    if (candidates.length === 0 && named.length > 0) {
      return {
        ok: false,
        reason: "NeedsInitContainer",
        message: `the backups that could seed this slave are physical (${named[0]?.name ?? ""}): add the replicator provision init container to StatefulSet ${sts} (docs/provisioning.md), or take a logical backup`,
      };
    }
    if (candidates.length === 0) {
      return {
        ok: false,
        reason: "NoBackup",
        message:
          s.backup === "latest"
            ? `no backup of cluster ${s.cluster} with a replication position in repository ${s.repository}; take one: kubectl replicator backup ${sts}`
            : `backup ${s.backup} not found in repository ${s.repository}; fix the ${PROVISION_ANNOTATION} annotation or use latest`,
      };
    }
    const master = selectServerPod({ statefulSet: sts, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.podsIn(ns));
    if (!master.ok) return { ok: false, reason: "MasterNotReady", message: master.message };
    let c: Awaited<ReturnType<OperatorHost["connectWith"]>>;
    try {
      c = await this.host.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    } catch (err) {
      return { ok: false, reason: "MasterNotReady", message: oneLine(err) };
    }
    try {
      // The archive is read once, and only when the master has purged binlogs a backup needs; a storage fault is thrown (reported as such by the caller).
      let archives: ArchiveChain[] | undefined;
      const seen: SeedCandidate[] = [];
      for (const b of candidates) {
        const pos = b.manifest.replication;
        if (!pos) continue;
        const check = await checkMasterCanServe(c, pos, `master ${master.pod}`);
        const candidate: SeedCandidate = { backup: b.name, position: positionText(pos) ?? "-", kind: b.manifest.kind, serve: check };
        if (!check.ok && check.purged && pos.gtid) {
          archives ??= await observeArchiveChains(repository, this.archiveIndexes);
          const d = decideBridge(archives, pos.gtid, check.purged, b.name, `${repository.where}/binlogs`);
          candidate.bridge = d.ok ? { ok: true, binlogs: d.plan.files.map((f) => f.file), through: d.plan.endState, where: d.plan.where } : { ok: false, message: d.message };
        }
        seen.push(candidate);
        if (seedFrom(candidate)) break;
      }
      return chooseSeed(seen);
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /**
   * No stored backup has a replication position: is binary logging off on the
   * master now (then a new backup would not help either), or was it off when
   * the newest backup was taken? Undefined when neither is known.
   */
  private async whyNoPosition(ns: string, sts: string, s: ProvisionSettings, newest: { name: string; source: string; manifest: { source: { role: string } } } | undefined): Promise<SeedChoice | undefined> {
    const master = selectServerPod({ statefulSet: sts, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.podsIn(ns));
    if (master.ok) {
      const logBin = await this.host
        .connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`)
        .then(async (c) => {
          try {
            // @@log_bin alone: any user may read it (the replication user may not run SHOW SLAVE STATUS).
            const [row] = await queryRows<{ b: number | string }>(c, "SELECT @@log_bin AS b");
            return Number(row?.b) === 1;
          } finally {
            await c.end().catch(() => undefined);
          }
        })
        .catch(() => undefined);
      if (logBin === false) {
        return {
          ok: false,
          reason: "BinaryLoggingOff",
          message: `binary logging is off on the master ${master.pod}: no backup of it has a replication position, so none can seed a slave; set log_bin and server_id in ${master.pod}'s server configuration, restart it, then take a backup: kubectl replicator backup ${sts}`,
        };
      }
    }
    if (newest && newest.manifest.source.role === "standalone") {
      return {
        ok: false,
        reason: "BinaryLoggingOff",
        message: `the newest backup of cluster ${s.cluster}, ${newest.name}, has no replication position: binary logging was off on ${newest.source} when it was taken; with log_bin and server_id set on the master, take a new backup: kubectl replicator backup ${sts}`,
      };
    }
    return undefined;
  }

  /** The pod's own server: is replication configured on it already? Asked before a logical backup is loaded into it. */
  private async targetReplication(ns: string, pod: PodObj, s: ProvisionSettings): Promise<TargetReplication> {
    const address = pod.status?.podIP;
    if (!address) return { error: "the pod has no IP yet" };
    const c = await this.host.connectWith(ns, { name: s.credentialsSecret }, address, s.port, `pod ${pod.metadata.name}`);
    try {
      const st = await getSlaveStatus(c);
      if (!st) return { configured: false };
      return { configured: true, master: `${st.masterHost}:${st.masterPort}`, io: st.ioRunning, sql: st.sqlRunning };
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** The plan for a pod's init container: where the backup is, and which master to follow. */
  private restorePlanDoc(ns: string, stsName: string, s: ProvisionSettings, backup: string): ProvisionPlanDoc | undefined {
    const repoObj = this.host.repositories.get(`${ns}/${s.repository}`);
    const spec = repoObj ? validateSpec(repositorySpecSchema, repoObj.spec) : undefined;
    if (!spec?.ok) return undefined;
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.podsIn(ns));
    if (!master.ok) return undefined;
    const s3 = spec.value.s3;
    return {
      action: "restore",
      backup,
      repository: repositoryUrl(spec.value),
      cluster: s.cluster,
      ...(s3 ? { s3: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: s3.endpoint ? true : undefined } } : {}),
      master: serverUrl(this.host.masterAddress(ns, master), s.port),
    };
  }

  /** Is the pod's server replicating (both threads running)? Asked after a physical restore. */
  private async replicationOf(ns: string, pod: PodObj, s: ProvisionSettings): Promise<{ ok: boolean; message: string }> {
    const address = pod.status?.podIP;
    if (!address) return { ok: false, message: "the pod has no IP yet" };
    const c = await this.host.connectWith(ns, { name: s.credentialsSecret }, address, s.port, `pod ${pod.metadata.name}`);
    try {
      const st = await getSlaveStatus(c);
      if (!st) return { ok: false, message: "the server has no replication configured" };
      if (st.ioRunning && st.sqlRunning) return { ok: true, message: "" };
      return { ok: false, message: `replication is not running (IO ${st.ioRunning ? "running" : "stopped"}, SQL ${st.sqlRunning ? "running" : "stopped"})${st.lastIoError || st.lastSqlError ? `: ${st.lastIoError || st.lastSqlError}` : ""}` };
    } finally {
      await c.end().catch(() => undefined);
    }
  }
}
