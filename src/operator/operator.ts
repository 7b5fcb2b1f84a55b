// The operator: wiring only. Informers feed one per-object queue; each key
// goes to its controller (controllers/<kind>/), which observes, asks its pure
// `decide*` what to do, acts through the host (host.ts), and writes status
// only when it changed. It never moves backup bytes: Jobs do.
import type { ReplicatorBackup, ReplicatorRepository, ReplicatorRestore } from "../api/v1alpha1.js";
import type { Logger } from "../lib/log.js";
import { oneLine } from "../lib/errors.js";
import { Informer, keyOf } from "../kube/informer.js";
import type { KubeRest, WatchEvent } from "../kube/rest.js";
import { RateLimitedQueue } from "./runtime/queue.js";
import { Expectations } from "./runtime/expectations.js";
import type { Metrics } from "./metrics.js";
import { jobState } from "./observe.js";
import { OperatorHost, crPath, nsPath, ownerSts, type DeploymentObj, type JobObj, type OperatorSettings, type PodObj, type PvcObj, type StatefulSetObj } from "./host.js";
import { ARCHIVE_OPERATION } from "./builders/archiver.js";
import { ArchiveController } from "./controllers/archive/controller.js";
import { BackupController } from "./controllers/backup/controller.js";
import { RestoreController } from "./controllers/restore/controller.js";
import { CatalogController } from "./controllers/catalog/controller.js";
import { ScheduleController } from "./controllers/schedule/controller.js";
import { PROVISION_POD_LABEL, ProvisionController } from "./controllers/provision/controller.js";
import { PROVISION_ANNOTATION } from "./controllers/provision/decide.js";
import { REPLICATION_ANNOTATION, ReplicationController } from "./controllers/replication/controller.js";
import { SnapshotController, type SnapshotPod } from "./controllers/snapshot/controller.js";
import { ArchiveIndexCache } from "../pitr/archive-index-cache.js";

export type { OperatorSettings } from "./host.js";

/**
 * What the informers list and watch with: every object is cached without
 * metadata.managedFields. No controller reads them (the operator patches and
 * creates; it never PUTs a cached object back), and on a ReplicatorBackup
 * written by create + status patch they are 43% of its JSON (783 of 1,832
 * bytes, an imported one in bench-operator), kept for every cached object.
 */
export function informerClient(rest: Pick<KubeRest, "list" | "watch">): Pick<KubeRest, "list" | "watch"> {
  const strip = (o: unknown): void => {
    const meta = (o as { metadata?: { managedFields?: unknown } } | null)?.metadata;
    if (meta && "managedFields" in meta) delete meta.managedFields;
  };
  return {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- KubeRest.list's own signature
    list: async <T>(path: string, query?: Record<string, string>) => {
      const res = await rest.list<T>(path, query);
      for (const item of res.items) strip(item);
      return res;
    },
    watch: <T>(path: string, rv: string, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal, idleMs?: number, query?: Record<string, string>) =>
      rest.watch<T>(path, rv, (e) => { strip(e.object); onEvent(e); }, signal, idleMs, query),
  };
}

export class Operator {
  private readonly backups: Informer<ReplicatorBackup>;
  private readonly restores: Informer<ReplicatorRestore>;
  private readonly repositories: Informer<ReplicatorRepository>;
  private readonly jobs: Informer<JobObj>;
  private readonly pods: Informer<PodObj>;
  private readonly statefulSets: Informer<StatefulSetObj>;
  private readonly pvcs: Informer<PvcObj>;
  private readonly deployments: Informer<DeploymentObj>;
  /** Per-object keys, at most one worker each; failures back off (runtime/queue.ts). */
  private readonly queue = new RateLimitedQueue();
  /** Children created and not yet seen by their informer (runtime/expectations.ts). */
  private readonly expectations = new Expectations();
  /** The caches, the queue and the shared I/O, lent to the controllers. */
  private readonly host: OperatorHost;
  /** The volumesnapshot method: snapshot backups, spare volumes, clones, volume restores, retention (controllers/snapshot). */
  private readonly snapshots: SnapshotController;
  private readonly backupController: BackupController;
  private readonly restore: RestoreController;
  private readonly catalog: CatalogController;
  private readonly provision: ProvisionController;
  private readonly replication: ReplicationController;
  private readonly archives: ArchiveController;

  constructor(
    rest: KubeRest,
    private readonly log: Logger,
    settings: OperatorSettings,
    private readonly metrics: Metrics,
    now: () => Date = () => new Date(),
  ) {
    const ns = settings.namespace;
    const opts = { resyncMs: settings.resyncMs, ...(settings.watchTimeoutSeconds ? { watchTimeoutSeconds: settings.watchTimeoutSeconds } : {}) };
    const watched = informerClient(rest);
    this.backups = new Informer(watched, crPath("replicatorbackups", ns), (k) => { this.queue.add(`backup/${k}`); }, log, opts);
    this.restores = new Informer(
      watched,
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
    this.repositories = new Informer(watched, crPath("replicatorrepositories", ns), (k) => { this.queue.add(`repository/${k}`); }, log, opts);
    this.jobs = new Informer(
      watched,
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
      watched,
      nsPath("/api/v1", ns, "pods"),
      (k, pod) => {
        if (!pod) return;
        this.provision.enqueueProvision(pod);
        if (pod.metadata.annotations?.[REPLICATION_ANNOTATION]) this.queue.add(`replication/${k}`);
        // An archiver's pod (its health goes to its repository's status), or a server an archive follows (a new master).
        for (const repo of this.archives.repositoriesFor(pod)) this.queue.add(`repository/${pod.metadata.namespace}/${repo}`);
      },
      log,
      opts,
    );
    this.statefulSets = new Informer(
      watched,
      nsPath("/apis/apps/v1", ns, "statefulsets"),
      (_k, sts) => {
        if (!sts?.metadata.annotations?.[PROVISION_ANNOTATION]) return;
        this.snapshots.statefulSetChanged(sts.metadata.namespace, sts);
        for (const p of this.pods.list()) if (p.metadata.namespace === sts.metadata.namespace && ownerSts(p) === sts.metadata.name) this.provision.enqueueProvision(p);
      },
      log,
      opts,
    );
    this.pvcs = new Informer(watched, nsPath("/api/v1", ns, "persistentvolumeclaims"), () => undefined, log, opts);
    this.deployments = new Informer(
      watched,
      nsPath("/apis/apps/v1", ns, "deployments"),
      (_k, d) => {
        const repo = d?.metadata.labels?.["app.kubernetes.io/instance"];
        if (d && repo) this.queue.add(`repository/${d.metadata.namespace}/${repo}`);
      },
      log,
      { ...opts, labelSelector: `app.kubernetes.io/managed-by=replicator-operator,replicator.dev/operation=${ARCHIVE_OPERATION}` },
    );
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
      pods: (n) => this.host.podsIn(n) as SnapshotPod[],
      pvc: (n, name) => this.pvcs.get(`${n}/${name}`),
      pvcs: (n) => this.pvcs.list().filter((p) => p.metadata.namespace === n),
      statefulSet: (n, name) => this.statefulSets.get(`${n}/${name}`),
      repository: (n, name) => {
        const r = this.host.repoObserved(n, name);
        return r.found && r.spec.ok ? r.spec.value : undefined;
      },
      openStore: (n, repo) => this.host.openStore(n, repo),
      secret: (n, name) => this.host.secretReader(n, name),
      connectWith: (n, secret, host, port, what) => this.host.connectWith(n, secret, host, port, what),
      masterAddress: (n, master) => this.host.masterAddress(n, master),
      event: (obj, type, reason, message) => this.host.event(obj, type, reason, message),
      setGate: (pod, status, reason, message) => this.host.setGate(pod, status, reason, message),
      markPvc: (n, name, backup) => this.host.markPvc(n, name, backup),
    });
    this.host = new OperatorHost(rest, log, settings, metrics, now, this.queue, this.expectations, {
      backups: this.backups,
      restores: this.restores,
      repositories: this.repositories,
      jobs: this.jobs,
      pods: this.pods,
      statefulSets: this.statefulSets,
      pvcs: this.pvcs,
      deployments: this.deployments,
    });
    // One cache of binlog indexes for the archive status and the seed planning (bounded, see archive-index-cache.ts).
    const archiveIndexes = new ArchiveIndexCache();
    this.archives = new ArchiveController(this.host, archiveIndexes);
    this.backupController = new BackupController(this.host, this.snapshots);
    this.restore = new RestoreController(this.host, this.snapshots);
    this.catalog = new CatalogController(this.host, new ScheduleController(this.host), this.archives);
    this.provision = new ProvisionController(this.host, this.snapshots, archiveIndexes);
    this.replication = new ReplicationController(this.host);
  }

  /** Each informer's request and resync totals, for /metrics. */
  recordInformerStats(): void {
    const all = { pods: this.pods, jobs: this.jobs, replicatorrepositories: this.repositories, replicatorbackups: this.backups, replicatorrestores: this.restores, statefulsets: this.statefulSets, persistentvolumeclaims: this.pvcs, deployments: this.deployments };
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
      this.pvcs.hasSynced &&
      this.deployments.hasSynced
    );
  }

  async run(signal: AbortSignal): Promise<void> {
    const informers = [this.pods, this.jobs, this.repositories, this.backups, this.restores, this.statefulSets, this.pvcs, this.deployments].map((i) => i.run(signal));
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
        return this.backupController.reconcileBackup(ns, name);
      case "restore":
        return this.restore.reconcileRestore(ns, name);
      case "repository":
        return this.catalog.reconcileRepository(ns, name);
      case "provision":
        return this.provision.reconcileProvision(ns, name);
      case "replication":
        return this.replication.reconcileReplication(ns, name);
      case "snapshot-spare":
        return this.snapshots.reconcileSpareOf(ns, name);
      default:
        return;
    }
  }
}
