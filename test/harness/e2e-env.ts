// The whole bench for end-to-end tests: control plane, CRDs, the test
// kubelet, a real S3 server, and the operator as its own process under a
// ServiceAccount token with the chart's RBAC (from deploy/operator.yaml).
import { readFile } from "node:fs/promises";
import path from "node:path";
import mysql from "mysql2/promise";
import { parseAllDocuments } from "yaml";
import { startControlPlane, type ControlPlane } from "./kube/controlplane.js";
import { startKubelet, type Kubelet } from "./kube/kubelet.js";
import { startOperator, type OperatorProcess } from "./operator.js";
import { startS3, type S3Server } from "./s3.js";

export const repoRoot = path.resolve(import.meta.dirname, "../..");
export const OPERATOR_NS = "replicator-system";
export const AGENT_IMAGE = "ghcr.io/replicator-dev/replicator-agent:test";

/**
 * A MariaDB StatefulSet for the test kubelet (image mariadb:10.11, a `data`
 * volumeClaimTemplate mounted at /var/lib/mysql with subPath data, where the
 * test kubelet keeps the datadir). With `provision`, it carries the
 * provisioning annotations, the readiness gate and podManagementPolicy
 * Parallel; with `initContainer` also the `replicator provision` init
 * container that restores physical backups before mariadbd starts, as
 * docs/provisioning.md shows it.
 */
export function mariadbStatefulSet(ns: string, name: string, replicas: number, opts: { provision?: boolean; initContainer?: boolean; args?: string[] } = {}): string {
  const provision = opts.provision
    ? { annotations: `\n  annotations: { replicator.dev/provision: latest, replicator.dev/replication-secret: db-replication }`, policy: "\n  podManagementPolicy: Parallel", gate: "\n      readinessGates: [{ conditionType: replicator.dev/provisioned }]" }
    : { annotations: "", policy: "", gate: "" };
  const init = opts.initContainer
    ? `
      initContainers:
        - name: provision
          image: ${AGENT_IMAGE}
          args: [provision, --datadir, /var/lib/mysql, --plan-file, /etc/replicator/plan]
          env:
            - { name: REPLICATOR_REPLICATION_USER, valueFrom: { secretKeyRef: { name: db-replication, key: username } } }
            - { name: REPLICATOR_REPLICATION_PASSWORD, valueFrom: { secretKeyRef: { name: db-replication, key: password } } }
            - { name: AWS_ACCESS_KEY_ID, valueFrom: { secretKeyRef: { name: s3-credentials, key: AWS_ACCESS_KEY_ID } } }
            - { name: AWS_SECRET_ACCESS_KEY, valueFrom: { secretKeyRef: { name: s3-credentials, key: AWS_SECRET_ACCESS_KEY } } }
          volumeMounts:
            - { name: data, mountPath: /var/lib/mysql, subPath: data }
            - { name: plan, mountPath: /etc/replicator }
      volumes:
        - name: plan
          downwardAPI: { items: [{ path: plan, fieldRef: { fieldPath: "metadata.annotations['replicator.dev/provision-plan']" } }] }`
    : "";
  return `
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: ${name}
  namespace: ${ns}${provision.annotations}
spec:
  serviceName: ${name}
  replicas: ${replicas}${provision.policy}
  selector: { matchLabels: { app: ${name} } }
  template:
    metadata: { labels: { app: ${name} } }
    spec:${provision.gate}${init}
      containers:
        - name: mariadb
          image: mariadb:10.11
          ports: [{ containerPort: 3306, name: mysql }]
          args: ${JSON.stringify(opts.args ?? [])}
          volumeMounts: [{ name: data, mountPath: /var/lib/mysql, subPath: data }]
  volumeClaimTemplates:
    - metadata: { name: data }
      spec: { accessModes: [ReadWriteOnce], resources: { requests: { storage: 10Gi } } }
`;
}

/**
 * On a StatefulSet's master pod: the replication user of the db-replication
 * Secret, and database `app` with InnoDB (t: 2000 rows, blobs) and MyISAM
 * (notes: 200 rows) tables, plus `extraTables` (CREATE TABLE statements).
 */
export async function seedAppMaster(env: E2eEnv, ns: string, pod: string, extraTables: string[] = []): Promise<void> {
  await env.sql(ns, pod, "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
  await env.sql(
    ns,
    pod,
    [
      "CREATE DATABASE app",
      "CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)) ENGINE=InnoDB",
      "CREATE TABLE app.notes (id INT PRIMARY KEY, note TEXT) ENGINE=MyISAM",
      "CREATE TABLE app.blobs (id INT PRIMARY KEY, b LONGBLOB) ENGINE=InnoDB",
      ...extraTables,
    ].join(";\n"),
  );
  await env.sql(ns, pod, `INSERT INTO app.t VALUES ${Array.from({ length: 2000 }, (_, i) => `(${i + 1}, 'row ${i + 1} ü')`).join(",")}`);
  await env.sql(ns, pod, `INSERT INTO app.notes VALUES ${Array.from({ length: 200 }, (_, i) => `(${i + 1}, REPEAT('n', ${i + 1}))`).join(",")}`);
  await env.sql(ns, pod, "INSERT INTO app.blobs VALUES (1, RANDOM_BYTES(1024)), (2, REPEAT(0x00ff, 40000))");
}

/** The API path of a replicator.dev resource collection (or one resource) in `ns`. */
export const crPath = (ns: string, plural: string, name?: string): string =>
  `/apis/replicator.dev/v1alpha1/namespaces/${ns}/${plural}${name ? `/${name}` : ""}`;

/** A ReplicatorBackup of StatefulSet `db` with the db-credentials Secret (`extra`: more spec lines, indented two spaces). */
export const backupYaml = (ns: string, name: string, extra = ""): string => `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: ${name}, namespace: ${ns} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
${extra}`;

/** Waits for ReplicatorBackup `name` to finish and returns its status (phase Completed or Failed). */
export async function backupFinished(env: E2eEnv, ns: string, name: string, timeoutMs = 180_000): Promise<{ phase?: string; message?: string }> {
  return env.waitFor(`${name} to finish`, async () => {
    const o = await env.cp.api.get<{ status?: { phase?: string; message?: string } }>(crPath(ns, "replicatorbackups", name));
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  }, timeoutMs);
}

/** Waits for pod `pod` in `ns` to be Ready. */
export async function podReady(env: E2eEnv, ns: string, pod: string, timeoutMs?: number): Promise<void> {
  await env.waitFor(`${pod} to be ready`, async () => {
    const p = await env.cp.api.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`/api/v1/namespaces/${ns}/pods/${pod}`);
    return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? true : undefined;
  }, timeoutMs);
}

export interface E2eEnv {
  cp: ControlPlane;
  kubelet: Kubelet;
  s3: S3Server;
  operator: OperatorProcess;
  operatorKubeconfig: string;
  restartOperator(opts?: { kill?: boolean }): Promise<void>;
  /**
   * In namespace `ns`: Secrets db-credentials (root, no password), db-replication
   * (repl/replpass) and s3-credentials, a bucket, and a ReplicatorRepository
   * "default" on it (plus `extraSpec` lines, indented two spaces).
   */
  setUpNamespace(ns: string, bucket: string, opts?: { prefix?: string; extraSpec?: string }): Promise<void>;
  sql<T = Record<string, unknown>>(ns: string, pod: string, q: string, params?: unknown[]): Promise<T[]>;
  waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

export async function startE2eEnv(): Promise<E2eEnv> {
  const [cp, s3] = await Promise.all([startControlPlane(), startS3()]);
  const kubelet = await startKubelet({
    kubeConfig: cp.kubeConfig(),
    repoRoot,
    images: { "replicator-agent": "agent", "^mariadb:": "mariadb", "failing-plugin": "exec" },
    entrypoints: { "failing-plugin": [process.execPath, path.join(repoRoot, "test/fixtures/failing-plugin.mjs")] },
  });
  for (const f of ["replicatorrepositories", "replicatorbackups", "replicatorrestores"]) {
    await cp.applyYaml(path.join(repoRoot, "crds", `replicator.dev_${f}.yaml`));
  }
  await cp.createNamespace(OPERATOR_NS);
  // The chart's RBAC, as rendered in deploy/operator.yaml: the operator runs with exactly that.
  const rendered = parseAllDocuments(await readFile(path.join(repoRoot, "deploy/operator.yaml"), "utf8")).map(
    (d) => d.toJSON() as { kind?: string; metadata?: { name?: string } } | null,
  );
  const rbacKinds = new Set(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
  const rbac = rendered.filter((o): o is { kind: string; metadata: { name: string } } => Boolean(o?.kind && rbacKinds.has(o.kind)));
  await cp.applyYaml(rbac.map((o) => JSON.stringify(o)).join("\n---\n"), { namespace: OPERATOR_NS });
  const sa = rbac.find((o) => o.kind === "ServiceAccount");
  if (!sa) throw new Error("deploy/operator.yaml has no ServiceAccount");
  const operatorKubeconfig = await cp.serviceAccountKubeconfig(OPERATOR_NS, sa.metadata.name);
  let n = 0;
  const env: E2eEnv = {
    cp,
    kubelet,
    s3,
    operatorKubeconfig,
    operator: await startOperator({ kubeconfig: operatorKubeconfig, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS }),
    restartOperator: async (opts = {}) => {
      if (opts.kill) await env.operator.kill();
      else await env.operator.stop();
      env.operator = await startOperator({ kubeconfig: operatorKubeconfig, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS, identity: `operator-${++n}` });
    },
    setUpNamespace: async (ns, bucket, opts = {}) => {
      await cp.createNamespace(ns);
      await s3.createBucket(bucket);
      await cp.applyYaml(
        `
apiVersion: v1
kind: Secret
metadata: { name: db-credentials, namespace: ${ns} }
stringData: { username: root, password: "" }
---
apiVersion: v1
kind: Secret
metadata: { name: db-replication, namespace: ${ns} }
stringData: { username: repl, password: replpass }
---
apiVersion: v1
kind: Secret
metadata: { name: s3-credentials, namespace: ${ns} }
stringData: { AWS_ACCESS_KEY_ID: ${s3.accessKeyId}, AWS_SECRET_ACCESS_KEY: ${s3.secretAccessKey} }
---
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: default, namespace: ${ns} }
spec:
  s3: { bucket: ${bucket}, prefix: "${opts.prefix ?? ""}", endpoint: "${s3.endpoint}", credentialsSecret: { name: s3-credentials } }
${opts.extraSpec ?? ""}
`,
        { namespace: ns },
      );
    },
    sql: async <T>(ns: string, pod: string, q: string, params?: unknown[]) => {
      const c = await mysql.createConnection({ host: kubelet.podAddress(ns, pod) ?? "", port: 3306, user: "root", password: "", multipleStatements: true });
      try {
        const [rows] = await c.query(q, params);
        return rows as T[];
      } finally {
        await c.end();
      }
    },
    waitFor: async <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = await fn().catch(() => undefined);
        if (v !== undefined) return v;
        if (Date.now() > deadline) {
          throw new Error(`timed out waiting for ${what}\n--- operator log tail ---\n${(await env.operator.logs()).split("\n").slice(-40).join("\n")}`);
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    stop: async () => {
      for (const p of [env.operator, kubelet, s3, cp]) await p.stop().catch(() => undefined);
    },
  };
  return env;
}
