// Pure builders: a validated resource + what was observed → the Job that
// runs the plugin container. Credentials reach the container only as env
// from Secrets; the args hold no secret.
import { createHash } from "node:crypto";
import type { BackupSpec, RepositorySpec, RestoreSpec, ServerRef } from "../../api/v1alpha1.js";
import { DEFAULT_SERVER_PORT } from "../observe.js";

export const MANAGED_BY = "replicator-operator";
export const LABEL_CLUSTER = "replicator.dev/cluster";
export const LABEL_SOURCE_POD = "replicator.dev/source-pod";
export const LABEL_OPERATION = "replicator.dev/operation";

export interface K8sEnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef: { name: string; key: string } };
}

export interface K8sJob {
  apiVersion: "batch/v1";
  kind: "Job";
  metadata: {
    name: string;
    namespace: string;
    labels: Record<string, string>;
    annotations?: Record<string, string>;
    ownerReferences: { apiVersion: string; kind: string; name: string; uid: string; controller: boolean; blockOwnerDeletion: boolean }[];
  };
  spec: Record<string, unknown>;
}

export interface Owner {
  apiVersion: string;
  kind: string;
  name: string;
  namespace: string;
  uid: string;
}

export interface JobSettings {
  agentImage: string;
  imagePullPolicy?: string | undefined;
  backoffLimit: number;
  activeDeadlineSeconds: number;
  ttlSecondsAfterFinished: number;
  logLevel: string;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Lower case, every character outside [a-z0-9-] a "-", no "-" at either end. */
const dnsPart = (s: string): string => s.toLowerCase().replace(/[^a-z0-9-]/g, "-").replace(/^-+|-+$/g, "");

/**
 * A valid DNS-1123 label (at most 63 chars, alphanumeric at both ends; a Job's
 * name is also its pods' `job-name` label value) for `<base>-<suffix>`,
 * deterministic so the next reconcile finds the child again. A name that is
 * valid and short enough is used as it is; any other gets an 8-hex hash of
 * the full input, so two inputs that shorten or clean up alike still differ.
 */
export function childName(base: string, suffix: string): string {
  const full = `${base}-${suffix}`;
  if (full.length <= 63 && DNS_LABEL.test(full)) return full;
  const hash = createHash("sha256").update(full).digest("hex").slice(0, 8);
  const sfx = dnsPart(suffix).slice(0, 40).replace(/-+$/, "");
  const room = 63 - hash.length - 1 - (sfx ? sfx.length + 1 : 0);
  const head = dnsPart(base).slice(0, room).replace(/-+$/, "");
  return [head, hash, sfx].filter((p) => p !== "").join("-");
}

export function repositoryUrl(repo: RepositorySpec): string {
  if (repo.s3) {
    const prefix = repo.s3.prefix.replace(/^\/+|\/+$/g, "");
    return `s3://${repo.s3.bucket}${prefix ? `/${prefix}` : ""}`;
  }
  if (repo.filesystem) {
    const sub = repo.filesystem.path.replace(/^\/+|\/+$/g, "");
    return `file:///repository${sub ? `/${sub}` : ""}`;
  }
  throw new Error("repository has neither s3 nor filesystem");
}

function secretEnv(name: string, secret: string, key: string): K8sEnvVar {
  return { name, valueFrom: { secretKeyRef: { name: secret, key } } };
}

export function repositoryEnv(repo: RepositorySpec): K8sEnvVar[] {
  const env: K8sEnvVar[] = [];
  if (repo.s3) {
    env.push({ name: "AWS_REGION", value: repo.s3.region });
    if (repo.s3.credentialsSecret) {
      env.push(secretEnv("AWS_ACCESS_KEY_ID", repo.s3.credentialsSecret.name, repo.s3.credentialsSecret.accessKeyIdKey));
      env.push(secretEnv("AWS_SECRET_ACCESS_KEY", repo.s3.credentialsSecret.name, repo.s3.credentialsSecret.secretAccessKeyKey));
    }
    // Node reads it at start and trusts that CA beside its own.
    if (repo.s3.caSecret) env.push({ name: "NODE_EXTRA_CA_CERTS", value: S3_CA_FILE });
  }
  return env;
}

export function repositoryArgs(repo: RepositorySpec, cluster: string): string[] {
  const args = ["--repository", repositoryUrl(repo), "--cluster", cluster];
  if (repo.s3?.endpoint) args.push("--s3-endpoint", repo.s3.endpoint);
  return args;
}

/** Where a Job finds the CA of `s3.caSecret` (its NODE_EXTRA_CA_CERTS). */
export const S3_CA_DIR = "/etc/replicator/s3-ca";
export const S3_CA_FILE = `${S3_CA_DIR}/ca.crt`;

export function volumes(repo: RepositorySpec): { volumes: unknown[]; mounts: unknown[] } {
  const vols: unknown[] = [];
  const mounts: unknown[] = [];
  if (repo.filesystem) {
    vols.push({ name: "repository", persistentVolumeClaim: { claimName: repo.filesystem.claimName } });
    mounts.push({ name: "repository", mountPath: "/repository" });
  }
  if (repo.s3?.caSecret) {
    // Only the CA's key, as ca.crt, readable by the Job's user whatever it runs as.
    vols.push({ name: "s3-ca", secret: { secretName: repo.s3.caSecret.name, items: [{ key: repo.s3.caSecret.key, path: "ca.crt" }], defaultMode: 0o444 } });
    mounts.push({ name: "s3-ca", mountPath: S3_CA_DIR, readOnly: true });
  }
  return { volumes: vols, mounts };
}

export function labels(owner: Owner, operation: string, cluster: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    "app.kubernetes.io/name": "replicator-agent",
    "app.kubernetes.io/instance": owner.name,
    "app.kubernetes.io/component": operation,
    "app.kubernetes.io/managed-by": MANAGED_BY,
    [LABEL_CLUSTER]: cluster,
    [LABEL_OPERATION]: operation,
    ...extra,
  };
}

function jobFor(
  owner: Owner,
  operation: "backup" | "restore",
  cluster: string,
  image: string,
  args: string[],
  env: K8sEnvVar[],
  repo: RepositorySpec,
  settings: JobSettings,
  extraLabels: Record<string, string>,
  data?: DataVolumeMount,
): K8sJob {
  const lbl = labels(owner, operation, cluster, extraLabels);
  const { volumes: vols, mounts } = volumes(repo);
  if (data) {
    vols.push({ name: "data", persistentVolumeClaim: { claimName: data.claimName } });
    mounts.push({ name: "data", mountPath: data.mountPath, ...(data.subPath ? { subPath: data.subPath } : {}) });
  }
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: childName(owner.name, operation),
      namespace: owner.namespace,
      labels: lbl,
      ownerReferences: [{ apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      backoffLimit: settings.backoffLimit,
      activeDeadlineSeconds: settings.activeDeadlineSeconds,
      ttlSecondsAfterFinished: settings.ttlSecondsAfterFinished,
      // Exit code 2 means bad input: retrying cannot help.
      podFailurePolicy: { rules: [{ action: "FailJob", onExitCodes: { containerName: "agent", operator: "In", values: [2] } }] },
      template: {
        metadata: { labels: lbl },
        spec: {
          restartPolicy: "Never",
          // A physical backup runs beside its server: same node (a ReadWriteOnce volume), same user.
          ...(data ? { nodeName: data.nodeName } : {}),
          securityContext: data
            ? { runAsNonRoot: true, runAsUser: data.runAsUser, runAsGroup: data.runAsGroup, ...(data.fsGroup !== undefined ? { fsGroup: data.fsGroup } : {}), seccompProfile: { type: "RuntimeDefault" } }
            : { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } },
          containers: [
            {
              name: "agent",
              image,
              ...(settings.imagePullPolicy ? { imagePullPolicy: settings.imagePullPolicy } : {}),
              args,
              env: [...env, { name: "REPLICATOR_LOG_LEVEL", value: settings.logLevel }],
              terminationMessagePolicy: "FallbackToLogsOnError",
              securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } },
              volumeMounts: [...mounts, { name: "tmp", mountPath: "/tmp" }],
              resources: { requests: { cpu: "100m", memory: "128Mi" } },
            },
          ],
          volumes: [...vols, { name: "tmp", emptyDir: {} }],
        },
      },
    },
  };
}

export function serverUrl(address: string, port: number): string {
  const host = address.includes(":") ? `[${address}]` : address;
  return `mysql://${host}:${port}`;
}

/**
 * Methods that read the server's data files (physical copies): their Job runs
 * on the source pod's node with the source's data volume mounted where the
 * server has it, so the server's own @@datadir is valid inside the Job.
 */
export const LOCAL_DATA_METHODS = new Set(["mariabackup"]);

export interface DataVolumeMount {
  nodeName: string;
  claimName: string;
  mountPath: string;
  subPath?: string | undefined;
  /** The source pod's user and group, so the data files are readable. */
  runAsUser?: number | undefined;
  runAsGroup?: number | undefined;
  fsGroup?: number | undefined;
}

export interface BackupJobInput {
  owner: Owner;
  spec: BackupSpec;
  repo: RepositorySpec;
  cluster: string;
  sourcePod: string;
  sourceAddress: string;
  settings: JobSettings;
  /** For LOCAL_DATA_METHODS: the source's data volume. */
  dataVolume?: DataVolumeMount | undefined;
}

/** Pure: where a pod keeps its data volume (the first container mounting a PVC), for a physical backup Job. */
export function dataVolumeOf(pod: {
  spec?: {
    nodeName?: string;
    securityContext?: { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
    volumes?: { name: string; persistentVolumeClaim?: { claimName: string } }[];
    containers?: { name: string; volumeMounts?: { name: string; mountPath: string; subPath?: string }[] }[];
  };
}): DataVolumeMount | { error: string } {
  const nodeName = pod.spec?.nodeName;
  if (!nodeName) return { error: "the source pod is not scheduled to a node" };
  const pvcs = new Map((pod.spec?.volumes ?? []).filter((v) => v.persistentVolumeClaim).map((v) => [v.name, v.persistentVolumeClaim?.claimName ?? ""]));
  for (const c of pod.spec?.containers ?? []) {
    for (const m of c.volumeMounts ?? []) {
      const claimName = pvcs.get(m.name);
      if (!claimName) continue;
      const sc = pod.spec?.securityContext;
      return { nodeName, claimName, mountPath: m.mountPath, subPath: m.subPath, runAsUser: sc?.runAsUser ?? 999, runAsGroup: sc?.runAsGroup ?? 999, fsGroup: sc?.fsGroup };
    }
  }
  return { error: "the source pod mounts no PersistentVolumeClaim; a physical backup reads the server's data volume" };
}

export function buildBackupJob(i: BackupJobInput): K8sJob {
  const method = i.spec.method ?? i.repo.method;
  const args = [
    "backup",
    "--json",
    "--no-progress",
    "--source",
    serverUrl(i.sourceAddress, i.spec.source?.port ?? DEFAULT_SERVER_PORT),
    "--source-name",
    i.sourcePod,
    ...repositoryArgs(i.repo, i.cluster),
    "--method",
    method,
    "--compression",
    i.repo.compression,
  ];
  for (const [k, v] of Object.entries(i.spec.options).sort()) {
    if (k === "lock" || k === "databases") args.push(`--${k}`, v);
    else if (k === "users" && v === "true") args.push("--users");
  }
  // Filesystem repositories are pruned by the agent; S3 ones by the operator,
  // which also knows which backups running restores use.
  if (i.repo.filesystem && i.repo.retention) args.push("--retain", String(i.repo.retention.keep));
  if (!i.spec.source) throw new Error("buildBackupJob: spec.source is required");
  const env = [...dbEnv(i.spec.source, "REPLICATOR_DB"), ...repositoryEnv(i.repo)];
  if (LOCAL_DATA_METHODS.has(method) && !i.dataVolume) throw new Error(`buildBackupJob: method ${method} needs the source's data volume`);
  return jobFor(i.owner, "backup", i.cluster, i.spec.image ?? i.settings.agentImage, args, env, i.repo, i.settings, { [LABEL_SOURCE_POD]: i.sourcePod }, i.dataVolume);
}

export function dbEnv(ref: ServerRef, prefix: string): K8sEnvVar[] {
  return [
    secretEnv(`${prefix}_USER`, ref.credentialsSecret.name, ref.credentialsSecret.userKey),
    secretEnv(`${prefix}_PASSWORD`, ref.credentialsSecret.name, ref.credentialsSecret.passwordKey),
  ];
}

export interface RestoreJobInput {
  owner: Owner;
  spec: RestoreSpec;
  repo: RepositorySpec;
  targetPod: string;
  targetAddress: string;
  masterAddress?: string | undefined;
  settings: JobSettings;
}

export function buildRestoreJob(i: RestoreJobInput): K8sJob {
  const args = ["restore", "--json", "--no-progress", "--target", serverUrl(i.targetAddress, i.spec.target.port), ...repositoryArgs(i.repo, i.spec.cluster)];
  // Point-in-time: the agent picks the base backup (the newest logical one before the target) and replays the archive.
  if (i.spec.until !== undefined) args.push("--until", i.spec.until);
  else if (i.spec.untilGtid !== undefined) args.push("--until-gtid", i.spec.untilGtid);
  else if (i.spec.before) args.push("--before", i.spec.before);
  else if (i.spec.backup !== "latest") args.push("--backup", i.spec.backup);
  if (i.spec.force) args.push("--force");
  const env = [...dbEnv(i.spec.target, "REPLICATOR_DB"), ...repositoryEnv(i.repo)];
  if (i.spec.replicateFrom && i.masterAddress) {
    args.push("--replicate-from", serverUrl(i.masterAddress, i.spec.replicateFrom.port));
    env.push(...dbEnv(i.spec.replicateFrom, "REPLICATOR_REPLICATION"));
  }
  return jobFor(i.owner, "restore", i.spec.cluster, i.settings.agentImage, args, env, i.repo, i.settings, { [LABEL_SOURCE_POD]: i.targetPod });
}
