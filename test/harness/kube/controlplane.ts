// A real Kubernetes control plane for tests, without docker or a node:
// etcd + kube-apiserver + kube-controller-manager (binaries from
// hack/build-kube-tools.sh in .tools/bin) on 127.0.0.1 random ports, all state
// in one temp dir. Flags follow hack/kube-tools/smoke.sh (and envtest):
// RBAC on, a static admin token in system:masters, service-account tokens
// signed with a generated key. Pair it with ./kubelet.ts to run Pods.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, openSync, closeSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { execa } from "execa";
import { parseAllDocuments, stringify } from "yaml";
import { freePort } from "../ports.js";
import { isNotFound, KubeHttpError, kubeHttp, type KubeHttp } from "./rest.js";

const repoRoot = path.resolve(import.meta.dirname, "../../..");

export interface ControlPlaneOptions {
  /** Where etcd, kube-apiserver and kube-controller-manager are (default <repo>/.tools/bin, or $KUBE_TOOLS_BIN_DIR). */
  binDir?: string;
  /** Keep the temp dir (logs, certs, etcd data) after stop(); also on with KEEP_KUBE_TMP=1. */
  keepTempDir?: boolean;
  /** Give up starting after this long (default 90 s). */
  startTimeoutMs?: number;
  /** Extra kube-apiserver flags, e.g. ["--feature-gates=..."]. */
  apiServerArgs?: string[];
  /** Extra kube-controller-manager flags. */
  controllerManagerArgs?: string[];
}

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name?: string; namespace?: string; [k: string]: unknown };
  [k: string]: unknown;
}

export interface ControlPlane {
  /** https://127.0.0.1:PORT */
  server: string;
  /** Bearer token of `admin` (group system:masters). */
  adminToken: string;
  /** A kubeconfig file for admin (insecure-skip-tls-verify). */
  kubeconfigPath: string;
  /** The temp dir holding logs (<component>.log), certs and etcd data. */
  tempDir: string;
  /** How long startControlPlane took, in ms. */
  startupMs: number;
  /** A small JSON REST client authenticated as admin. */
  api: KubeHttp;
  /** A fresh client-node KubeConfig for admin. */
  kubeConfig(): KubeConfig;
  /**
   * Create or update every object in a YAML text (or a file path) by
   * server-side apply (field manager "test-harness", forced). Namespaced
   * objects without a namespace go to `opts.namespace` or "default". Waits for
   * applied CRDs to be Established. Returns the objects as the server stored them.
   */
  applyYaml(textOrFile: string, opts?: { namespace?: string }): Promise<KubeObject[]>;
  /** Create a namespace (if missing) and wait for its "default" ServiceAccount. */
  createNamespace(name: string): Promise<void>;
  /**
   * Write a kubeconfig that authenticates as ServiceAccount namespace/saName
   * (created if missing) with a token from the TokenRequest API. Returns its path.
   */
  serviceAccountKubeconfig(namespace: string, saName: string, opts?: { expirationSeconds?: number }): Promise<string>;
  /** The last `lines` lines of a component's log ("etcd" | "kube-apiserver" | "kube-controller-manager"). */
  logTail(component: Component, lines?: number): Promise<string>;
  /** Stop every process (controller manager, API server, etcd) and remove the temp dir. */
  stop(): Promise<void>;
}

export type Component = "etcd" | "kube-apiserver" | "kube-controller-manager";

interface Proc {
  name: Component;
  child: ChildProcess;
  exited: Promise<void>;
  logFile: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const started = Date.now();
  const binDir = opts.binDir ?? process.env.KUBE_TOOLS_BIN_DIR ?? path.join(repoRoot, ".tools/bin");
  for (const b of ["etcd", "kube-apiserver", "kube-controller-manager"]) {
    if (!existsSync(path.join(binDir, b))) throw new Error(`${path.join(binDir, b)} is missing; run hack/build-kube-tools.sh (make kube-tools)`);
  }
  const deadline = started + (opts.startTimeoutMs ?? 90_000);
  const keep = opts.keepTempDir ?? process.env.KEEP_KUBE_TMP === "1";
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-kube-"));
  const procs: Proc[] = [];
  let api: KubeHttp | undefined;

  const stopAll = async (): Promise<void> => {
    api?.close();
    // Reverse start order: controller manager, API server, then etcd.
    for (const p of [...procs].reverse()) await stopProcess(p);
    procs.length = 0;
  };

  try {
    const [etcdPort, etcdPeerPort, apiPort] = await distinctFreePorts(3);
    const server = `https://127.0.0.1:${apiPort}`;
    const pki = await makePki(path.join(dir, "pki"));
    const adminToken = randomBytes(24).toString("hex");
    await writeFile(path.join(pki, "tokens.csv"), `${adminToken},admin,admin-uid,"system:masters"\n`);
    const kubeconfigPath = path.join(dir, "admin.kubeconfig");
    await writeFile(kubeconfigPath, kubeconfigYaml(server, "admin", adminToken, "default"));
    // The controller manager verifies the serving cert against our CA.
    const kcmKubeconfig = path.join(dir, "kcm.kubeconfig");
    await writeFile(kcmKubeconfig, kubeconfigYaml(server, "admin", adminToken, "default", path.join(pki, "ca.crt")));

    // ---------------------------------------------------------------- etcd
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    procs.push(
      startProcess("etcd", path.join(binDir, "etcd"), dir, [
        "--name=test",
        `--data-dir=${path.join(dir, "etcd-data")}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=test=${peerUrl}`,
        "--unsafe-no-fsync=true",
        "--log-level=warn",
      ]),
    );
    // The API server retries etcd itself, so it starts right away.

    // ---------------------------------------------------------------- kube-apiserver
    procs.push(
      startProcess("kube-apiserver", path.join(binDir, "kube-apiserver"), dir, [
        `--etcd-servers=${etcdUrl}`,
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        "--endpoint-reconciler-type=none",
        `--secure-port=${apiPort}`,
        `--cert-dir=${path.join(dir, "apiserver-certs")}`,
        `--tls-cert-file=${path.join(pki, "apiserver.crt")}`,
        `--tls-private-key-file=${path.join(pki, "apiserver.key")}`,
        `--client-ca-file=${path.join(pki, "ca.crt")}`,
        "--service-cluster-ip-range=10.0.0.0/24",
        "--allow-privileged=true",
        "--authorization-mode=RBAC",
        `--token-auth-file=${path.join(pki, "tokens.csv")}`,
        "--service-account-issuer=https://kubernetes.default.svc",
        `--service-account-key-file=${path.join(pki, "sa.pub")}`,
        `--service-account-signing-key-file=${path.join(pki, "sa.key")}`,
        ...(opts.apiServerArgs ?? []),
      ]),
    );
    await waitUntil(deadline, procs, "kube-apiserver /readyz", async () => (await getText(`${server}/readyz`, adminToken)) === "ok");

    const kc = loadKubeConfig(kubeconfigPath);
    api = await kubeHttp(kc);
    const client = api;

    // ---------------------------------------------------------------- kube-controller-manager
    procs.push(
      startProcess("kube-controller-manager", path.join(binDir, "kube-controller-manager"), dir, [
        `--kubeconfig=${kcmKubeconfig}`,
        "--secure-port=0",
        "--leader-elect=false",
        // Everything that works without a real node or cloud. Node lifecycle is
        // off so a paused test never gets its pods evicted.
        `--controllers=${[
          "*",
          "-node-ipam-controller",
          "-node-lifecycle-controller",
          "-taint-eviction-controller",
          "-ttl-controller",
          "-cloud-node-lifecycle-controller",
          "-node-route-controller",
          "-service-lb-controller",
          "-persistentvolume-attach-detach-controller",
        ].join(",")}`,
        "--use-service-account-credentials=false",
        `--service-account-private-key-file=${path.join(pki, "sa.key")}`,
        `--root-ca-file=${path.join(pki, "ca.crt")}`,
        `--cluster-signing-cert-file=${path.join(pki, "ca.crt")}`,
        `--cluster-signing-key-file=${path.join(pki, "ca.key")}`,
        ...(opts.controllerManagerArgs ?? []),
      ]),
    );
    // Pods are refused until their namespace has a "default" ServiceAccount,
    // which the controller manager's serviceaccount controller creates.
    await waitUntil(deadline, procs, "ServiceAccount default/default", () => exists(client, "/api/v1/namespaces/default/serviceaccounts/default"));

    const logTail = async (component: Component, lines = 40): Promise<string> => tail(path.join(dir, `${component}.log`), lines);

    return {
      server,
      adminToken,
      kubeconfigPath,
      tempDir: dir,
      startupMs: Date.now() - started,
      api: client,
      kubeConfig: () => loadKubeConfig(kubeconfigPath),
      applyYaml: (textOrFile, o) => applyYaml(client, textOrFile, o?.namespace ?? "default"),
      createNamespace: async (name) => {
        try {
          await client.post("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
        } catch (err) {
          if (!(err instanceof KubeHttpError && err.status === 409)) throw err;
        }
        await waitUntil(Date.now() + 30_000, procs, `ServiceAccount ${name}/default`, () =>
          exists(client, `/api/v1/namespaces/${name}/serviceaccounts/default`),
        );
      },
      serviceAccountKubeconfig: async (namespace, saName, o) => {
        const token = await serviceAccountToken(client, namespace, saName, o?.expirationSeconds);
        const file = path.join(dir, `sa-${namespace}-${saName}.kubeconfig`);
        await writeFile(file, kubeconfigYaml(server, `system:serviceaccount:${namespace}:${saName}`, token, namespace));
        return file;
      },
      logTail,
      stop: async () => {
        await stopAll();
        if (!keep) await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    // Report the tail of the log of whichever component is to blame.
    const logs: string[] = [];
    for (const p of procs) logs.push(`---- ${p.name} (${p.logFile}) ----\n${await tail(p.logFile, 25)}`);
    await stopAll();
    if (!keep) await rm(dir, { recursive: true, force: true });
    throw new Error(`control plane failed to start: ${(err as Error).message}\n${logs.join("\n")}`, { cause: err });
  }
}

/**
 * A running cluster named by a kubeconfig (a real node, a kind cluster), with
 * the same surface as startControlPlane's: admin API, applyYaml,
 * createNamespace (waiting for a Terminating one of that name to go first),
 * ServiceAccount kubeconfigs. stop() only closes the client: the cluster is
 * not ours to stop.
 */
export async function connectControlPlane(kubeconfigPath: string): Promise<ControlPlane> {
  const started = Date.now();
  const kc = loadKubeConfig(kubeconfigPath);
  const client = await kubeHttp(kc);
  await client.getText("/readyz").catch((err: unknown) => {
    throw new Error(`the cluster of ${kubeconfigPath} does not answer: ${(err as Error).message}`, { cause: err });
  });
  const cluster = kc.getCurrentCluster();
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-cluster-"));
  return {
    server: client.server,
    adminToken: "",
    kubeconfigPath,
    tempDir: dir,
    startupMs: Date.now() - started,
    api: client,
    kubeConfig: () => loadKubeConfig(kubeconfigPath),
    applyYaml: (textOrFile, o) => applyYaml(client, textOrFile, o?.namespace ?? "default"),
    createNamespace: async (name) => {
      const nsPath = `/api/v1/namespaces/${name}`;
      await waitUntil(Date.now() + 300_000, [], `namespace ${name} from an earlier run to be deleted`, async () => {
        const ns = await client.get<{ status?: { phase?: string } }>(nsPath).catch((err: unknown) => {
          if (isNotFound(err)) return undefined;
          throw err;
        });
        return ns?.status?.phase !== "Terminating";
      });
      try {
        await client.post("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name } });
      } catch (err) {
        if (!(err instanceof KubeHttpError && err.status === 409)) throw err;
      }
      await waitUntil(Date.now() + 60_000, [], `ServiceAccount ${name}/default`, () => exists(client, `${nsPath}/serviceaccounts/default`));
    },
    serviceAccountKubeconfig: async (namespace, saName, o) => {
      const token = await serviceAccountToken(client, namespace, saName, o?.expirationSeconds);
      let caFile: string | undefined;
      if (cluster?.caData) {
        caFile = path.join(dir, "ca.crt");
        await writeFile(caFile, Buffer.from(cluster.caData, "base64"));
      } else if (cluster?.caFile) caFile = cluster.caFile;
      const file = path.join(dir, `sa-${namespace}-${saName}.kubeconfig`);
      await writeFile(file, kubeconfigYaml(client.server, `system:serviceaccount:${namespace}:${saName}`, token, namespace, caFile));
      return file;
    },
    logTail: () => Promise.resolve("(a cluster of its own: its components' logs are not the harness's)"),
    stop: async () => {
      client.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A token of ServiceAccount namespace/saName (created if missing) from the TokenRequest API. */
async function serviceAccountToken(client: KubeHttp, namespace: string, saName: string, expirationSeconds = 86_400): Promise<string> {
  const saPath = `/api/v1/namespaces/${namespace}/serviceaccounts`;
  if (!(await exists(client, `${saPath}/${saName}`))) {
    await client.post(saPath, { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: saName, namespace } });
  }
  const tr = await client.post<{ status: { token: string } }>(`${saPath}/${saName}/token`, {
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenRequest",
    spec: { expirationSeconds },
  });
  return tr.status.token;
}

function loadKubeConfig(file: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
}

function kubeconfigYaml(server: string, user: string, token: string, namespace: string, caFile?: string): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "test", cluster: { server, ...(caFile ? { "certificate-authority": caFile } : { "insecure-skip-tls-verify": true }) } }],
    users: [{ name: user, user: { token } }],
    contexts: [{ name: "test", context: { cluster: "test", user, namespace } }],
    "current-context": "test",
  });
}

/** A CA, an API server serving cert for 127.0.0.1/localhost/kubernetes.default.svc, and the service-account key pair. */
async function makePki(pki: string): Promise<string> {
  await mkdir(pki, { recursive: true });
  const ssl = (args: string[]): Promise<unknown> => execa("openssl", args, { cwd: pki });
  await Promise.all([
    ssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-kube-ca",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"]),
    ssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver"]),
    ssl(["genrsa", "-out", "sa.key", "2048"]).then(() => ssl(["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])),
  ]);
  await writeFile(
    path.join(pki, "apiserver.ext"),
    [
      "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc",
      "extendedKeyUsage=serverAuth",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "",
    ].join("\n"),
  );
  await ssl(["x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "apiserver.crt", "-days", "2",
    "-extfile", "apiserver.ext"]);
  return pki;
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

/** Start a binary with stdout+stderr going straight to <dir>/<name>.log. */
function startProcess(name: Component, bin: string, dir: string, args: string[]): Proc {
  const logFile = path.join(dir, `${name}.log`);
  const fd = openSync(logFile, "a");
  try {
    const child = spawn(bin, args, { stdio: ["ignore", fd, fd] });
    const exited = new Promise<void>((resolve) => {
      child.once("exit", () => { resolve(); });
      child.once("error", () => { resolve(); });
    });
    return { name, child, exited, logFile };
  } finally {
    closeSync(fd);
  }
}

async function stopProcess(p: Proc): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill("SIGTERM");
  const timer = setTimeout(() => p.child.kill("SIGKILL"), 5_000);
  await p.exited;
  clearTimeout(timer);
}

/** Poll `check` every 100 ms until true; fail early when a process has died. */
async function waitUntil(deadline: number, procs: Proc[], what: string, check: () => Promise<boolean>): Promise<void> {
  for (;;) {
    const dead = procs.find((p) => p.child.exitCode !== null || p.child.signalCode !== null);
    if (dead) throw new Error(`${dead.name} exited (${dead.child.exitCode ?? dead.child.signalCode ?? "?"}) while waiting for ${what}`);
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

async function exists(api: KubeHttp, p: string): Promise<boolean> {
  try {
    await api.get(p);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** GET a plain-text endpoint such as /readyz (self-signed serving cert, so no verification). */
function getText(url: string, token: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { rejectUnauthorized: false, headers: { Authorization: `Bearer ${token}` }, timeout: 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => { resolve(Buffer.concat(chunks).toString("utf8").trim()); });
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
  });
}

async function tail(file: string, lines: number): Promise<string> {
  try {
    return (await readFile(file, "utf8")).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

// ---------------------------------------------------------------- apply

interface ApiResource {
  name: string;
  kind: string;
  namespaced: boolean;
}

/** Discovery, per apiVersion; refreshed when a kind is missing (a CRD just created). */
class Discovery {
  private readonly cache = new Map<string, ApiResource[]>();
  constructor(private readonly api: KubeHttp) {}

  async resource(apiVersion: string, kind: string, timeoutMs = 30_000): Promise<ApiResource> {
    const deadline = Date.now() + timeoutMs;
    for (let fresh = false; ; fresh = true) {
      if (fresh || !this.cache.has(apiVersion)) {
        const base = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
        try {
          const list = await this.api.get<{ resources: ApiResource[] }>(base);
          this.cache.set(apiVersion, list.resources.filter((r) => !r.name.includes("/")));
        } catch (err) {
          if (!isNotFound(err)) throw err;
          this.cache.delete(apiVersion);
        }
      }
      const found = this.cache.get(apiVersion)?.find((r) => r.kind === kind);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`the API server does not serve ${kind} in ${apiVersion}`);
      await sleep(250);
    }
  }
}

async function applyYaml(api: KubeHttp, textOrFile: string, defaultNamespace: string): Promise<KubeObject[]> {
  const text = !textOrFile.includes("\n") && existsSync(textOrFile) ? await readFile(textOrFile, "utf8") : textOrFile;
  const discovery = new Discovery(api);
  const out: KubeObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`bad YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const obj = doc.toJS() as KubeObject | null;
    if (obj === null) continue;
    if (obj.kind === "List" && Array.isArray(obj.items)) {
      for (const item of obj.items as KubeObject[]) out.push(await applyOne(api, discovery, item, defaultNamespace));
    } else {
      out.push(await applyOne(api, discovery, obj, defaultNamespace));
    }
  }
  return out;
}

async function applyOne(api: KubeHttp, discovery: Discovery, obj: KubeObject, defaultNamespace: string): Promise<KubeObject> {
  const name = obj.metadata.name;
  if (!obj.apiVersion || !obj.kind || !name) throw new Error(`cannot apply an object without apiVersion, kind and metadata.name: ${JSON.stringify(obj).slice(0, 200)}`);
  const res = await discovery.resource(obj.apiVersion, obj.kind);
  const base = obj.apiVersion.includes("/") ? `/apis/${obj.apiVersion}` : `/api/${obj.apiVersion}`;
  let body = obj;
  let collection = `${base}/${res.name}`;
  if (res.namespaced) {
    const ns = obj.metadata.namespace ?? defaultNamespace;
    body = { ...obj, metadata: { ...obj.metadata, namespace: ns } };
    collection = `${base}/namespaces/${ns}/${res.name}`;
  }
  const applied = await api.patch<KubeObject>(`${collection}/${encodeURIComponent(name)}`, body, "apply", { fieldManager: "test-harness", force: "true" });
  if (obj.kind === "CustomResourceDefinition") await waitEstablished(api, name);
  return applied;
}

async function waitEstablished(api: KubeHttp, crd: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const o = await api.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd}`);
    if (o.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) return;
    if (Date.now() > deadline) throw new Error(`CRD ${crd} was not Established within 30 s`);
    await sleep(100);
  }
}
