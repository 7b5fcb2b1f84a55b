// The API server's address and credentials, read without client-node when the
// kubeconfig is a plain one: in-cluster (the ServiceAccount's token, CA and
// KUBERNETES_SERVICE_HOST/PORT, what the operator's pod uses), or a file whose
// current user has a token, a token file and/or a client certificate. Loading
// client-node costs the operator about 65 MB of RSS and 0.7 s (its generated
// models and API classes); it is loaded (rest.ts, loadKubeAccess) only for
// what this reader leaves to it: exec and auth-provider users, basic auth,
// impersonation, a KUBECONFIG list, or anything it does not recognise, so
// those behave exactly as they did.
//
// What it reads follows client-node's KubeConfig.loadFromDefault/loadFromFile
// and applyToHTTPSOptions, as createKubeRest used them: a kubeconfig user's
// `token-file` is re-read as client-go does (TokenFile), not read once.
import { accessSync, readFileSync } from "node:fs";
import { isIPv6 } from "node:net";
import path from "node:path";
import { parse as parseYaml } from "yaml";

/** What createKubeRest needs to reach the API server. */
export interface KubeAccess {
  /** The API server's URL (no trailing slash). */
  server: string;
  ca?: Buffer | undefined;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
  /** False for `insecure-skip-tls-verify: true`. */
  rejectUnauthorized: boolean;
  /** A bearer token read from this file, and read again as it rotates (see TokenFile). */
  tokenFile?: string | undefined;
  /** The authentication headers of a request (when there is no tokenFile). */
  authHeaders: () => Promise<Record<string, string>>;
}

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

export interface KubeconfigEnv {
  env: NodeJS.ProcessEnv;
  /** The ServiceAccount's mount (token, ca.crt); a test points it elsewhere. */
  serviceAccountDir: string;
  platform: NodeJS.Platform;
}

const exists = (file: string): boolean => {
  try {
    accessSync(file);
    return true;
  } catch {
    return false;
  }
};

/**
 * The access `kubeconfig` (or, without it, client-node's default search: $HOME/.kube/config, then
 * in-cluster) gives, when it can be read without client-node; undefined when client-node must read it.
 */
export function readPlainKubeconfig(kubeconfig: string | undefined, o: KubeconfigEnv = { env: process.env, serviceAccountDir: SERVICE_ACCOUNT_DIR, platform: process.platform }): KubeAccess | undefined {
  if (kubeconfig) return readFile(kubeconfig, true);
  // client-node's loadFromDefault: $KUBECONFIG (a list, merged), $HOME/.kube/config, in-cluster, localhost:8080.
  if (o.env.KUBECONFIG || o.platform === "win32") return undefined;
  const home = o.env.HOME && exists(o.env.HOME) ? o.env.HOME : undefined;
  if (home && exists(path.join(home, ".kube", "config"))) return readFile(path.join(home, ".kube", "config"), false);
  const token = path.join(o.serviceAccountDir, "token");
  if (!exists(token)) return undefined;
  return inCluster(o.env, o.serviceAccountDir);
}

/** client-node's loadFromCluster: the ServiceAccount's CA and token, the service's address. */
function inCluster(env: NodeJS.ProcessEnv, dir: string): KubeAccess | undefined {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return undefined;
  // client-node picks http for these ports, and then refuses it (HTTP without skipTLSVerify): its error.
  if (port === "80" || port === "8080" || port === "8001") return undefined;
  let ca: Buffer;
  try {
    ca = readFileSync(path.join(dir, "ca.crt"));
  } catch {
    return undefined;
  }
  return {
    server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
    ca,
    rejectUnauthorized: true,
    tokenFile: path.join(dir, "token"),
    authHeaders: () => Promise.resolve({}),
  };
}

type Fields = Record<string, unknown>;
const isFields = (v: unknown): v is Fields => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * A kubeconfig list (clusters, users, contexts) as name → its `key` object; undefined when an entry
 * is one client-node refuses (no name, no `key` object), so that it says why.
 */
function namedList(list: unknown, key: string): Map<string, Fields> | undefined {
  const out = new Map<string, Fields>();
  if (list === undefined || list === null) return out;
  if (!Array.isArray(list)) return undefined;
  for (const e of list as unknown[]) {
    if (!isFields(e) || typeof e.name !== "string" || e.name === "" || !isFields(e[key])) return undefined;
    // client-node's findObject takes the first entry of a name.
    if (!out.has(e.name)) out.set(e.name, e[key]);
  }
  return out;
}

/** The fields of a user this reader handles; any other credential (exec, auth-provider, username, impersonation) is client-node's. */
const PLAIN_USER_KEYS = new Set(["token", "token-file", "client-certificate", "client-certificate-data", "client-key", "client-key-data"]);
const CREDENTIAL_KEYS = ["exec", "auth-provider", "username", "password", "as", "as-groups", "as-uid", "as-user-extra"];

/**
 * `rereadTokenFile`: a user's token-file is read again as it rotates (loadKubeConfig does that for a
 * kubeconfig it is given); otherwise (the default $HOME/.kube/config) client-node reads it once, and
 * such a user is left to it.
 */
function readFile(file: string, rereadTokenFile: boolean): KubeAccess | undefined {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, "utf8"));
  } catch {
    // Missing, unreadable or not YAML: client-node says so, as it always did.
    return undefined;
  }
  if (!isFields(doc)) return undefined;
  const clusters = namedList(doc.clusters, "cluster");
  const users = namedList(doc.users, "user");
  const contexts = namedList(doc.contexts, "context");
  if (!clusters || !users || !contexts) return undefined;
  // client-node refuses a cluster without a server and a context without a cluster.
  if ([...clusters.values()].some((c) => typeof c.server !== "string" || c.server === "")) return undefined;
  if ([...contexts.values()].some((c) => !c.cluster)) return undefined;
  const context = typeof doc["current-context"] === "string" ? contexts.get(doc["current-context"]) : undefined;
  const cluster = typeof context?.cluster === "string" ? clusters.get(context.cluster) : undefined;
  const user = typeof context?.user === "string" ? users.get(context.user) : undefined;
  // No cluster: createKubeRest's error. No user: client-node applies no TLS settings at all. Both stay client-node's.
  if (!cluster || !user) return undefined;
  // client-node refuses plain HTTP unless TLS verification is off, and goes through a proxy-url (createKubeRest did not).
  const server = cluster.server as string;
  const insecure = cluster["insecure-skip-tls-verify"] === true;
  if (!(server.startsWith("https:") || (server.startsWith("http:") && insecure)) || (cluster["proxy-url"] !== undefined && cluster["proxy-url"] !== null)) return undefined;
  if (CREDENTIAL_KEYS.some((k) => user[k] !== undefined && user[k] !== null)) return undefined;
  if (Object.entries(user).some(([k, v]) => PLAIN_USER_KEYS.has(k) && v !== undefined && v !== null && typeof v !== "string")) return undefined;
  const dir = path.dirname(file);
  const str = (v: unknown): string | undefined => (typeof v === "string" && v !== "" ? v : undefined);
  // client-node's bufferFromFileOrString, with paths relative to the kubeconfig's directory (makePathsAbsolute).
  const material = (fileKey: unknown, dataKey: unknown): Buffer | undefined => {
    const f = str(fileKey);
    if (f) return readFileSync(path.isAbsolute(f) ? f : path.join(dir, f));
    const d = str(dataKey);
    return d ? Buffer.from(d, "base64") : undefined;
  };
  const token = str(user.token);
  const tokenFile = str(user["token-file"]);
  // client-node reads a token file when it loads the kubeconfig (and fails there when it cannot).
  if (tokenFile && !token && (!rereadTokenFile || !path.isAbsolute(tokenFile) || !exists(tokenFile))) return undefined;
  try {
    return {
      server: server.replace(/\/$/, ""),
      ca: material(cluster["certificate-authority"], cluster["certificate-authority-data"]),
      cert: material(user["client-certificate"], user["client-certificate-data"]),
      key: material(user["client-key"], user["client-key-data"]),
      rejectUnauthorized: !insecure,
      // A static token wins over a token file, as in client-node.
      tokenFile: token ? undefined : tokenFile,
      authHeaders: () => Promise.resolve<Record<string, string>>(token ? { Authorization: `Bearer ${token}` } : {}),
    };
  } catch {
    // A certificate file that cannot be read: client-node's error.
    return undefined;
  }
}
