// What the controllers share: the informers' caches, the work queue, the
// expectations for created children, and the I/O every controller does the
// same way (Secrets, database sessions, storage, pod conditions, events).
// Each controller takes the part it uses (a Pick of OperatorHost), so its
// dependencies are written in its type.
import {
  API_VERSION,
  GROUP,
  VERSION,
  repositorySpecSchema,
  validateSpec,
  type ReplicatorBackup,
  type ReplicatorRepository,
  type ReplicatorRestore,
  type RepositorySpec,
} from "../api/v1alpha1.js";
import { createHash } from "node:crypto";
import type { Logger } from "../lib/log.js";
import { badInput, oneLine } from "../lib/errors.js";
import { connect } from "../db/connection.js";
import { openRepository } from "../storage/open.js";
import type { Repository } from "../storage/repository.js";
import { repositoryUrl, type JobSettings, type Owner } from "./builders/jobs.js";
import { GATE_CONDITION, PROVISIONED_ANNOTATION, PROVISIONED_AT_ANNOTATION } from "./controllers/provision/decide.js";
import type { ProvisionPod } from "./controllers/provision/observe.js";
import type { Informer } from "../kube/informer.js";
import type { KubeRest } from "../kube/rest.js";
import type { RateLimitedQueue } from "./runtime/queue.js";
import type { Expectations } from "./runtime/expectations.js";
import type { Metrics } from "./metrics.js";
import { stableAddress, type JobLike, type PodLike } from "./observe.js";

export const IMPORTED_ANNOTATION = "replicator.dev/imported";
/** On a ReplicatorBackup: False when its backup is in storage but cannot be used (corrupt or unknown-format manifest). */
export const USABLE_CONDITION = "Usable";
export const BACKUP_NAME_LABEL = "replicator.dev/backup-name";

export interface StatefulSetObj {
  metadata: { name: string; namespace: string; annotations?: Record<string, string> };
  spec?: { serviceName?: string; volumeClaimTemplates?: { metadata?: { name?: string } }[] };
}

export interface PvcObj {
  metadata: { name: string; namespace: string; uid?: string; annotations?: Record<string, string>; creationTimestamp?: string };
}

export type PodObj = PodLike &
  ProvisionPod & {
    metadata: { name: string; namespace: string; uid?: string; creationTimestamp?: string; annotations?: Record<string, string> };
    spec?: { readinessGates?: { conditionType: string }[] };
  };

export type JobObj = JobLike & { metadata: { name: string; namespace: string } };

/** An archiver Deployment (controllers/archive), as its informer caches it. */
export interface DeploymentObj {
  metadata: { name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  spec?: Record<string, unknown>;
  status?: { readyReplicas?: number; availableReplicas?: number; updatedReplicas?: number };
}

/** A label value: at most 63 characters, alphanumeric at both ends. */
export const labelValue = (s: string): string => s.toLowerCase().replace(/[^a-z0-9._-]/g, "-").slice(0, 63).replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "");

export function ownerSts(p: PodLike): string | undefined {
  return p.metadata.ownerReferences?.find((o) => o.kind === "StatefulSet")?.name;
}

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

export const crPath = (plural: string, ns?: string, name?: string): string =>
  `/apis/${GROUP}/${VERSION}${ns ? `/namespaces/${ns}` : ""}/${plural}${name ? `/${name}` : ""}`;
export const nsPath = (base: string, ns: string | undefined, plural: string, name?: string): string =>
  `${base}${ns ? `/namespaces/${ns}` : ""}/${plural}${name ? `/${name}` : ""}`;

/** The informers whose caches the controllers read. */
export interface OperatorCaches {
  backups: Informer<ReplicatorBackup>;
  restores: Informer<ReplicatorRestore>;
  repositories: Informer<ReplicatorRepository>;
  jobs: Informer<JobObj>;
  pods: Informer<PodObj>;
  statefulSets: Informer<StatefulSetObj>;
  pvcs: Informer<PvcObj>;
  /** The operator's own Deployments (binlog archivers). */
  deployments: Informer<DeploymentObj>;
}

export class OperatorHost implements OperatorCaches {
  readonly backups: Informer<ReplicatorBackup>;
  readonly restores: Informer<ReplicatorRestore>;
  readonly repositories: Informer<ReplicatorRepository>;
  readonly jobs: Informer<JobObj>;
  readonly pods: Informer<PodObj>;
  readonly statefulSets: Informer<StatefulSetObj>;
  readonly pvcs: Informer<PvcObj>;
  readonly deployments: Informer<DeploymentObj>;
  /** One store (S3 client) per repository and credentials, for the operator's life. */
  private readonly stores = new Map<string, Promise<Repository["store"]>>();

  constructor(
    readonly rest: KubeRest,
    readonly log: Logger,
    readonly settings: OperatorSettings,
    readonly metrics: Metrics,
    readonly now: () => Date,
    /** Per-object keys, at most one worker each; failures back off (runtime/queue.ts). */
    readonly queue: RateLimitedQueue,
    /** Children created and not yet seen by their informer (runtime/expectations.ts). */
    readonly expectations: Expectations,
    caches: OperatorCaches,
  ) {
    this.backups = caches.backups;
    this.restores = caches.restores;
    this.repositories = caches.repositories;
    this.jobs = caches.jobs;
    this.pods = caches.pods;
    this.statefulSets = caches.statefulSets;
    this.pvcs = caches.pvcs;
    this.deployments = caches.deployments;
  }

  podsIn(ns: string): PodLike[] {
    return this.pods.list().filter((p) => p.metadata.namespace === ns);
  }

  jobPods(ns: string, jobName: string): PodLike[] {
    return this.podsIn(ns).filter((p) => p.metadata.labels?.["job-name"] === jobName || p.metadata.labels?.["batch.kubernetes.io/job-name"] === jobName);
  }

  repoObserved(ns: string, name: string) {
    const r = this.repositories.get(`${ns}/${name}`);
    if (!r) return { found: false as const };
    return { found: true as const, spec: validateSpec(repositorySpecSchema, r.spec) };
  }

  owner(o: ReplicatorBackup | ReplicatorRestore | ReplicatorRepository): Owner {
    return { apiVersion: API_VERSION, kind: o.kind, name: o.metadata.name, namespace: o.metadata.namespace, uid: o.metadata.uid ?? "" };
  }

  /** The address a slave should replicate from: a stable DNS name when there is one (see addressMode). */
  masterAddress(ns: string, master: { pod: string; address: string }): string {
    const pod = this.pods.get(`${ns}/${master.pod}`);
    const stsName = pod ? ownerSts(pod) : undefined;
    const service = stsName ? this.statefulSets.get(`${ns}/${stsName}`)?.spec?.serviceName : undefined;
    return stableAddress(this.settings.addressMode, master.pod, ns, service, master.address);
  }

  /** Read a Secret's keys, decoded. */
  async secretReader(ns: string, name: string): Promise<(key: string) => string | undefined> {
    const secret = await this.rest.get<SecretObj>(nsPath("/api/v1", ns, "secrets", name));
    return (k) => (secret.data?.[k] === undefined ? undefined : Buffer.from(secret.data[k], "base64").toString("utf8"));
  }

  /** A Secret's keys, decoded; a missing key is an error naming the Secret and the key (never a silent default). */
  private async secretKeys(ns: string, name: string): Promise<(key: string) => string> {
    const get = await this.secretReader(ns, name);
    return (k) => {
      const v = get(k);
      if (v === undefined) throw badInput("SecretInvalid", `Secret ${ns}/${name} has no key "${k}": add it, or name the key it has in the resource`);
      return v;
    };
  }

  /** A control connection to a server, as the user in a credentials Secret. */
  async connectWith(
    ns: string,
    secret: { name: string; userKey?: string; passwordKey?: string },
    host: string,
    port: number,
    what: string,
  ): Promise<Awaited<ReturnType<typeof connect>>> {
    this.settings.fence?.(`a session to ${what}`);
    const get = await this.secretKeys(ns, secret.name);
    return connect({ engine: "mysql", host, port, user: get(secret.userKey ?? "username"), password: get(secret.passwordKey ?? "password") }, what);
  }

  /** Open a repository's storage with the credentials from its Secret (S3 only). */
  async openStore(ns: string, repo: RepositorySpec): Promise<Repository["store"] | undefined> {
    if (!repo.s3) return undefined;
    let credentials: { accessKeyId: string; secretAccessKey: string } | undefined;
    if (repo.s3.credentialsSecret) {
      const get = await this.secretKeys(ns, repo.s3.credentialsSecret.name);
      credentials = { accessKeyId: get(repo.s3.credentialsSecret.accessKeyIdKey), secretAccessKey: get(repo.s3.credentialsSecret.secretAccessKeyKey) };
    }
    const caRef = repo.s3.caSecret;
    let ca: string | undefined;
    if (caRef) {
      ca = (await this.secretKeys(ns, caRef.name))(caRef.key);
      if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
        throw badInput("SecretInvalid", `Secret ${ns}/${caRef.name} key "${caRef.key}" (spec.s3.caSecret) holds no PEM certificate: put the CA's certificate there, -----BEGIN CERTIFICATE----- and all`);
      }
    }
    const untrustedHint = caRef
      ? `the CA in Secret ${ns}/${caRef.name} key "${caRef.key}" (spec.s3.caSecret) did not sign it: put the CA that did there`
      : "if a private CA signed it, name a Secret holding that CA's PEM in the ReplicatorRepository's spec.s3.caSecret";
    // Reused: a client per call left its sockets behind (only the catalog closed
    // its own). New credentials (a rotated Secret) get a client of their own.
    const secret = credentials ? createHash("sha256").update(`${credentials.accessKeyId}\0${credentials.secretAccessKey}`).digest("hex") : "";
    const key = JSON.stringify([repositoryUrl(repo), repo.s3.endpoint, repo.s3.region, secret, ca ? createHash("sha256").update(ca).digest("hex") : "", untrustedHint]);
    let store = this.stores.get(key);
    if (!store) {
      store = openRepository(repositoryUrl(repo), { endpoint: repo.s3.endpoint, region: repo.s3.region, credentials, ca, untrustedHint });
      this.stores.set(key, store);
      store.catch(() => this.stores.delete(key));
    }
    return await store;
  }

  async markPvc(ns: string, name: string, backup: string): Promise<void> {
    await this.rest.patch(nsPath("/api/v1", ns, "persistentvolumeclaims", name), {
      metadata: { annotations: { [PROVISIONED_ANNOTATION]: backup, [PROVISIONED_AT_ANNOTATION]: this.now().toISOString() } },
    });
  }

  /** Set the readiness-gate condition through pods/status, only when it changes. */
  async setGate(pod: PodObj, status: "True" | "False", reason: string, message: string): Promise<void> {
    await this.setCondition(pod, GATE_CONDITION, status, reason, message);
  }

  async setCondition(pod: PodObj, type: string, status: "True" | "False" | "Unknown", reason: string, message: string): Promise<void> {
    const prev = pod.status?.conditions?.find((c) => c.type === type) as { status?: string; reason?: string; message?: string } | undefined;
    if (prev?.status === status && prev.reason === reason && prev.message === message) return;
    const now = this.now().toISOString();
    await this.rest.patch(
      `${nsPath("/api/v1", pod.metadata.namespace, "pods", pod.metadata.name)}/status`,
      { status: { conditions: [{ type, status, reason, message: message.slice(0, 500), lastTransitionTime: prev?.status === status ? undefined : now, lastProbeTime: null }] } },
      "strategic",
    );
  }

  async event(
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
  }}
