// Pure builder: a repository's spec.binlogArchives entry + the master chosen
// for it → the Deployment that runs `replicator binlog-archive` against that
// master. One replica, strategy Recreate: the old pod is gone before the new
// one starts, so two archivers never write one archive. Credentials reach the
// container only as env from Secrets, as in the backup Jobs (./jobs.ts).
import { createHash } from "node:crypto";
import type { RepositorySpec, ServerRef } from "../../api/v1alpha1.js";
import { childName, dbEnv, labels, repositoryArgs, repositoryEnv, serverUrl, volumes, LABEL_CLUSTER, LABEL_OPERATION, LABEL_SOURCE_POD, type JobSettings, type K8sEnvVar, type Owner } from "./jobs.js";

export const ARCHIVE_OPERATION = "binlog-archive";
/** On the Deployment: a hash of its desired spec, so a changed master or setting is seen without comparing whole objects. */
export const SPEC_HASH_ANNOTATION = "replicator.dev/spec-hash";
export const ARCHIVE_CONTAINER = "archiver";

export interface ArchiverEntry {
  cluster: string;
  source: ServerRef;
  flushIntervalSeconds: number;
}

export interface ArchiverInput {
  /** The ReplicatorRepository. */
  owner: Owner;
  repo: RepositorySpec;
  entry: ArchiverEntry;
  masterPod: string;
  /** How the archiver reaches the master: a stable DNS name or the pod IP (OperatorHost.masterAddress). */
  masterAddress: string;
  settings: JobSettings;
}

export interface K8sDeployment {
  apiVersion: "apps/v1";
  kind: "Deployment";
  metadata: {
    name: string;
    namespace: string;
    labels: Record<string, string>;
    annotations: Record<string, string>;
    ownerReferences: { apiVersion: string; kind: string; name: string; uid: string; controller: boolean; blockOwnerDeletion: boolean }[];
  };
  spec: Record<string, unknown>;
}

/** The Deployment's name: one per repository and cluster. */
export function archiverName(repository: string, cluster: string): string {
  return childName(repository, `binlogs-${cluster}`);
}

/** The labels that select an archiver's pods; they never change for one entry (a Deployment's selector is immutable). */
export function archiverSelector(repository: string, cluster: string): Record<string, string> {
  return {
    "app.kubernetes.io/name": "replicator-agent",
    "app.kubernetes.io/instance": repository,
    [LABEL_OPERATION]: ARCHIVE_OPERATION,
    [LABEL_CLUSTER]: cluster,
  };
}

export function buildArchiverDeployment(i: ArchiverInput): K8sDeployment {
  const { owner, repo, entry, settings } = i;
  const name = archiverName(owner.name, entry.cluster);
  const lbl = labels(owner, ARCHIVE_OPERATION, entry.cluster);
  const podLabels = { ...lbl, [LABEL_SOURCE_POD]: i.masterPod };
  const args = [
    ARCHIVE_OPERATION,
    "--source",
    serverUrl(i.masterAddress, entry.source.port),
    ...repositoryArgs(repo, entry.cluster),
    "--flush-interval",
    String(entry.flushIntervalSeconds),
  ];
  const env: K8sEnvVar[] = [...dbEnv(entry.source, "REPLICATOR_DB"), ...repositoryEnv(repo), { name: "REPLICATOR_LOG_LEVEL", value: settings.logLevel }];
  const { volumes: vols, mounts } = volumes(repo);
  const spec = {
    replicas: 1,
    // Never two archivers at once, not even during an update.
    strategy: { type: "Recreate" },
    revisionHistoryLimit: 2,
    selector: { matchLabels: archiverSelector(owner.name, entry.cluster) },
    template: {
      metadata: { labels: podLabels },
      spec: {
        restartPolicy: "Always",
        // The archiver uploads what it holds when stopped (SIGTERM); give it time to.
        terminationGracePeriodSeconds: 60,
        securityContext: { runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, seccompProfile: { type: "RuntimeDefault" } },
        containers: [
          {
            name: ARCHIVE_CONTAINER,
            image: settings.agentImage,
            ...(settings.imagePullPolicy ? { imagePullPolicy: settings.imagePullPolicy } : {}),
            args,
            env,
            // A gap ends the archiver with one line on stderr (exit 2): the
            // last line of its log becomes the termination message, which the
            // operator puts in the repository's status.
            terminationMessagePolicy: "FallbackToLogsOnError",
            securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } },
            // /tmp holds the binlog the master is writing until it closes: up to max_binlog_size.
            volumeMounts: [...mounts, { name: "tmp", mountPath: "/tmp" }],
            resources: { requests: { cpu: "50m", memory: "96Mi" } },
          },
        ],
        volumes: [...vols, { name: "tmp", emptyDir: {} }],
      },
    },
  };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name,
      namespace: owner.namespace,
      labels: lbl,
      annotations: { [SPEC_HASH_ANNOTATION]: specHash(spec) },
      ownerReferences: [{ apiVersion: owner.apiVersion, kind: owner.kind, name: owner.name, uid: owner.uid, controller: true, blockOwnerDeletion: true }],
    },
    spec,
  };
}

export function specHash(spec: unknown): string {
  return createHash("sha256").update(JSON.stringify(spec)).digest("hex").slice(0, 16);
}
