// The whole bench for end-to-end tests, on one of two clusters:
//  - local (the default): a control plane of our own (etcd, kube-apiserver,
//    kube-controller-manager), the test kubelet, and the operator as its own
//    process under a ServiceAccount token with the chart's RBAC;
//  - a real cluster (E2E_KUBECONFIG: the node of hack/node, `make node-e2e`,
//    or a kind cluster, `make kind-e2e`): our images run by its kubelet, its
//    CSI driver's volumes and snapshots, cluster DNS, and the operator
//    installed with `helm install` of charts/ (a test that drives the
//    operator process itself, `startE2eEnv({ operator: "process" })`, runs it
//    on this machine against that cluster instead).
// Both have a real S3 server (versitygw; on a real cluster bound to
// E2E_S3_HOST, an address its pods reach).
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import mysql from "mysql2/promise";
import { parseAllDocuments } from "yaml";
import { connectControlPlane, startControlPlane, type ControlPlane } from "./kube/controlplane.js";
import { startKubelet, type Kubelet } from "./kube/kubelet.js";
import { isNotFound } from "./kube/rest.js";
import { startOperator, type OperatorProcess } from "./operator.js";
import { startS3, type S3Server } from "./s3.js";

export const repoRoot = path.resolve(import.meta.dirname, "../..");
const execFileP = promisify(execFile);
export const OPERATOR_NS = "replicator-system";

/**
 * The real cluster the suite runs on (E2E_KUBECONFIG), with the images to run
 * there, or undefined for the local bench.
 */
export const realCluster = process.env.E2E_KUBECONFIG
  ? {
      kubeconfig: process.env.E2E_KUBECONFIG,
      operatorImage: required("E2E_OPERATOR_IMAGE"),
      mariadbImage: process.env.E2E_MARIADB_IMAGE ?? "mariadb:10.11",
      s3Host: required("E2E_S3_HOST"),
      helm: process.env.E2E_HELM ?? path.join(repoRoot, ".tools/bin/helm"),
      kubectl: process.env.E2E_KUBECTL ?? "kubectl",
      /** The chart's release and namespace. */
      release: "replicator-e2e",
      namespace: "replicator-e2e",
    }
  : undefined;

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`E2E_KUBECONFIG is set but ${name} is not: set it too (make node-e2e sets both from hack/node)`);
  return v;
}

export const AGENT_IMAGE = realCluster ? required("E2E_AGENT_IMAGE") : "ghcr.io/replicator-dev/replicator-agent:test";
/** A third party's backup plugin that always fails (test/fixtures/failing-plugin.mjs; on a real cluster, an image of it). */
export const FAILING_PLUGIN_IMAGE = process.env.E2E_FAILING_PLUGIN_IMAGE ?? "example.com/failing-plugin:1";

export interface StatefulSetOptions { provision?: boolean; initContainer?: boolean; args?: string[] }

/**
 * A MariaDB StatefulSet. For the test kubelet: image mariadb:10.11, a `data`
 * volumeClaimTemplate mounted at /var/lib/mysql with subPath data, where the
 * test kubelet keeps the datadir). With `provision`, it carries the
 * provisioning annotations, the readiness gate and podManagementPolicy
 * Parallel; with `initContainer` also the `replicator provision` init
 * container that restores physical backups before mariadbd starts, as
 * docs/provisioning.md shows it. On a real cluster: realMariadbStatefulSet.
 */
export function mariadbStatefulSet(ns: string, name: string, replicas: number, opts: StatefulSetOptions = {}): string {
  if (realCluster) return realMariadbStatefulSet(ns, name, replicas, opts);
  const provision = provisionParts(opts);
  const init = opts.initContainer
    ? `${provisionInitContainer(", subPath: data")}
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

/** The provisioning annotations, podManagementPolicy and readiness gate (with `provision`), as YAML fragments. */
function provisionParts(opts: StatefulSetOptions): { annotations: string; policy: string; gate: string } {
  return opts.provision
    ? { annotations: `\n  annotations: { replicator.dev/provision: latest, replicator.dev/replication-secret: db-replication }`, policy: "\n  podManagementPolicy: Parallel", gate: "\n      readinessGates: [{ conditionType: replicator.dev/provisioned }]" }
    : { annotations: "", policy: "", gate: "" };
}

/** The `replicator provision` init container (`dataMount`: more fields of the data volume's mount, e.g. a subPath). */
function provisionInitContainer(dataMount: string): string {
  return `
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
            - { name: data, mountPath: /var/lib/mysql${dataMount} }
            - { name: plan, mountPath: /etc/replicator }`;
}

/**
 * The same StatefulSet for a real cluster, as a user writes one for the
 * official image: a headless Service of the same name (slaves reach the master
 * by its DNS name), root with an empty password from anywhere
 * (MARIADB_ALLOW_EMPTY_ROOT_PASSWORD: a test cluster), server_id from a hash
 * of the pod's name, binary logging on, the whole data volume at
 * /var/lib/mysql (a claim from the default StorageClass), uid/gid/fsGroup 999,
 * and a readiness probe (healthcheck.sh --connect): Ready is the kubelet's
 * verdict, not the harness's.
 */
function realMariadbStatefulSet(ns: string, name: string, replicas: number, opts: StatefulSetOptions): string {
  if (!realCluster) throw new Error("not on a real cluster");
  const provision = provisionParts(opts);
  const init = opts.initContainer ? provisionInitContainer("") : "";
  const planVolume = opts.initContainer
    ? `
      volumes:
        - name: plan
          downwardAPI: { items: [{ path: plan, fieldRef: { fieldPath: "metadata.annotations['replicator.dev/provision-plan']" } }] }`
    : "";
  // Options as the test kubelet's mariadbd has them (test/harness/kube/mariadb-pod.ts), small for a 2-core node.
  const server = [
    'exec docker-entrypoint.sh mariadbd --server-id="$(( $(printf %s "$HOSTNAME" | cksum | cut -d" " -f1) % 4000000000 + 1 ))"',
    "--log-bin=mysql-bin --relay-log=relay-bin --binlog-format=ROW --log-slave-updates --skip-name-resolve",
    "--innodb-buffer-pool-size=64M --innodb-log-file-size=48M --innodb-flush-log-at-trx-commit=2 --sync-binlog=0",
    '--max-connections=100 --performance-schema=OFF --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci "$@"',
  ].join(" ");
  return `
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: ${ns} }
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: { app: ${name} }
  ports: [{ name: mysql, port: 3306, targetPort: mysql }]
---
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
    spec:${provision.gate}
      securityContext: { runAsUser: 999, runAsGroup: 999, fsGroup: 999 }
      terminationGracePeriodSeconds: 10${init}${planVolume}
      containers:
        - name: mariadb
          image: ${realCluster.mariadbImage}
          command: [bash, -c, ${JSON.stringify(server)}, mariadbd]
          args: ${JSON.stringify(opts.args ?? [])}
          env: [{ name: MARIADB_ALLOW_EMPTY_ROOT_PASSWORD, value: "1" }]
          ports: [{ containerPort: 3306, name: mysql }]
          readinessProbe: { exec: { command: [healthcheck.sh, --connect] }, initialDelaySeconds: 1, periodSeconds: 2 }
          volumeMounts: [{ name: data, mountPath: /var/lib/mysql }]
  volumeClaimTemplates:
    - metadata: { name: data }
      spec: { accessModes: [ReadWriteOnce], resources: { requests: { storage: 1Gi } } }
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

/** Waits for a replicator.dev resource (`plural`/`name`) to finish and returns its status (phase Completed or Failed). */
export async function resourceFinished<S extends { phase?: string; message?: string } = { phase?: string; message?: string }>(
  env: E2eEnv,
  ns: string,
  plural: string,
  name: string,
  timeoutMs?: number,
): Promise<S> {
  return env.waitFor(`${plural}/${name} to finish`, async () => {
    const o = await env.cp.api.get<{ status?: S }>(crPath(ns, plural, name));
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  }, timeoutMs);
}

/** Waits for ReplicatorBackup `name` to finish and returns its status (phase Completed or Failed). */
export function backupFinished(env: E2eEnv, ns: string, name: string, timeoutMs = 180_000): Promise<{ phase?: string; message?: string }> {
  return resourceFinished(env, ns, "replicatorbackups", name, timeoutMs);
}

/**
 * On a real cluster: the files and directories under /var/lib/mysql in the
 * mariadb container of `pod` that are not owned by uid and gid 999 (the
 * official image's mysql user), or that its owner cannot read and write (the
 * volume's root is the storage's, root:fsGroup as Kubernetes makes it);
 * `find` through `kubectl exec`. Undefined on the local bench, whose test
 * kubelet runs every process as the test's own user (ownership is not
 * modelled there).
 */
export async function foreignDataFiles(ns: string, pod: string): Promise<string[] | undefined> {
  if (!realCluster) return undefined;
  const { stdout } = await execFileP(
    realCluster.kubectl,
    ["--kubeconfig", realCluster.kubeconfig, "-n", ns, "exec", pod, "-c", "mariadb", "--", "find", "/var/lib/mysql", "-mindepth", "1", "(", "!", "-user", "999", "-o", "!", "-group", "999", "-o", "!", "-perm", "-u=rw", ")", "-printf", "%p %u:%g %m\n"],
    { maxBuffer: 16 << 20 },
  );
  return stdout.split("\n").filter(Boolean);
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
  /** The test kubelet: only on the local bench (undefined on a real cluster). */
  kubelet?: Kubelet;
  /** The node pods run on. */
  nodeName: string;
  s3: S3Server;
  operator: OperatorProcess;
  /** A kubeconfig as the operator's ServiceAccount (the operator process's; on a real cluster with the chart, a token for the chart's). */
  operatorKubeconfig: string;
  /** The operator's pod namespace (its lease, its Jobs' ServiceAccount). */
  operatorNamespace: string;
  /** Restart the operator: SIGTERM (or SIGKILL with `kill`) its process, or delete its pod (at once with `kill`). */
  restartOperator(opts?: { kill?: boolean }): Promise<void>;
  /**
   * In namespace `ns`: Secrets db-credentials (root, no password), db-replication
   * (repl/replpass) and s3-credentials, a bucket, and a ReplicatorRepository
   * "default" on it (plus `extraSpec` lines, indented two spaces).
   */
  setUpNamespace(ns: string, bucket: string, opts?: { prefix?: string; extraSpec?: string }): Promise<void>;
  /** A pod's IP address (reachable from this machine). */
  podAddress(ns: string, pod: string): Promise<string>;
  /** What a container of a pod has written so far ("" when there is nothing yet). */
  containerLog(ns: string, pod: string, container: string): Promise<string>;
  sql<T = Record<string, unknown>>(ns: string, pod: string, q: string, params?: unknown[]): Promise<T[]>;
  waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs?: number): Promise<T>;
  stop(): Promise<void>;
}

/** The chart's RBAC, as rendered in deploy/operator.yaml. */
async function renderedRbac(): Promise<{ kind: string; apiVersion: string; metadata: { name: string } }[]> {
  const rendered = parseAllDocuments(await readFile(path.join(repoRoot, "deploy/operator.yaml"), "utf8")).map(
    (d) => d.toJSON() as { kind?: string; apiVersion?: string; metadata?: { name?: string } } | null,
  );
  const rbacKinds = new Set(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"]);
  return rendered.filter((o): o is { kind: string; apiVersion: string; metadata: { name: string } } => Boolean(o?.kind && rbacKinds.has(o.kind)));
}

/**
 * `operator`: "chart" (the default; on the local bench the same as "process")
 * installs the operator with helm on a real cluster; "process" runs it on this
 * machine with the chart's RBAC (the tests that stall its connections, rotate
 * its token or start a second replica).
 */
export async function startE2eEnv(opts: { operator?: "chart" | "process" } = {}): Promise<E2eEnv> {
  return realCluster ? startOnCluster(opts.operator ?? "chart") : startLocal();
}

async function startLocal(): Promise<E2eEnv> {
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
  const { kubeconfig: operatorKubeconfig, start } = await processOperator(cp);
  const env: E2eEnv = {
    cp,
    kubelet,
    nodeName: kubelet.nodeName,
    s3,
    operatorKubeconfig,
    operatorNamespace: OPERATOR_NS,
    operator: await start(),
    restartOperator: async (o = {}) => {
      await (o.kill ? env.operator.kill() : env.operator.stop());
      env.operator = await start();
    },
    setUpNamespace: (ns, bucket, o) => setUpNamespace(cp, s3, ns, bucket, o),
    podAddress: (ns, pod) => {
      const a = kubelet.podAddress(ns, pod);
      return a ? Promise.resolve(a) : Promise.reject(new Error(`pod ${ns}/${pod} has no address`));
    },
    containerLog: (ns, pod, container) => kubelet.containerLog(ns, pod, container).catch(() => ""),
    sql: (ns, pod, q, params) => sqlOn(env, ns, pod, q, params),
    waitFor: (what, fn, timeoutMs) => waitFor(env, what, fn, timeoutMs),
    stop: async () => {
      for (const p of [env.operator, kubelet, s3, cp]) await p.stop().catch(() => undefined);
    },
  };
  return env;
}

/** The operator as a process of this machine, under the chart's RBAC in OPERATOR_NS; `start` starts one more (operator-1, -2, ...). */
async function processOperator(cp: ControlPlane): Promise<{ kubeconfig: string; start: () => Promise<OperatorProcess> }> {
  await cp.createNamespace(OPERATOR_NS);
  const rbac = await renderedRbac();
  await cp.applyYaml(rbac.map((o) => JSON.stringify(o)).join("\n---\n"), { namespace: OPERATOR_NS });
  const sa = rbac.find((o) => o.kind === "ServiceAccount");
  if (!sa) throw new Error("deploy/operator.yaml has no ServiceAccount");
  const kubeconfig = await cp.serviceAccountKubeconfig(OPERATOR_NS, sa.metadata.name);
  let n = 0;
  return { kubeconfig, start: () => startOperator({ kubeconfig, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS, identity: n++ === 0 ? undefined : `operator-${n}` }) };
}

async function startOnCluster(mode: "chart" | "process"): Promise<E2eEnv> {
  if (!realCluster) throw new Error("not on a real cluster");
  const rc = realCluster;
  const cp = await connectControlPlane(rc.kubeconfig);
  const s3 = await startS3({ host: rc.s3Host });
  const nodes = await cp.api.get<{ items: { metadata: { name: string } }[] }>("/api/v1/nodes");
  const nodeName = nodes.items[0]?.metadata.name;
  if (!nodeName || nodes.items.length !== 1) throw new Error(`the suite expects a cluster of one node; ${rc.kubeconfig} has ${nodes.items.length}`);
  const helm = (...args: string[]) => execFileP(rc.helm, [...args, "--kubeconfig", rc.kubeconfig], { maxBuffer: 16 << 20 });
  await noOtherOperator(cp, rc.namespace);
  // What an earlier file (or a failed run) left: the chart's release, the process operator's RBAC.
  await helm("uninstall", rc.release, "-n", rc.namespace, "--wait").catch(() => undefined);
  await deleteRbac(cp);
  for (const f of ["replicatorrepositories", "replicatorbackups", "replicatorrestores"]) {
    await cp.applyYaml(path.join(repoRoot, "crds", `replicator.dev_${f}.yaml`));
  }
  const created: string[] = [];
  let env: E2eEnv;
  const common = {
    cp,
    nodeName,
    s3,
    setUpNamespace: async (ns: string, bucket: string, o?: { prefix?: string; extraSpec?: string }) => {
      created.push(ns);
      await setUpNamespace(cp, s3, ns, bucket, o);
    },
    podAddress: async (ns: string, pod: string) => {
      const p = await cp.api.get<{ status?: { podIP?: string } }>(`/api/v1/namespaces/${ns}/pods/${pod}`);
      if (!p.status?.podIP) throw new Error(`pod ${ns}/${pod} has no IP yet`);
      return p.status.podIP;
    },
    containerLog: (ns: string, pod: string, container: string) => cp.api.getText(`/api/v1/namespaces/${ns}/pods/${pod}/log`, { container }).catch(() => ""),
    sql: <T>(ns: string, pod: string, q: string, params?: unknown[]) => sqlOn<T>(env, ns, pod, q, params),
    waitFor: <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs?: number) => waitFor(env, what, fn, timeoutMs),
  };
  // Namespaces go when the env stops (a later file may reuse the name: createNamespace waits for it to be gone).
  const dropNamespaces = async (): Promise<void> => {
    for (const ns of created) await cp.api.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
  };
  if (mode === "process") {
    const { kubeconfig, start } = await processOperator(cp);
    env = {
      ...common,
      operatorKubeconfig: kubeconfig,
      operatorNamespace: OPERATOR_NS,
      operator: await start(),
      restartOperator: async (o = {}) => {
        await (o.kill ? env.operator.kill() : env.operator.stop());
        env.operator = await start();
      },
      stop: async () => {
        await env.operator.stop().catch(() => undefined);
        await dropNamespaces();
        await deleteRbac(cp).catch(() => undefined);
        await s3.stop().catch(() => undefined);
        await cp.stop();
      },
    };
    return env;
  }
  await cp.createNamespace(rc.namespace);
  const [repo, tag] = splitImage(rc.operatorImage);
  const [agentRepo, agentTag] = splitImage(AGENT_IMAGE);
  await helm("install", rc.release, path.join(repoRoot, "charts/replicator-operator"), "-n", rc.namespace,
    "--set", `image.repository=${repo}`, "--set", `image.tag=${tag}`, "--set", "image.pullPolicy=IfNotPresent",
    "--set", `agentImage.repository=${agentRepo}`, "--set", `agentImage.tag=${agentTag}`,
    "--set", "logLevel=debug", "--wait", "--timeout", "180s");
  const chart = chartOperator(cp, rc.namespace);
  const sa = (await renderedRbac()).find((o) => o.kind === "ServiceAccount")?.metadata.name ?? "replicator-operator";
  env = {
    ...common,
    operatorKubeconfig: await cp.serviceAccountKubeconfig(rc.namespace, sa),
    operatorNamespace: rc.namespace,
    operator: await chart.current(),
    restartOperator: async (o = {}) => {
      await (o.kill ? env.operator.kill() : env.operator.stop());
      env.operator = await chart.current();
    },
    stop: async () => {
      await dropNamespaces();
      await helm("uninstall", rc.release, "-n", rc.namespace, "--wait").catch(() => undefined);
      await s3.stop().catch(() => undefined);
      await cp.stop();
    },
  };
  return env;
}

/**
 * The suite needs the cluster's only replicator operator: a second one (another
 * release, someone's manual install) would reconcile the suite's resources too.
 * Waits up to E2E_OTHER_OPERATOR_WAIT seconds (default 420: within a file's set-up timeout) for others to go.
 */
async function noOtherOperator(cp: ControlPlane, ours: string): Promise<void> {
  const deadline = Date.now() + Number(process.env.E2E_OTHER_OPERATOR_WAIT ?? 420) * 1000;
  let said = 0;
  for (;;) {
    const l = await cp.api.get<{ items: { metadata: { name: string; namespace: string } }[] }>("/apis/apps/v1/deployments", { labelSelector: "app.kubernetes.io/name=replicator-operator" });
    const others = l.items.filter((d) => d.metadata.namespace !== ours).map((d) => `${d.metadata.namespace}/${d.metadata.name}`);
    if (others.length === 0) return;
    if (Date.now() > deadline) throw new Error(`another replicator operator runs on this cluster (${others.join(", ")}); the suite needs to be the only one: uninstall it (helm uninstall) and run again`);
    if (Date.now() - said > 60_000) {
      said = Date.now();
      process.stderr.write(`e2e: waiting for the other replicator operator(s) ${others.join(", ")} to be uninstalled\n`);
    }
    await new Promise((r) => setTimeout(r, 5_000));
  }
}

function splitImage(ref: string): [string, string] {
  const i = ref.lastIndexOf(":");
  if (i <= ref.lastIndexOf("/")) return [ref, "latest"];
  return [ref.slice(0, i), ref.slice(i + 1)];
}

async function deleteRbac(cp: ControlPlane): Promise<void> {
  for (const o of await renderedRbac()) {
    const group = o.apiVersion === "v1" ? "/api/v1" : `/apis/${o.apiVersion}`;
    const plural = `${o.kind.toLowerCase()}s`;
    const cluster = o.kind.startsWith("Cluster");
    await cp.api.delete(`${group}${cluster ? "" : `/namespaces/${OPERATOR_NS}`}/${plural}/${o.metadata.name}`).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }
}

/**
 * The chart's operator pod as an OperatorProcess: its health port on the pod
 * IP, its log (and the logs of the pods before it, taken as they were
 * deleted), kill = delete the pod at once, stop = delete it gracefully; the
 * Deployment makes the next one, which current() waits for (Ready).
 */
function chartOperator(cp: ControlPlane, ns: string): { current(): Promise<OperatorProcess> } {
  const earlier: string[] = [];
  const gone = new Set<string>();
  interface Pod { metadata: { name: string; deletionTimestamp?: string }; status?: { podIP?: string; conditions?: { type: string; status: string }[] } }
  const logOf = (name: string): Promise<string> => cp.api.getText(`/api/v1/namespaces/${ns}/pods/${name}/log`).catch(() => "");
  return {
    current: async () => {
      const deadline = Date.now() + 180_000;
      let pod: Pod | undefined;
      for (;;) {
        const pods = await cp.api.get<{ items: Pod[] }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: "app.kubernetes.io/name=replicator-operator" });
        pod = pods.items.find((p) => !gone.has(p.metadata.name) && !p.metadata.deletionTimestamp && p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
        if (pod) break;
        if (Date.now() > deadline) throw new Error(`no Ready operator pod in ${ns} after 180 s`);
        await new Promise((r) => setTimeout(r, 500));
      }
      const name = pod.metadata.name;
      const remove = async (gracePeriodSeconds?: number): Promise<void> => {
        earlier.push(`--- ${name} ---\n${await logOf(name)}`);
        gone.add(name);
        await cp.api.delete(`/api/v1/namespaces/${ns}/pods/${name}`, gracePeriodSeconds === undefined ? undefined : { gracePeriodSeconds: String(gracePeriodSeconds) });
      };
      return {
        pid: 0,
        exited: new Promise<never>(() => undefined),
        healthUrl: `http://${pod.status?.podIP ?? ""}:8080`,
        logFile: `pod ${ns}/${name}`,
        logs: async () => `${earlier.join("\n")}\n${await logOf(name)}`,
        kill: () => remove(0),
        stop: () => remove(),
      };
    },
  };
}

async function setUpNamespace(cp: ControlPlane, s3: S3Server, ns: string, bucket: string, opts: { prefix?: string; extraSpec?: string } = {}): Promise<void> {
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
}

async function sqlOn<T>(env: E2eEnv, ns: string, pod: string, q: string, params?: unknown[]): Promise<T[]> {
  const c = await mysql.createConnection({ host: await env.podAddress(ns, pod), port: 3306, user: "root", password: "", multipleStatements: true });
  try {
    const [rows] = await c.query(q, params);
    return rows as T[];
  } finally {
    await c.end();
  }
}

async function waitFor<T>(env: E2eEnv, what: string, fn: () => Promise<T | undefined>, timeoutMs = realCluster ? 240_000 : 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}\n--- operator log tail ---\n${(await env.operator.logs()).split("\n").slice(-40).join("\n")}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}
