// The operator's runtime: informers feed a per-object queue; each reconcile
// observes, asks the pure `decide*` what to do, acts, and writes status only
// when it changed. It never moves backup bytes: Jobs do. It reads storage
// listings (catalog sync, retention) and sends small control statements.
import {
  API_VERSION,
  GROUP,
  VERSION,
  backupSpecSchema,
  repositorySpecSchema,
  restoreSpecSchema,
  validateSpec,
  type BackupStatus,
  type ReplicatorBackup,
  type ReplicatorRepository,
  type ReplicatorRestore,
  type RepositorySpec,
  type RepositoryStatus,
  type ServerRef,
} from "../api/v1alpha1.js";
import type { Logger } from "../lib/log.js";
import { oneLine } from "../lib/errors.js";
import { connect } from "../db/connection.js";
import { getSlaveStatus } from "../db/replication.js";
import { formatBytes, formatStamp, positionText, type BackupEntry } from "../storage/catalog.js";
import { parseCron } from "./cron.js";
import { decideScheduleRun } from "./controllers/schedule/decide.js";
import { openRepository } from "../storage/open.js";
import { Repository } from "../storage/repository.js";
import {
  LOCAL_DATA_METHODS,
  buildBackupJob,
  buildRestoreJob,
  childName,
  dataVolumeOf,
  repositoryUrl,
  serverUrl,
  type DataVolumeMount,
  type JobSettings,
  type Owner,
} from "./builders/jobs.js";
import { sameStatus, setCondition } from "./conditions.js";
import { computeBackupStatus, decideBackup, type BackupPlan } from "./controllers/backup/decide.js";
import { computeRestoreStatus, decideRestore } from "./controllers/restore/decide.js";
import { decideCatalogSync, faultReason, syncMessage, type CatalogObserved, type CatalogPlan, type ClusterListing, type MirrorResource } from "./controllers/catalog/decide.js";
import {
  GATE_CONDITION,
  PLAN_ANNOTATION,
  PROVISION_ANNOTATION,
  PROVISIONED_ANNOTATION,
  PROVISIONED_AT_ANNOTATION,
  decideProvision,
  provisionSettings,
  type ProvisionPlan,
  type ProvisionSettings,
  type SeedChoice,
} from "./controllers/provision/decide.js";
import { checkMasterCanServe, setOffline, setOnline } from "../db/replication.js";
import { podPlan, provisionInitResult, takesPlan, type ProvisionPod } from "./controllers/provision/observe.js";
import type { ProvisionPlanDoc } from "../api/provision-plan.js";
import { Informer, keyOf } from "../kube/informer.js";
import { RateLimitedQueue } from "./runtime/queue.js";
import { Expectations } from "./runtime/expectations.js";
import { isAlreadyExists, isNotFound, type KubeRest } from "../kube/rest.js";
import type { Metrics } from "./metrics.js";
import { isContainersReady, jobState, masterPodName, selectServerPod, serverPortOf, stableAddress, type JobLike, type PodLike } from "./observe.js";
import { SnapshotController, isSnapshotBackup, volumeOnlyBackup, type RestoreSpecWithVolume, type SnapshotPod } from "./snapshot/controller.js";

export const IMPORTED_ANNOTATION = "replicator.dev/imported";
const PROVISION_POD_LABEL = "replicator.dev/provision-pod";
/** Backups younger than this are not mirrored yet: their own resource may not have recorded them. */
const IMPORT_GRACE_MS = 30_000;
/** On a ReplicatorBackup: False when its backup is in storage but cannot be used (corrupt or unknown-format manifest). */
export const USABLE_CONDITION = "Usable";
/** The first retry of a failed catalog sync; it doubles up to the sync interval. */
const SYNC_RETRY_BASE_MS = 5_000;
/** On a pod: `offline` or `online`; the operator runs STOP SLAVE / START SLAVE. */
export const REPLICATION_ANNOTATION = "replicator.dev/replication";
/** The pod condition that reports it: True when replicating (online), False when stopped (offline). */
export const REPLICATION_CONDITION = "replicator.dev/replicating";

interface StatefulSetObj {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec?: { serviceName?: string; volumeClaimTemplates?: { metadata?: { name?: string } }[] };
}

interface PvcObj {
  metadata: { name: string; namespace: string; uid?: string; annotations?: Record<string, string>; creationTimestamp?: string };
}

type PodObj = PodLike &
  ProvisionPod & {
    metadata: { name: string; namespace: string; uid?: string; creationTimestamp?: string; annotations?: Record<string, string> };
    spec?: { readinessGates?: { conditionType: string }[] };
  };

/** A label value: at most 63 characters, alphanumeric at both ends. */
const labelValue = (s: string): string => s.toLowerCase().replace(/[^a-z0-9._-]/g, "-").slice(0, 63).replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");

function ownerSts(p: PodLike): string | undefined {
  return p.metadata.ownerReferences?.find((o) => o.kind === "StatefulSet")?.name;
}
const BACKUP_NAME_LABEL = "replicator.dev/backup-name";

export interface OperatorSettings {
  namespace: string | undefined;
  /**
   * How a slave is pointed at its master: "dns" uses the master pod's stable
   * name (<pod>.<serviceName>.<namespace>.svc) when it belongs to a StatefulSet
   * with a serviceName, so replication survives the master pod getting a new
   * IP; "podIP" uses the IP (for clusters without DNS, like the test bench).
   */
  addressMode: "dns" | "podIP";
  jobs: JobSettings;
  resyncMs: number;
  /** The watches' server-side timeout; unset: 5-10 min, as client-go. The watchdog restarts a watch silent for twice it. */
  watchTimeoutSeconds?: number;
  /** Throws unless this process may act now (leader election); called before a database session is opened. */
  fence?: (what: string) => void;
}

interface SecretObj {
  metadata: { name: string };
  data?: Record<string, string>;
}

const crPath = (plural: string, ns?: string, name?: string): string =>
  `/apis/${GROUP}/${VERSION}${ns ? `/namespaces/${ns}` : ""}/${plural}${name ? `/${name}` : ""}`;
const nsPath = (base: string, ns: string | undefined, plural: string, name?: string): string =>
  `${base}${ns ? `/namespaces/${ns}` : ""}/${plural}${name ? `/${name}` : ""}`;

export class Operator {
  private readonly backups: Informer<ReplicatorBackup>;
  private readonly restores: Informer<ReplicatorRestore>;
  private readonly repositories: Informer<ReplicatorRepository>;
  private readonly jobs: Informer<JobLike & { metadata: { name: string; namespace: string } }>;
  private readonly pods: Informer<PodObj>;
  private readonly statefulSets: Informer<StatefulSetObj>;
  private readonly pvcs: Informer<PvcObj>;
  /** Per-object keys, at most one worker each; failures back off (runtime/queue.ts). */
  private readonly queue = new RateLimitedQueue();
  /** Children created and not yet seen by their informer (runtime/expectations.ts). */
  private readonly expectations = new Expectations();
  /** Consecutive failed catalog syncs, by queue key: the retry backs off. */
  private readonly syncFailures = new Map<string, number>();
  /** When each repository's catalog was last listed (monotonic ms) and at which generation. */
  private readonly lastSync = new Map<string, { at: number; generation: number }>();
  /** The volumesnapshot method: snapshot backups, spare volumes, clones (src/operator/snapshot). */
  private readonly snapshots: SnapshotController;

  constructor(
    private readonly rest: KubeRest,
    private readonly log: Logger,
    private readonly settings: OperatorSettings,
    private readonly metrics: Metrics,
    private readonly now: () => Date = () => new Date(),
  ) {
    const ns = settings.namespace;
    const opts = { resyncMs: settings.resyncMs, ...(settings.watchTimeoutSeconds ? { watchTimeoutSeconds: settings.watchTimeoutSeconds } : {}) };
    this.backups = new Informer(rest, crPath("replicatorbackups", ns), (k) => { this.queue.add(`backup/${k}`); }, log, opts);
    this.restores = new Informer(
      rest,
      crPath("replicatorrestores", ns),
      (k, r) => {
        this.expectations.observed(`ReplicatorRestore/${k}`);
        this.queue.add(`restore/${k}`);
        const pod = r?.metadata.labels?.[PROVISION_POD_LABEL];
        if (pod) this.queue.add(`provision/${r.metadata.namespace}/${pod}`);
      },
      log,
      opts,
    );
    this.repositories = new Informer(rest, crPath("replicatorrepositories", ns), (k) => { this.queue.add(`repository/${k}`); }, log, opts);
    this.jobs = new Informer(
      rest,
      nsPath("/apis/batch/v1", ns, "jobs"),
      (k, job) => {
        this.expectations.observed(`Job/${k}`);
        for (const o of job?.metadata.ownerReferences ?? []) {
          if (o.kind === "ReplicatorBackup") this.queue.add(`backup/${job?.metadata.namespace ?? ""}/${o.name}`);
          if (o.kind === "ReplicatorRestore") this.queue.add(`restore/${job?.metadata.namespace ?? ""}/${o.name}`);
        }
        // A backup Job that ended frees its pod: the backups queued behind it go now, not at their next poll.
        if (job && job.metadata.labels?.["replicator.dev/operation"] === "backup" && jobState(job).state !== "running") {
          const pod = job.metadata.labels["replicator.dev/source-pod"];
          for (const b of this.backups.list()) {
            if (b.metadata.namespace === job.metadata.namespace && b.status?.phase === "Pending" && b.status.message?.includes(`on pod ${pod ?? ""}:`)) this.queue.add(`backup/${keyOf(b)}`);
          }
        }
        // A provisioning restore's progress moves its pod along.
        const target = job?.metadata.labels?.["replicator.dev/source-pod"];
        if (target && job.metadata.labels?.["replicator.dev/operation"] === "restore") this.queue.add(`provision/${job.metadata.namespace}/${target}`);
      },
      log,
      { ...opts, labelSelector: "app.kubernetes.io/managed-by=replicator-operator" },
    );
    this.pods = new Informer(
      rest,
      nsPath("/api/v1", ns, "pods"),
      (k, pod) => {
        if (!pod) return;
        this.enqueueProvision(pod);
        if (pod.metadata.annotations?.[REPLICATION_ANNOTATION]) this.queue.add(`replication/${k}`);
      },
      log,
      opts,
    );
    this.statefulSets = new Informer(
      rest,
      nsPath("/apis/apps/v1", ns, "statefulsets"),
      (_k, sts) => {
        if (!sts?.metadata.annotations?.[PROVISION_ANNOTATION]) return;
        this.snapshots.statefulSetChanged(sts.metadata.namespace, sts);
        for (const p of this.pods.list()) if (p.metadata.namespace === sts.metadata.namespace && ownerSts(p) === sts.metadata.name) this.enqueueProvision(p);
      },
      log,
      opts,
    );
    this.pvcs = new Informer(rest, nsPath("/api/v1", ns, "persistentvolumeclaims"), () => undefined, log, opts);
    this.snapshots = new SnapshotController({
      rest,
      log,
      metrics,
      now,
      enqueue: (key, afterMs) => {
        if (afterMs) this.queue.addAfter(key, afterMs);
        else this.queue.add(key);
      },
      pod: (n, name) => this.pods.get(`${n}/${name}`) as SnapshotPod | undefined,
      pods: (n) => this.podsIn(n) as SnapshotPod[],
      pvc: (n, name) => this.pvcs.get(`${n}/${name}`),
      pvcs: (n) => this.pvcs.list().filter((p) => p.metadata.namespace === n),
      statefulSet: (n, name) => this.statefulSets.get(`${n}/${name}`),
      repository: (n, name) => {
        const r = this.repoObserved(n, name);
        return r.found && r.spec.ok ? r.spec.value : undefined;
      },
      openStore: (n, repo) => this.openStore(n, repo),
      secret: (n, name) => this.secretReader(n, name),
      connectWith: (n, secret, host, port, what) => this.connectWith(n, secret, host, port, what),
      masterAddress: (n, master) => this.masterAddress(n, master),
      event: (obj, type, reason, message) => this.event(obj, type, reason, message),
      setGate: (pod, status, reason, message) => this.setGate(pod, status, reason, message),
      markPvc: (n, name, backup) => this.markPvc(n, name, backup),
    });
  }

  /** Each informer's request and resync totals, for /metrics. */
  recordInformerStats(): void {
    const all = { pods: this.pods, jobs: this.jobs, replicatorrepositories: this.repositories, replicatorbackups: this.backups, replicatorrestores: this.restores, statefulsets: this.statefulSets, persistentvolumeclaims: this.pvcs };
    for (const [resource, inf] of Object.entries(all)) {
      this.metrics.setTotal("replicator_informer_lists_total", { resource }, inf.stats.lists);
      this.metrics.setTotal("replicator_informer_watches_total", { resource }, inf.stats.watches);
      this.metrics.setTotal("replicator_informer_watchdog_restarts_total", { resource }, inf.stats.watchdogRestarts);
      this.metrics.setTotal("replicator_informer_resyncs_total", { resource }, inf.stats.resyncs);
    }
  }

  get ready(): boolean {
    return (
      this.backups.hasSynced &&
      this.restores.hasSynced &&
      this.repositories.hasSynced &&
      this.jobs.hasSynced &&
      this.pods.hasSynced &&
      this.statefulSets.hasSynced &&
      this.pvcs.hasSynced
    );
  }

  async run(signal: AbortSignal): Promise<void> {
    const informers = [this.pods, this.jobs, this.repositories, this.backups, this.restores, this.statefulSets, this.pvcs].map((i) => i.run(signal));
    signal.addEventListener("abort", () => { this.queue.stop(); }, { once: true });
    // Let the caches fill before acting on anything.
    while (!this.ready && !signal.aborted) await new Promise((r) => setTimeout(r, 100));
    // A failed reconcile is retried with per-key exponential backoff (5 ms doubling to 5 min), forgotten on success.
    const work = this.queue.run(
      2,
      (key) => this.reconcile(key),
      (key, err, retryInMs) => { this.log.warn({ key, err: oneLine(err), retryInMs }, "reconcile failed; retrying"); },
    );
    await Promise.all([...informers, work]);
  }

  private async reconcile(key: string): Promise<void> {
    const [kind, ns, name] = key.split("/");
    if (!kind || ns === undefined || !name) return;
    switch (kind) {
      case "backup":
        return this.reconcileBackup(ns, name);
      case "restore":
        return this.reconcileRestore(ns, name);
      case "repository":
        return this.reconcileRepository(ns, name);
      case "provision":
        return this.reconcileProvision(ns, name);
      case "replication":
        return this.reconcileReplication(ns, name);
      case "snapshot-spare":
        return this.reconcileSnapshotSpare(ns, name);
      default:
        return;
    }
  }

  private podsIn(ns: string): PodLike[] {
    return this.pods.list().filter((p) => p.metadata.namespace === ns);
  }

  private jobPods(ns: string, jobName: string): PodLike[] {
    return this.podsIn(ns).filter((p) => p.metadata.labels?.["job-name"] === jobName || p.metadata.labels?.["batch.kubernetes.io/job-name"] === jobName);
  }

  private repoObserved(ns: string, name: string) {
    const r = this.repositories.get(`${ns}/${name}`);
    if (!r) return { found: false as const };
    return { found: true as const, spec: validateSpec(repositorySpecSchema, r.spec) };
  }

  // ------------------------------------------------------------ backups

  private async reconcileBackup(ns: string, name: string): Promise<void> {
    const b = this.backups.get(`${ns}/${name}`);
    if (!b || b.metadata.deletionTimestamp) return;
    const log = this.log.child({ controller: "backup", namespace: ns, name });
    const jobName = childName(name, "backup");
    const ownerKey = `backup/${ns}/${name}`;
    // A Job this operator created and the informer has not shown yet: wait for it (runtime/expectations.ts).
    if (!this.expectations.satisfied(ownerKey)) {
      this.queue.addAfter(ownerKey, this.expectations.remainingMs(ownerKey));
      return;
    }
    // A snapshot backup this process ran (or one a previous process left Running).
    const snap = await this.snapshots.beforeDecide(b);
    if (snap === "busy") return;
    // From here to the recorded expectation below nothing awaits: two workers never both see a pod free.
    const busyPods = this.busyBackupPods(ns, jobName);
    const spec = validateSpec(backupSpecSchema, b.spec);
    const plan = snap ?? decideBackup({
      spec,
      status: b.status,
      generation: b.metadata.generation ?? 0,
      repository: this.repoObserved(ns, spec.ok ? spec.value.repository : (b.spec.repository ?? "default")),
      job: this.jobs.get(`${ns}/${jobName}`),
      jobPods: this.jobPods(ns, jobName),
      pods: this.podsIn(ns),
      busyPods,
      imported: b.metadata.annotations?.[IMPORTED_ANNOTATION] === "true",
    });
    if (plan.kind === "done") {
      log.debug({}, "nothing to do");
      return;
    }
    if (plan.kind === "createJob" && !isSnapshotBackup(plan.spec.method ?? plan.repo.method)) {
      this.expectations.expectCreation(`Job/${ns}/${jobName}`, [ownerKey, `pod/${ns}/${plan.sourcePod}`]);
    }
    if (plan.kind === "createJob" && isSnapshotBackup(plan.spec.method ?? plan.repo.method)) {
      // No Job: the operator takes the snapshot itself, and records the outcome when it ends.
      const early = await this.snapshots.start(b, plan);
      if (early) await this.finishSnapshotBackup(b, early, log);
      return;
    }
    if (snap) return this.finishSnapshotBackup(b, snap, log);
    await this.actBackup(b, plan, jobName, log);
    const status = computeBackupStatus(b.status, plan, this.now(), b.metadata.generation ?? 0, jobName);
    if (status && !sameStatus(status, b.status)) {
      await this.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status });
      if (status.phase !== b.status?.phase) log.info({ phase: status.phase, reason: status.conditions?.find((c) => c.type === "Ready")?.reason }, "backup phase changed");
    }
  }

  /**
   * Backup Jobs running against each pod of a namespace: those in the Job
   * cache, those created and not yet in it (expectations), and the operator's
   * own snapshot backups. Pod name → Job names.
   */
  private busyBackupPods(ns: string, ownJob: string): Map<string, string[]> {
    const busy = new Map<string, string[]>();
    const add = (pod: string, job: string): void => {
      const list = busy.get(pod) ?? [];
      if (!list.includes(job)) list.push(job);
      busy.set(pod, list);
    };
    for (const j of this.jobs.list()) {
      if (j.metadata.namespace !== ns || j.metadata.name === ownJob) continue;
      if (j.metadata.labels?.["replicator.dev/operation"] !== "backup" || jobState(j).state !== "running") continue;
      const pod = j.metadata.labels["replicator.dev/source-pod"];
      if (pod) add(pod, j.metadata.name);
    }
    for (const p of this.podsIn(ns)) {
      for (const child of this.expectations.pending(`pod/${ns}/${p.metadata.name}`)) {
        const job = child.slice(child.lastIndexOf("/") + 1);
        if (job !== ownJob) add(p.metadata.name, job);
      }
    }
    for (const [pod, names] of this.snapshots.busyPods(ns)) for (const n of names) add(pod, n);
    return busy;
  }

  /** Record a snapshot backup's outcome like a Job's (events, metrics, retention, status), without a Job name. */
  private async finishSnapshotBackup(b: ReplicatorBackup, plan: BackupPlan, log: Logger): Promise<void> {
    const { namespace: ns, name } = b.metadata;
    await this.actBackup(b, plan, "", log);
    const status = computeBackupStatus(b.status, plan, this.now(), b.metadata.generation ?? 0);
    if (status) {
      delete status.jobName;
      await this.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status });
      log.info({ phase: status.phase, reason: status.conditions?.find((c) => c.type === "Ready")?.reason }, "backup phase changed");
    }
    this.snapshots.recorded(b);
  }

  private async reconcileSnapshotSpare(ns: string, stsName: string): Promise<void> {
    const sts = this.statefulSets.get(`${ns}/${stsName}`);
    const settings = sts ? provisionSettings(sts) : undefined;
    if (!settings || "error" in settings) return;
    await this.snapshots.reconcileSpare(ns, stsName, settings);
  }

  private owner(o: ReplicatorBackup | ReplicatorRestore): Owner {
    return { apiVersion: API_VERSION, kind: o.kind, name: o.metadata.name, namespace: o.metadata.namespace, uid: o.metadata.uid ?? "" };
  }

  private async actBackup(b: ReplicatorBackup, plan: BackupPlan, jobName: string, log: Logger): Promise<void> {
    const ns = b.metadata.namespace;
    switch (plan.kind) {
      case "done":
      case "running":
        return;
      case "invalid":
        await this.event(b, "Warning", "InvalidSpec", plan.message);
        return;
      case "wait":
        if (b.status?.conditions?.find((c) => c.type === "Ready")?.reason !== plan.reason) await this.event(b, "Normal", plan.reason, plan.message);
        this.queue.addAfter(`backup/${ns}/${b.metadata.name}`, plan.requeueMs);
        return;
      case "createJob": {
        let dataVolume: DataVolumeMount | undefined;
        const method = plan.spec.method ?? plan.repo.method;
        if (LOCAL_DATA_METHODS.has(method)) {
          const src = this.pods.get(`${ns}/${plan.sourcePod}`) as Parameters<typeof dataVolumeOf>[0] | undefined;
          const dv = src ? dataVolumeOf(src) : { error: `pod ${plan.sourcePod} not found` };
          if ("error" in dv) {
            this.expectations.creationFailed(`Job/${ns}/${jobName}`);
            await this.event(b, "Warning", "NoDataVolume", `${method} backs up the data files of ${plan.sourcePod}: ${dv.error}`);
            this.queue.addAfter(`backup/${ns}/${b.metadata.name}`, 15_000);
            return;
          }
          dataVolume = dv;
        }
        const job = buildBackupJob({
          owner: this.owner(b),
          spec: plan.spec,
          repo: plan.repo,
          cluster: plan.cluster,
          sourcePod: plan.sourcePod,
          sourceAddress: plan.sourceAddress,
          settings: this.settings.jobs,
          dataVolume,
        });
        job.metadata.annotations = { "replicator.dev/source-role": plan.sourceRole };
        try {
          await this.rest.create(nsPath("/apis/batch/v1", ns, "jobs"), job);
          log.info({ job: jobName, source: plan.sourcePod }, "backup job created");
          await this.event(b, "Normal", "BackupStarted", `backup Job ${jobName} started on ${plan.sourcePod} (${plan.sourceRole})`);
        } catch (err) {
          // It is there already (a restart adopting its own Job): the next reconcile follows it.
          if (!isAlreadyExists(err)) {
            this.expectations.creationFailed(`Job/${ns}/${jobName}`);
            throw err;
          }
          if (this.jobs.get(`${ns}/${jobName}`)) this.expectations.observed(`Job/${ns}/${jobName}`);
          log.info({ job: jobName }, "backup job already exists; adopting it");
        }
        return;
      }
      case "succeeded": {
        this.metrics.backupFinished(ns, b.status?.cluster ?? "", "succeeded", plan.result);
        await this.event(b, "Normal", "BackupSucceeded", `backup ${plan.result.name ?? ""} stored: ${formatBytes(plan.result.size ?? 0)}, position ${plan.result.replication?.gtid ?? "-"}`);
        if (plan.result.name) {
          const dup = labelValue(plan.result.name);
          for (const other of this.backups.list()) {
            if (other.metadata.namespace !== ns || other.metadata.name === b.metadata.name) continue;
            if (other.metadata.annotations?.[IMPORTED_ANNOTATION] !== "true" || other.metadata.labels?.[BACKUP_NAME_LABEL] !== dup) continue;
            await this.rest.delete(crPath("replicatorbackups", ns, other.metadata.name)).catch((err: unknown) => {
              if (!isNotFound(err)) throw err;
            });
          }
        }
        await this.applyRetention(b, plan.repo, log).catch(async (err: unknown) => {
          log.warn({ err: oneLine(err) }, "retention failed");
          await this.event(b, "Warning", "RetentionFailed", oneLine(err));
        });
        return;
      }
      case "failed": {
        this.metrics.backupFinished(ns, b.status?.cluster ?? "", "failed", undefined);
        await this.event(b, "Warning", plan.reason || "BackupFailed", plan.message);
        // A slave that was taken offline for the backup must replicate again,
        // even when the Job was killed before it could restart it.
        const job = this.jobs.get(`${ns}/${plan.jobName}`);
        const role = (job as { metadata: { annotations?: Record<string, string> } } | undefined)?.metadata.annotations?.["replicator.dev/source-role"];
        if (plan.sourcePod && plan.spec.source && role === "slave") {
          await this.ensureReplicating(ns, plan.sourcePod, plan.spec.source, log).then(
            (restarted) => (restarted ? this.event(b, "Normal", "ReplicationRestarted", `replication restarted on ${plan.sourcePod ?? ""} after the failed backup`) : undefined),
            (err: unknown) => this.event(b, "Warning", "ReplicationNotRestarted", `could not restart replication on ${plan.sourcePod ?? ""}: ${oneLine(err)}`),
          );
        }
        return;
      }
    }
  }

  /** The address a slave should replicate from: a stable DNS name when there is one (see addressMode). */
  private masterAddress(ns: string, master: { pod: string; address: string }): string {
    const pod = this.pods.get(`${ns}/${master.pod}`);
    const stsName = pod ? ownerSts(pod) : undefined;
    const service = stsName ? this.statefulSets.get(`${ns}/${stsName}`)?.spec?.serviceName : undefined;
    return stableAddress(this.settings.addressMode, master.pod, ns, service, master.address);
  }

  /** Read a Secret's keys, decoded. */
  private async secretReader(ns: string, name: string): Promise<(key: string) => string | undefined> {
    const secret = await this.rest.get<SecretObj>(nsPath("/api/v1", ns, "secrets", name));
    return (k) => (secret.data?.[k] === undefined ? undefined : Buffer.from(secret.data[k], "base64").toString("utf8"));
  }

  /** A control connection to a server, as the user in a credentials Secret. */
  private async connectWith(
    ns: string,
    secret: { name: string; userKey?: string; passwordKey?: string },
    host: string,
    port: number,
    what: string,
  ): Promise<Awaited<ReturnType<typeof connect>>> {
    this.settings.fence?.(`a session to ${what}`);
    const get = await this.secretReader(ns, secret.name);
    return connect({ engine: "mysql", host, port, user: get(secret.userKey ?? "username") ?? "root", password: get(secret.passwordKey ?? "password") }, what);
  }

  /** START SLAVE on a pod if replication is configured but not running. Returns true if it had to. */
  private async ensureReplicating(ns: string, pod: string, ref: ServerRef, log: Logger): Promise<boolean> {
    const p = this.pods.get(`${ns}/${pod}`);
    const address = p?.status?.podIP;
    if (!address) return false;
    const c = await this.connectWith(ns, ref.credentialsSecret, address, ref.port, pod);
    try {
      const st = await getSlaveStatus(c);
      if (!st || (st.ioRunning && st.sqlRunning)) return false;
      await c.query("START SLAVE");
      log.info({ pod }, "replication restarted after a failed backup");
      return true;
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** Open a repository's storage with the credentials from its Secret (S3 only). */
  private async openStore(ns: string, repo: RepositorySpec): Promise<Repository["store"] | undefined> {
    if (!repo.s3) return undefined;
    let credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
    if (repo.s3.credentialsSecret) {
      const get = await this.secretReader(ns, repo.s3.credentialsSecret.name);
      credentials = { accessKeyId: get(repo.s3.credentialsSecret.accessKeyIdKey) ?? "", secretAccessKey: get(repo.s3.credentialsSecret.secretAccessKeyKey) ?? "" };
    }
    return await openRepository(repositoryUrl(repo), { endpoint: repo.s3.endpoint, region: repo.s3.region, credentials });
  }

  /** Backups that running restores use, by cluster: retention never deletes them. */
  private backupsInUse(ns: string, repoName: string): Set<string> {
    const used = new Set<string>();
    for (const r of this.restores.list()) {
      if (r.metadata.namespace !== ns || (r.spec.repository ?? "default") !== repoName) continue;
      if (r.status?.phase === "Running" && r.status.backupName) used.add(r.status.backupName);
    }
    // A plan handed to an init container: the backup is about to be restored (the agent's lease covers the rest).
    for (const p of this.pods.list()) {
      if (p.metadata.namespace !== ns) continue;
      const plan = podPlan(p);
      if (plan?.action !== "restore" || isContainersReady(p)) continue;
      used.add(plan.backup);
    }
    // Volumes cloned from snapshot backups that are not provisioned yet.
    for (const name of this.snapshots.backupsInUse(ns)) used.add(name);
    return used;
  }

  private async applyRetention(b: ReplicatorBackup, repo: RepositorySpec, log: Logger): Promise<void> {
    if (!repo.retention || !repo.s3) return;
    const ns = b.metadata.namespace;
    const store = await this.openStore(ns, repo);
    const cluster = b.status?.cluster ?? b.spec.cluster;
    if (!store || !cluster) return;
    const repository = new Repository(store, cluster);
    const snapshotRefs = await this.snapshots.snapshotRefs(repository);
    const { expire } = await repository.prune({ retain: repo.retention.keep, inUse: this.backupsInUse(ns, b.spec.repository ?? "default") });
    // A snapshot backup's data is its VolumeSnapshot: it goes with the backup.
    const deletedSnapshots = await this.snapshots.deleteSnapshots(expire, snapshotRefs);
    if (expire.length > 0) {
      log.info({ deleted: expire, keep: repo.retention.keep, volumeSnapshots: deletedSnapshots }, "retention applied");
      await this.event(
        b,
        "Normal",
        "RetentionApplied",
        `deleted ${expire.length} backup(s) beyond ${repo.retention.keep}: ${expire.join(", ")}${deletedSnapshots.length > 0 ? `; VolumeSnapshots ${deletedSnapshots.join(", ")}` : ""}`,
      );
    }
    await this.deleteBackupResources(ns, cluster, new Set(expire));
  }

  private async deleteBackupResources(ns: string, cluster: string, names: Set<string>): Promise<void> {
    if (names.size === 0) return;
    for (const r of this.backups.list()) {
      if (r.metadata.namespace !== ns || r.status?.cluster !== cluster || !r.status.backupName || !names.has(r.status.backupName)) continue;
      await this.rest.delete(crPath("replicatorbackups", ns, r.metadata.name)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
    }
  }

  // ------------------------------------------------------------ restores

  private async reconcileRestore(ns: string, name: string): Promise<void> {
    const r = this.restores.get(`${ns}/${name}`);
    if (!r || r.metadata.deletionTimestamp) return;
    const log = this.log.child({ controller: "restore", namespace: ns, name });
    const jobName = childName(name, "restore");
    const ownerKey = `restore/${ns}/${name}`;
    if (!this.expectations.satisfied(ownerKey)) {
      this.queue.addAfter(ownerKey, this.expectations.remainingMs(ownerKey));
      return;
    }
    const spec = validateSpec(restoreSpecSchema, r.spec);
    const volumeOnly = spec.ok && !spec.value.volume ? volumeOnlyBackup(spec.value.backup) : undefined;
    if (volumeOnly && r.status?.phase !== "Failed") {
      await this.event(r, "Warning", "InvalidSpec", volumeOnly);
      await this.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, {
        status: computeRestoreStatus(r.status, { kind: "invalid", message: volumeOnly }, this.now(), r.metadata.generation ?? 0),
      });
      return;
    }
    if (spec.ok && spec.value.volume) {
      // A volumesnapshot backup restored into a new PVC: no Job (src/operator/snapshot).
      const volumeSpec = { ...spec.value, volume: spec.value.volume } satisfies RestoreSpecWithVolume;
      const repoObs = this.repoObserved(ns, spec.value.repository);
      const status = await this.snapshots.reconcileVolumeRestore(r, volumeSpec, repoObs.found && repoObs.spec.ok ? repoObs.spec.value : undefined);
      if (status && !sameStatus(status, r.status)) {
        await this.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, { status });
        if (status.phase !== r.status?.phase) log.info({ phase: status.phase }, "restore phase changed");
        if (status.phase === "Failed") {
          this.metrics.restoreFinished(ns, "failed");
          await this.event(r, "Warning", status.conditions?.find((c) => c.type === "Ready")?.reason ?? "RestoreFailed", status.message ?? "");
        }
      }
      return;
    }
    const plan = decideRestore({
      spec,
      status: r.status,
      generation: r.metadata.generation ?? 0,
      repository: this.repoObserved(ns, spec.ok ? spec.value.repository : (r.spec.repository ?? "default")),
      job: this.jobs.get(`${ns}/${jobName}`),
      jobPods: this.jobPods(ns, jobName),
      pods: this.podsIn(ns),
    });
    switch (plan.kind) {
      case "done":
      case "running":
        break;
      case "invalid":
        await this.event(r, "Warning", "InvalidSpec", plan.message);
        break;
      case "wait":
        if (r.status?.conditions?.find((c) => c.type === "Ready")?.reason !== plan.reason) await this.event(r, "Normal", plan.reason, plan.message);
        this.queue.addAfter(`restore/${ns}/${name}`, plan.requeueMs);
        break;
      case "createJob": {
        const job = buildRestoreJob({
          owner: this.owner(r),
          spec: plan.spec,
          repo: plan.repo,
          targetPod: plan.targetPod,
          targetAddress: plan.targetAddress,
          masterAddress: plan.master ? this.masterAddress(ns, plan.master) : undefined,
          settings: this.settings.jobs,
        });
        this.expectations.expectCreation(`Job/${ns}/${jobName}`, [ownerKey]);
        try {
          await this.rest.create(nsPath("/apis/batch/v1", ns, "jobs"), job);
          log.info({ job: jobName, target: plan.targetPod }, "restore job created");
          await this.event(r, "Normal", "RestoreStarted", `restore Job ${jobName} started on ${plan.targetPod}`);
        } catch (err) {
          if (!isAlreadyExists(err)) {
            this.expectations.creationFailed(`Job/${ns}/${jobName}`);
            throw err;
          }
          if (this.jobs.get(`${ns}/${jobName}`)) this.expectations.observed(`Job/${ns}/${jobName}`);
        }
        break;
      }
      case "succeeded":
        this.metrics.restoreFinished(ns, "succeeded");
        await this.event(r, "Normal", "RestoreSucceeded", `restored ${plan.result.name ?? ""}${plan.result.replicating ? "; replicating" : ""}`);
        break;
      case "failed":
        this.metrics.restoreFinished(ns, "failed");
        await this.event(r, "Warning", plan.reason || "RestoreFailed", plan.message);
        break;
    }
    if (plan.kind === "done") return;
    const status = computeRestoreStatus(r.status, plan, this.now(), r.metadata.generation ?? 0, jobName);
    if (status && !sameStatus(status, r.status)) {
      await this.rest.patch(`${crPath("replicatorrestores", ns, name)}/status`, { status });
      if (status.phase !== r.status?.phase) log.info({ phase: status.phase }, "restore phase changed");
    }
  }

  // ------------------------------------------------------------ repositories: catalog sync

  private async reconcileRepository(ns: string, name: string): Promise<void> {
    const r = this.repositories.get(`${ns}/${name}`);
    if (!r || r.metadata.deletionTimestamp) return;
    const log = this.log.child({ controller: "repository", namespace: ns, name });
    const now = this.now();
    const gen = r.metadata.generation ?? 0;
    const status: RepositoryStatus = { ...(r.status ?? {}), observedGeneration: gen };
    const spec = validateSpec(repositorySpecSchema, r.spec);
    if (!spec.ok) {
      status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: "InvalidSpec", message: spec.message }, now, gen);
    } else {
      status.url = repositoryUrl(spec.value);
      const nextSchedule = await this.runSchedules(r, spec.value, status, now, log);
      const syncMs = spec.value.syncIntervalSeconds * 1000;
      const key = `repository/${ns}/${name}`;
      this.queue.addAfter(key, nextSchedule ? Math.max(1000, Math.min(syncMs, nextSchedule.getTime() - now.getTime() + 500)) : syncMs);
      // One listing per sync interval, whatever else wakes the repository up (a resync, a status write, a schedule).
      const last = this.lastSync.get(key);
      const syncStarted = performance.now();
      const fresh = last !== undefined && last.generation === gen && syncStarted - last.at < syncMs - 1_000;
      const plan = fresh
        ? "fresh"
        : await this.syncCatalog(r, spec.value, log).catch((err: unknown): CatalogPlan => ({ kind: "fault", reason: faultReason(err), message: oneLine(err) }));
      if (plan === "fresh") {
        log.debug({}, "catalog synced less than an interval ago");
      } else if (!plan) {
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "True", reason: "NotSynced", message: "filesystem repositories are not listed by the operator" }, now, gen);
      } else if (plan.kind === "fault") {
        // A fault is not a verdict: the catalog is left as it is, and the sync is retried with backoff.
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: plan.reason, message: plan.message }, now, gen);
        const failures = (this.syncFailures.get(key) ?? 0) + 1;
        this.syncFailures.set(key, failures);
        this.queue.addAfter(key, Math.min(syncMs, SYNC_RETRY_BASE_MS * 2 ** Math.min(failures - 1, 16)));
      } else {
        this.syncFailures.delete(key);
        // From its start: the timer set above fires one interval after it, and finds it due whatever the listing took.
        this.lastSync.set(key, { at: syncStarted, generation: gen });
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "True", reason: "Synced", message: syncMessage(plan) }, now, gen);
        status.backups = plan.total;
        status.lastSyncTime = now.toISOString();
      }
    }
    // lastSyncTime changes every sync; compare without it to avoid needless writes.
    const strip = (s: RepositoryStatus | undefined) => ({ ...(s ?? {}), lastSyncTime: undefined });
    if (!sameStatus(strip(status), strip(r.status)) || (status.lastSyncTime && !r.status?.lastSyncTime)) {
      await this.rest.patch(`${crPath("replicatorrepositories", ns, name)}/status`, { status });
    }
  }

  /** Create the ReplicatorBackup of every schedule that is due; returns the next due time. */
  private async runSchedules(r: ReplicatorRepository, spec: RepositorySpec, status: RepositoryStatus, now: Date, log: Logger): Promise<Date | undefined> {
    const ns = r.metadata.namespace;
    let next: Date | undefined;
    const out: NonNullable<RepositoryStatus["schedules"]> = [];
    for (const s of spec.schedules) {
      const prev = r.status?.schedules?.find((x) => x.name === s.name);
      const entry: NonNullable<RepositoryStatus["schedules"]>[number] = { ...(prev ?? {}), name: s.name };
      let cron;
      try {
        cron = parseCron(s.cron);
      } catch (err) {
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: "InvalidSchedule", message: `spec.schedules[${s.name}].cron: ${oneLine(err)}` }, now, r.metadata.generation ?? 0);
        out.push(entry);
        continue;
      }
      const { due, next: n } = decideScheduleRun(cron, prev, s.suspend, now);
      if (due) {
        const backupName = childName(`${r.metadata.name}-${s.name}`, formatStamp(due).toLowerCase().slice(0, 13));
        try {
          await this.rest.create(crPath("replicatorbackups", ns), {
            apiVersion: API_VERSION,
            kind: "ReplicatorBackup",
            metadata: { name: backupName, namespace: ns, labels: { "replicator.dev/schedule": s.name, "replicator.dev/repository": r.metadata.name } },
            spec: {
              repository: r.metadata.name,
              source: s.source,
              options: s.options,
              ...(s.cluster ? { cluster: s.cluster } : {}),
              ...(s.method ? { method: s.method } : {}),
            },
          });
          log.info({ schedule: s.name, backup: backupName }, "scheduled backup created");
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
        }
        entry.lastScheduleTime = due.toISOString();
        entry.lastBackup = backupName;
      }
      if (n) entry.nextScheduleTime = n.toISOString();
      if (n && (!next || n < next)) next = n;
      out.push(entry);
    }
    if (out.length > 0) status.schedules = out;
    return next;
  }

  /**
   * Mirror storage as resources (rules: controllers/catalog/decide.ts): a
   * complete backup with no ReplicatorBackup gets one (phase Completed,
   * imported); a Completed resource whose backup is absent from a complete,
   * successful listing is deleted; a backup whose manifest is corrupt or of a
   * newer format keeps its resource, flagged `Usable=False`. A storage fault
   * (the listing or any manifest could not be read) changes nothing and is
   * thrown, so the repository's condition says it and the sync is retried.
   * Returns undefined for repositories the operator cannot list.
   */
  private async syncCatalog(repoObj: ReplicatorRepository, spec: RepositorySpec, log: Logger): Promise<CatalogPlan | undefined> {
    const ns = repoObj.metadata.namespace;
    const now = this.now();
    const store = await this.openStore(ns, spec);
    if (!store) return undefined;
    const existingObjs = this.backups.list().filter((b) => b.metadata.namespace === ns && (b.spec.repository ?? "default") === repoObj.metadata.name);
    const existing: MirrorResource[] = existingObjs.map((b) => ({
      name: b.metadata.name,
      cluster: b.status?.cluster,
      backupName: b.status?.backupName,
      phase: b.status?.phase,
      unusableReason: b.status?.conditions?.find((c) => c.type === USABLE_CONDITION && c.status === "False")?.reason,
    }));
    let observed: CatalogObserved;
    const entries = new Map<string, BackupEntry>();
    this.metrics.inc("replicator_storage_listings_total", { namespace: ns, repository: repoObj.metadata.name });
    try {
      await store.check();
      // Every cluster in storage, and every cluster a resource mirrors: one whose last backup was deleted has no prefix left, and its resources must go too.
      const mirrored = existing.map((e) => e.cluster ?? "");
      const clusters = [...new Set([...(await store.list("")).map((o) => o.key.split("/")[0] ?? ""), ...mirrored])].filter((c) => /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(c));
      const listings: ClusterListing[] = [];
      for (const cluster of clusters) {
        // Throws on any storage fault (no partial result): then nothing below runs.
        const { backups, corrupt } = await new Repository(store, cluster).list();
        for (const b of backups) entries.set(`${cluster}/${b.name}`, b);
        listings.push({
          cluster,
          backups: backups.map((b) => ({ name: b.name, finishedAt: b.manifest.finishedAt })),
          corrupt: corrupt.map((c) => ({ name: c.name, reason: (c as { reason?: string }).reason, error: c.error })),
        });
      }
      observed = { ok: true, clusters: listings };
    } catch (err) {
      observed = { ok: false, reason: faultReason(err), message: oneLine(err) };
    }
    const plan = decideCatalogSync(observed, existing, now, IMPORT_GRACE_MS);
    if (plan.kind === "fault") {
      log.warn({ reason: plan.reason, err: plan.message }, "storage listing failed; nothing created or deleted");
      return plan;
    }
    for (const c of plan.create) {
      const b = entries.get(`${c.cluster}/${c.backup}`);
      if (!b) continue;
      const cluster = c.cluster;
      const crName = childName(cluster, b.name.toLowerCase());
      const m = b.manifest;
      const status: BackupStatus = {
        phase: "Completed",
        imported: true,
        backupName: b.name,
        cluster,
        method: m.method,
        sourcePod: b.source,
        size: b.size,
        sizeHuman: formatBytes(b.size),
        startedAt: m.startedAt,
        finishedAt: m.finishedAt,
        message: `found in storage (${repositoryUrl(spec)}/${cluster})`,
        conditions: [{ type: "Ready", status: "True", reason: "Imported", message: "mirrors a backup found in storage", lastTransitionTime: now.toISOString() }],
      };
      const pos = positionText(m.replication);
      if (pos) status.position = pos;
      try {
        await this.rest.create(crPath("replicatorbackups", ns), {
          apiVersion: API_VERSION,
          kind: "ReplicatorBackup",
          metadata: { name: crName, namespace: ns, annotations: { [IMPORTED_ANNOTATION]: "true" }, labels: { [BACKUP_NAME_LABEL]: labelValue(b.name), "replicator.dev/cluster": cluster } },
          spec: { repository: repoObj.metadata.name, cluster, method: m.method },
        });
      } catch (err) {
        if (!isAlreadyExists(err)) throw err;
      }
      await this.rest.patch(`${crPath("replicatorbackups", ns, crName)}/status`, { status });
      log.info({ backup: b.name, resource: crName }, "backup found in storage; resource created");
    }
    const byName = new Map(existingObjs.map((b) => [b.metadata.name, b]));
    for (const u of plan.unusable) {
      const obj = u.resource ? byName.get(u.resource) : undefined;
      if (!obj) continue;
      const prev = obj.status?.conditions?.find((c) => c.type === USABLE_CONDITION);
      if (prev?.status === "False" && prev.reason === u.reason && prev.message === u.message) continue;
      const conditions = setCondition(obj.status?.conditions, { type: USABLE_CONDITION, status: "False", reason: u.reason, message: u.message }, now);
      await this.rest.patch(`${crPath("replicatorbackups", ns, obj.metadata.name)}/status`, { status: { conditions } });
      await this.event(obj, "Warning", u.reason, `${u.message}; the backup and its resource are kept (storage: ${repositoryUrl(spec)}/${u.cluster})`);
      log.warn({ backup: u.backup, resource: obj.metadata.name, reason: u.reason }, "backup unusable; resource kept");
    }
    for (const name of plan.usableAgain) {
      const obj = byName.get(name);
      if (!obj) continue;
      const conditions = setCondition(obj.status?.conditions, { type: USABLE_CONDITION, status: "True", reason: "Readable", message: "its manifest reads and verifies again" }, now);
      await this.rest.patch(`${crPath("replicatorbackups", ns, name)}/status`, { status: { conditions } });
    }
    for (const d of plan.delete) {
      await this.rest.delete(crPath("replicatorbackups", ns, d.resource)).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      log.info({ backup: d.backup, resource: d.resource }, "backup gone from storage; resource deleted");
    }
    return plan;
  }

  // ------------------------------------------------------------ provisioning

  private enqueueProvision(pod: PodObj): void {
    const sts = ownerSts(pod);
    if (!sts) return;
    const s = this.statefulSets.get(`${pod.metadata.namespace}/${sts}`);
    if (s?.metadata.annotations?.[PROVISION_ANNOTATION] !== undefined) this.queue.add(`provision/${pod.metadata.namespace}/${pod.metadata.name}`);
  }

  private async reconcileProvision(ns: string, podName: string): Promise<void> {
    const pod = this.pods.get(`${ns}/${podName}`);
    if (!pod || pod.metadata.deletionTimestamp) return;
    const stsName = ownerSts(pod);
    const sts = stsName ? this.statefulSets.get(`${ns}/${stsName}`) : undefined;
    if (!sts) return;
    const settings = provisionSettings(sts);
    if (!settings) return;
    const log = this.log.child({ controller: "provision", namespace: ns, name: podName });
    const key = `provision/${ns}/${podName}`;
    // A ReplicatorRestore this operator created and the informer has not shown yet.
    if (!this.expectations.satisfied(key)) {
      this.queue.addAfter(key, this.expectations.remainingMs(key));
      return;
    }
    if ("error" in settings) {
      await this.setGate(pod, "False", "InvalidAnnotation", settings.error);
      return;
    }
    const pvcObj = this.pvcs.get(`${ns}/${settings.dataVolume}-${podName}`);
    const pvc = pvcObj ? { name: pvcObj.metadata.name, uid: pvcObj.metadata.uid ?? "", annotations: pvcObj.metadata.annotations ?? {} } : undefined;
    const restoreName = pvc ? childName(podName, `provision-${pvc.uid.slice(0, 8)}`) : "";
    const restore = pvc ? this.restores.get(`${ns}/${restoreName}`) : undefined;
    const master = selectServerPod({ statefulSet: sts.metadata.name, role: "master", port: settings.port, credentialsSecret: { name: settings.credentialsSecret, userKey: "username", passwordKey: "password" } }, this.podsIn(ns));
    const observed = {
      podReady: isContainersReady(pod),
      isMaster: master.ok ? master.pod === podName : masterPodName(sts.metadata.name, this.podsIn(ns)) === podName,
      pvc,
      restore: restore ? { name: restore.metadata.name, status: restore.status } : undefined,
      gate: pod.status?.conditions?.find((c) => c.type === GATE_CONDITION)?.status as "True" | "False" | undefined,
      seed: undefined as SeedChoice | undefined,
      takesPlan: takesPlan(pod),
      plan: podPlan(pod),
      init: provisionInitResult(pod),
      replicating: undefined as { ok: boolean; message: string } | undefined,
    };
    // A volume cloned from a snapshot backup: configured once its server runs (src/operator/snapshot).
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
    switch (plan.kind) {
      case "needSeed":
      case "needReplicationCheck":
        return;
      case "setPlan": {
        const doc = plan.plan.action === "none" ? plan.plan : this.restorePlanDoc(ns, sts.metadata.name, settings, plan.plan.backup);
        if (!doc) return;
        await this.rest.patch(nsPath("/api/v1", ns, "pods", podName), { metadata: { annotations: { [PLAN_ANNOTATION]: JSON.stringify(doc) } } });
        if (plan.plan.action === "restore") {
          await this.event(
            { apiVersion: "v1", kind: "Pod", metadata: pod.metadata },
            "Normal",
            "Provisioning",
            `volume ${pvc?.name ?? "?"} has no provision marker: the init container restores ${plan.plan.backup} (position ${plan.plan.position}) before the server starts`,
          );
          await this.setGate(pod, "False", "Provisioning", `restoring ${plan.plan.backup} in the init container`);
          log.info({ backup: plan.plan.backup }, "provision plan handed to the init container");
        }
        if (plan.then === "markMaster" && pvc) {
          await this.markPvc(ns, pvc.name, "master");
          await this.setGate(pod, "True", "Master", "the master is not provisioned from a backup");
        }
        this.queue.addAfter(key, 2_000);
        return;
      }
      case "wait":
        if (plan.gate === "False") {
          const prev = pod.status?.conditions?.find((c) => c.type === GATE_CONDITION);
          if ((prev as { reason?: string } | undefined)?.reason !== plan.reason && (plan.reason === "NoBackup" || plan.reason === "BinlogsPurged" || plan.reason === "StorageUnreachable" || plan.reason === "StorageError")) {
            await this.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Warning", plan.reason, plan.message);
          }
          await this.setGate(pod, "False", plan.reason, plan.message);
        }
        if (plan.requeueMs > 0) this.queue.addAfter(key, plan.requeueMs);
        return;
      case "markMaster":
        if (!pvc) return;
        await this.markPvc(ns, pvc.name, "master");
        await this.setGate(pod, "True", "Master", "the master is not provisioned from a backup");
        log.info({ pvc: pvc.name }, "master volume marked");
        return;
      case "openGate":
        await this.setGate(pod, "True", "Provisioned", plan.message);
        return;
      case "createRestore": {
        if (!pvc || !pvcObj) return;
        const isNewVolume = Object.keys(pvc.annotations).length === 0;
        const child = `ReplicatorRestore/${ns}/${restoreName}`;
        this.expectations.expectCreation(child, [key]);
        await this.rest
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
              this.expectations.creationFailed(child);
              throw err;
            }
            if (this.restores.get(`${ns}/${restoreName}`)) this.expectations.observed(child);
          });
        log.info({ backup: plan.backup, restore: restoreName }, "provisioning started");
        await this.event(
          { apiVersion: "v1", kind: "Pod", metadata: pod.metadata },
          "Normal",
          "Provisioning",
          `volume ${pvc.name} has no provision marker${isNewVolume ? " (a new volume)" : ""}: restoring ${plan.backup} (position ${plan.position}) and replicating from the master`,
        );
        await this.setGate(pod, "False", "Provisioning", `restoring ${plan.backup}`);
        this.queue.addAfter(key, 5_000);
        return;
      }
      case "markProvisioned": {
        if (!pvc) return;
        // The marker first: once it is written, this volume is never restored again.
        await this.markPvc(ns, pvc.name, plan.backup);
        await this.setGate(pod, "True", "Provisioned", plan.message);
        const created = pod.metadata.creationTimestamp ? Date.parse(pod.metadata.creationTimestamp) : Date.now();
        this.metrics.provisioned(ns, settings.cluster, (Date.now() - created) / 1000, restore?.status?.secondsBehindMaster);
        await this.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Normal", "Provisioned", `${plan.message}; volume ${pvc.name} marked`);
        log.info({ backup: plan.backup, pvc: pvc.name }, "slave provisioned");
        return;
      }
      case "retry": {
        this.metrics.provisionFailed(ns, settings.cluster);
        await this.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Warning", plan.reason, `${plan.message}; retrying in 30s`);
        await this.setGate(pod, "False", plan.reason, plan.message);
        // The failed restore left its sentinel: the next attempt redoes it.
        await this.rest.delete(crPath("replicatorrestores", ns, restoreName), { propagationPolicy: "Background" }).catch((err: unknown) => {
          if (!isNotFound(err)) throw err;
        });
        this.queue.addAfter(key, 30_000);
        return;
      }
    }
  }

  /** Reconcile a pod's replicator.dev/replication annotation into STOP/START SLAVE. */
  private async reconcileReplication(ns: string, podName: string): Promise<void> {
    const pod = this.pods.get(`${ns}/${podName}`);
    const want = pod?.metadata.annotations?.[REPLICATION_ANNOTATION];
    if (!pod || !want || pod.metadata.deletionTimestamp) return;
    const log = this.log.child({ controller: "replication", namespace: ns, name: podName });
    const cond = pod.status?.conditions?.find((c) => c.type === REPLICATION_CONDITION) as { status?: string; reason?: string } | undefined;
    const desired = want === "online" ? "True" : "False";
    if (want !== "online" && want !== "offline") {
      await this.setCondition(pod, REPLICATION_CONDITION, "Unknown", "InvalidAnnotation", `${REPLICATION_ANNOTATION} must be offline or online, not "${want}"`);
      return;
    }
    if (cond?.status === desired && cond.reason !== "Error") return;
    const sts = ownerSts(pod);
    const secretName = pod.metadata.annotations?.["replicator.dev/credentials-secret"] ??
      (sts ? this.statefulSets.get(`${ns}/${sts}`)?.metadata.annotations?.["replicator.dev/credentials-secret"] ?? `${sts}-credentials` : undefined);
    const address = pod.status?.podIP;
    if (!secretName || !address) {
      this.queue.addAfter(`replication/${ns}/${podName}`, 5_000);
      return;
    }
    const port = serverPortOf(pod as Parameters<typeof serverPortOf>[0], sts ? this.statefulSets.get(`${ns}/${sts}`) : undefined);
    if ("error" in port) {
      await this.setCondition(pod, REPLICATION_CONDITION, "Unknown", "InvalidAnnotation", port.error);
      return;
    }
    try {
      const c = await this.connectWith(ns, { name: secretName }, address, port.port, podName);
      try {
        const r = want === "online" ? await setOnline(c) : await setOffline(c);
        await this.setCondition(pod, REPLICATION_CONDITION, desired, want === "online" ? "Online" : "Offline", `${r.role}: ${r.action}`);
        await this.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Normal", want === "online" ? "Online" : "Offline", `${r.role}: ${r.action}`);
        log.info({ want, role: r.role }, "replication state changed");
      } finally {
        await c.end().catch(() => undefined);
      }
    } catch (err) {
      await this.setCondition(pod, REPLICATION_CONDITION, "Unknown", "Error", `could not go ${want}: ${oneLine(err)}`);
      this.queue.addAfter(`replication/${ns}/${podName}`, 10_000);
    }
  }

  /** The newest backup whose position the master can still serve. */
  private async planSeed(ns: string, sts: string, s: ProvisionSettings, physicalOk = false): Promise<SeedChoice> {
    const repoObj = this.repositories.get(`${ns}/${s.repository}`);
    if (!repoObj) return { ok: false, reason: "StorageUnreachable", message: `ReplicatorRepository ${s.repository} not found` };
    const spec = validateSpec(repositorySpecSchema, repoObj.spec);
    if (!spec.ok) return { ok: false, reason: "StorageUnreachable", message: `ReplicatorRepository ${s.repository}: ${spec.message}` };
    const store = await this.openStore(ns, spec.value);
    if (!store) return { ok: false, reason: "StorageUnreachable", message: `provisioning needs an S3 repository; ${s.repository} is a filesystem repository` };
    // Throws on a storage fault (no partial listing): never an older backup chosen, never "NoBackup" (the caller reports the fault).
    const { backups } = await new Repository(store, s.cluster).list();
    const all = (s.backup === "latest" ? backups : backups.filter((b) => b.name === s.backup)).filter((b) => b.manifest.replication).reverse();
    // A snapshot seeds only a volume created from it (the StatefulSet's spare, src/operator/snapshot), never a pod's existing volume.
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
    const master = selectServerPod({ statefulSet: sts, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.podsIn(ns));
    if (!master.ok) return { ok: false, reason: "MasterNotReady", message: master.message };
    let c: Awaited<ReturnType<Operator["connectWith"]>>;
    try {
      c = await this.connectWith(ns, { name: s.replicationSecret }, master.address, s.port, `master ${master.pod}`);
    } catch (err) {
      return { ok: false, reason: "MasterNotReady", message: oneLine(err) };
    }
    try {
      let firstReason = "";
      for (const b of candidates) {
        const pos = b.manifest.replication;
        if (!pos) continue;
        const check = await checkMasterCanServe(c, pos, `master ${master.pod}`);
        if (check.ok) return { ok: true, backup: b.name, position: positionText(pos) ?? "-", kind: b.manifest.kind };
        firstReason ||= `${b.name}: ${check.reason ?? ""}`;
      }
      return { ok: false, reason: "BinlogsPurged", message: `no stored backup can seed a slave: the newest, ${firstReason}` };
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  /** The plan for a pod's init container: where the backup is, and which master to follow. */
  private restorePlanDoc(ns: string, stsName: string, s: ProvisionSettings, backup: string): ProvisionPlanDoc | undefined {
    const repoObj = this.repositories.get(`${ns}/${s.repository}`);
    const spec = repoObj ? validateSpec(repositorySpecSchema, repoObj.spec) : undefined;
    if (!spec?.ok) return undefined;
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.podsIn(ns));
    if (!master.ok) return undefined;
    const s3 = spec.value.s3;
    return {
      action: "restore",
      backup,
      repository: repositoryUrl(spec.value),
      cluster: s.cluster,
      ...(s3 ? { s3: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: s3.endpoint ? true : undefined } } : {}),
      master: serverUrl(this.masterAddress(ns, master), s.port),
    };
  }

  /** Is the pod's server replicating (both threads running)? Asked after a physical restore. */
  private async replicationOf(ns: string, pod: PodObj, s: ProvisionSettings): Promise<{ ok: boolean; message: string }> {
    const address = pod.status?.podIP;
    if (!address) return { ok: false, message: "the pod has no IP yet" };
    const c = await this.connectWith(ns, { name: s.credentialsSecret }, address, s.port, `pod ${pod.metadata.name}`);
    try {
      const st = await getSlaveStatus(c);
      if (!st) return { ok: false, message: "the server has no replication configured" };
      if (st.ioRunning && st.sqlRunning) return { ok: true, message: "" };
      return { ok: false, message: `replication is not running (IO ${st.ioRunning ? "running" : "stopped"}, SQL ${st.sqlRunning ? "running" : "stopped"})${st.lastIoError || st.lastSqlError ? `: ${st.lastIoError || st.lastSqlError}` : ""}` };
    } finally {
      await c.end().catch(() => undefined);
    }
  }

  private async markPvc(ns: string, name: string, backup: string): Promise<void> {
    await this.rest.patch(nsPath("/api/v1", ns, "persistentvolumeclaims", name), {
      metadata: { annotations: { [PROVISIONED_ANNOTATION]: backup, [PROVISIONED_AT_ANNOTATION]: this.now().toISOString() } },
    });
  }

  /** Set the readiness-gate condition through pods/status, only when it changes. */
  private async setGate(pod: PodObj, status: "True" | "False", reason: string, message: string): Promise<void> {
    await this.setCondition(pod, GATE_CONDITION, status, reason, message);
  }

  private async setCondition(pod: PodObj, type: string, status: "True" | "False" | "Unknown", reason: string, message: string): Promise<void> {
    const prev = pod.status?.conditions?.find((c) => c.type === type) as { status?: string; reason?: string; message?: string } | undefined;
    if (prev?.status === status && prev.reason === reason && prev.message === message) return;
    const now = this.now().toISOString();
    await this.rest.patch(
      `${nsPath("/api/v1", pod.metadata.namespace, "pods", pod.metadata.name)}/status`,
      { status: { conditions: [{ type, status, reason, message: message.slice(0, 500), lastTransitionTime: prev?.status === status ? undefined : now, lastProbeTime: null }] } },
      "strategic",
    );
  }

  // ------------------------------------------------------------ events

  private async event(
    obj: { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; uid?: string } },
    type: "Normal" | "Warning",
    reason: string,
    message: string,
  ): Promise<void> {
    const now = this.now().toISOString();
    const ns = obj.metadata.namespace ?? "default";
    await this.rest
      .create(nsPath("/api/v1", ns, "events"), {
        metadata: { generateName: `${obj.metadata.name}.`, namespace: ns },
        involvedObject: { apiVersion: obj.apiVersion ?? API_VERSION, kind: obj.kind, name: obj.metadata.name, namespace: ns, uid: obj.metadata.uid },
        reason,
        message: message.slice(0, 1000),
        type,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
        source: { component: "replicator-operator" },
        reportingComponent: "replicator.dev/operator",
      })
      .catch((err: unknown) => {
        this.log.warn({ err: oneLine(err), reason }, "could not record event");
      });
  }
}

