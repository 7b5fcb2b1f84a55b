// A thin Kubernetes REST client: the kubeconfig (or the in-cluster service
// account) gives the address, TLS and auth; requests, patches and watches
// are plain HTTPS so every status code and content type is ours to handle.
// A plain kubeconfig is read without client-node (kubeconfig.ts): loading
// client-node costs about 65 MB of RSS and 0.7 s. This is the only module
// that loads it, and only when called for: loadKubeConfig, or
// loadKubeAccess for a kubeconfig that kubeconfig.ts leaves to it (exec and
// auth-provider users, basic auth, impersonation, ...).
import type { KubeConfig } from "@kubernetes/client-node";
import https from "node:https";
import http from "node:http";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { failed } from "../lib/errors.js";
import { readPlainKubeconfig, type KubeAccess } from "./kubeconfig.js";

export type { KubeAccess } from "./kubeconfig.js";

export class KubeApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "KubeApiError";
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof KubeApiError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeApiError && e.status === 409;
export const isAlreadyExists = (e: unknown): boolean => e instanceof KubeApiError && e.status === 409 && e.reason === "AlreadyExists";
export const isGone = (e: unknown): boolean => e instanceof KubeApiError && e.status === 410;

export type PatchType = "merge" | "strategic" | "json";
const PATCH_CONTENT: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
};

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

/* eslint-disable @typescript-eslint/no-unnecessary-type-parameters -- the caller names the JSON shape it expects */
export interface KubeRest {
  get<T>(path: string): Promise<T>;
  list<T>(path: string, query?: Record<string, string>): Promise<{ items: T[]; metadata: { resourceVersion?: string } }>;
  create<T>(path: string, body: unknown): Promise<T>;
  patch<T>(path: string, body: unknown, type?: PatchType): Promise<T>;
  put<T>(path: string, body: unknown): Promise<T>;
  delete(path: string, query?: Record<string, string>): Promise<void>;
  /** Stream watch events until the server closes, `signal` aborts, or nothing arrives for `idleMs`. */
  watch<T>(path: string, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal, idleMs?: number, query?: Record<string, string>): Promise<void>;
  readonly server: string;
}
/* eslint-enable @typescript-eslint/no-unnecessary-type-parameters */

/** client-node's KubeConfig for `kubeconfig` (or its default search); loads client-node (synchronously: require of its ES module). */
export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const { KubeConfig } = createRequire(import.meta.url)("@kubernetes/client-node") as typeof import("@kubernetes/client-node");
  const kc = new KubeConfig();
  if (kubeconfig) kc.loadFromFile(kubeconfig);
  else kc.loadFromDefault();
  if (kubeconfig) tokenFilesAsAuthProvider(kc, kubeconfig);
  return kc;
}

/**
 * What createKubeRest needs for `kubeconfig` (or the default search: $HOME/.kube/config, then
 * in-cluster): read without client-node when it is a plain one (kubeconfig.ts), else through it.
 */
export async function loadKubeAccess(kubeconfig?: string): Promise<KubeAccess> {
  return readPlainKubeconfig(kubeconfig) ?? kubeAccessOf(loadKubeConfig(kubeconfig));
}

/**
 * client-node reads a kubeconfig user's `token-file` once, at load; client-go
 * re-reads it. Give such users client-node's in-cluster `tokenFile` auth
 * provider instead (the one loadFromCluster uses), which re-reads the file
 * about once a minute, so a rotated bound token is picked up.
 */
function tokenFilesAsAuthProvider(kc: KubeConfig, file: string): void {
  let doc: { users?: { name?: string; user?: { "token-file"?: string; token?: string } }[] } | undefined;
  try {
    doc = parseYaml(readFileSync(file, "utf8")) as typeof doc;
  } catch {
    return;
  }
  const files = new Map<string, string>();
  for (const u of doc?.users ?? []) {
    const tf = u.user?.["token-file"];
    if (u.name && tf && !u.user?.token) files.set(u.name, path.resolve(path.dirname(file), tf));
  }
  if (files.size === 0) return;
  kc.users = kc.users.map((u) => {
    const tokenFile = files.get(u.name);
    return tokenFile ? { ...u, token: undefined, authProvider: { name: "tokenFile", config: { tokenFile } } } : u;
  });
}

export interface KubeRestOptions {
  /** Reuse connections (default true). Leader election uses false: every renewal opens a fresh connection, so one half-dead pooled socket cannot eat its renew deadline. */
  keepAlive?: boolean;
  /** A request with no socket activity for this long is destroyed with its socket (default 30 s). */
  requestTimeoutMs?: number;
}

/** The access a client-node KubeConfig gives: its TLS settings, and its authenticators for the headers. */
async function kubeAccessOf(kc: KubeConfig): Promise<KubeAccess> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw failed("NoKubeconfig", "no current cluster in the kubeconfig; set KUBECONFIG or run in a pod");
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const user = kc.getCurrentUser();
  const provider = user?.authProvider as { name?: string; config?: { tokenFile?: string } } | undefined;
  return {
    server: cluster.server,
    ca: opts.ca as Buffer | undefined,
    cert: opts.cert as Buffer | undefined,
    key: opts.key as Buffer | undefined,
    rejectUnauthorized: opts.rejectUnauthorized ?? true,
    tokenFile: provider?.name === "tokenFile" ? provider.config?.tokenFile : undefined,
    // Through client-node's authenticators: exec and OIDC credentials are refreshed when they expire.
    authHeaders: async () => {
      const o: https.RequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      const h: Record<string, string> = {};
      for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === "string") h[k] = v;
      if (o.auth && !h.Authorization) h.Authorization = `Basic ${Buffer.from(o.auth).toString("base64")}`;
      return h;
    },
  };
}

/** A client for the API server `source` names: a client-node KubeConfig, or what loadKubeAccess read. */
export async function createKubeRest(source: KubeConfig | KubeAccess, o: KubeRestOptions = {}): Promise<KubeRest> {
  const keepAlive = o.keepAlive ?? true;
  const requestTimeoutMs = o.requestTimeoutMs ?? 30_000;
  const access = "authHeaders" in source ? source : await kubeAccessOf(source);
  const base = new URL(access.server);
  const isHttps = base.protocol === "https:";
  const agent = isHttps
    ? new https.Agent({ keepAlive, ca: access.ca, cert: access.cert, key: access.key, rejectUnauthorized: access.rejectUnauthorized })
    : new http.Agent({ keepAlive });
  // Credentials are applied per request: an in-cluster (or token-file) token
  // is re-read about once a minute, exec and OIDC credentials are refreshed
  // when they expire. Read once at start, a bound service-account token stops
  // working after an hour.
  const tokenFile = access.tokenFile ? new TokenFile(access.tokenFile) : undefined;
  const authHeaders = async (): Promise<Record<string, string>> => (tokenFile ? { Authorization: `Bearer ${await tokenFile.token()}` } : access.authHeaders());

  async function request(method: string, path: string, body: unknown, contentType: string | undefined, signal?: AbortSignal): Promise<{ status: number; text: string }> {
    const auth = await authHeaders();
    return new Promise((resolve, reject) => {
      const url = new URL(path, base);
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = (isHttps ? https : http).request(
        url,
        {
          method,
          agent,
          headers: {
            Accept: "application/json",
            ...auth,
            ...(payload ? { "Content-Type": contentType ?? "application/json", "Content-Length": String(payload.length) } : {}),
          },
          signal,
          timeout: requestTimeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }); });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`request to ${path} timed out`)));
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  async function call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const sent = Date.now();
    const r = await request(method, path, body, contentType);
    // As client-go: a 401 makes the next request read the token file again (it may have been rotated since).
    if (r.status === 401) tokenFile?.resetOlderThan(sent);
    if (r.status >= 200 && r.status < 300) return (r.text ? JSON.parse(r.text) : {}) as T;
    let reason = "";
    let message = r.text.slice(0, 500);
    try {
      const s = JSON.parse(r.text) as { reason?: string; message?: string };
      reason = s.reason ?? "";
      message = s.message ?? message;
    } catch {
      // not a Status object
    }
    throw new KubeApiError(r.status, reason, `${method} ${path}: ${r.status} ${reason}: ${message}`);
  }

  const withQuery = (path: string, q?: Record<string, string>): string => {
    if (!q || Object.keys(q).length === 0) return path;
    return `${path}?${new URLSearchParams(q).toString()}`;
  };

  return {
    server: access.server,
    get: (path) => call("GET", path),
    list: (path, q) => call("GET", withQuery(path, q)),
    create: (path, body) => call("POST", path, body),
    patch: (path, body, type = "merge") => call("PATCH", path, body, PATCH_CONTENT[type]),
    put: (path, body) => call("PUT", path, body),
    delete: async (path, q) => {
      await call("DELETE", withQuery(path, q));
    },
    watch: async <T>(path: string, resourceVersion: string, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal, idleMs = 90_000, query: Record<string, string> = {}) => {
      const auth = await authHeaders();
      return new Promise<void>((resolve, reject) => {
        const url = new URL(withQuery(path, { timeoutSeconds: "300", ...query, watch: "1", resourceVersion, allowWatchBookmarks: "true" }), base);
        const req = (isHttps ? https : http).request(url, { method: "GET", agent, headers: { Accept: "application/json", ...auth }, signal }, (res) => {
          if (res.statusCode === 401) tokenFile?.resetOlderThan(Date.now());
          if ((res.statusCode ?? 0) >= 300) {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => { reject(new KubeApiError(res.statusCode ?? 0, "", `watch ${path}: ${res.statusCode ?? 0} ${Buffer.concat(chunks).toString("utf8").slice(0, 300)}`)); });
            return;
          }
          // Watchdog: a watch that goes silent (no events, no bookmarks) is restarted.
          let timer = setTimeout(() => req.destroy(new Error("watch idle")), idleMs);
          let buf = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            clearTimeout(timer);
            timer = setTimeout(() => req.destroy(new Error("watch idle")), idleMs);
            buf += chunk;
            let nl: number;
            while ((nl = buf.indexOf("\n")) >= 0) {
              const line = buf.slice(0, nl).trim();
              buf = buf.slice(nl + 1);
              if (!line) continue;
              try {
                onEvent(JSON.parse(line) as WatchEvent<T>);
              } catch (err) {
                clearTimeout(timer);
                req.destroy(err as Error);
                return;
              }
            }
          });
          res.on("end", () => { clearTimeout(timer); resolve(); });
          res.on("error", (err) => { clearTimeout(timer); reject(err); });
        });
        req.on("error", (err) => { if (signal.aborted) resolve(); else reject(err); });
        req.end();
      });
    },
  };
}

/**
 * A service-account token read from a file, as client-go's cached file token
 * source: re-read when older than a minute, and at once after a 401 (the
 * kubelet may have rotated it). Hand-written because client-node's FileAuth
 * cannot be told to re-read after a 401.
 */
export class TokenFile {
  private value = "";
  private readAt = -Infinity;

  constructor(
    private readonly file: string,
    private readonly now: () => number = Date.now,
    private readonly maxAgeMs = 60_000,
  ) {}

  async token(): Promise<string> {
    if (this.now() - this.readAt > this.maxAgeMs) {
      this.value = (await readFile(this.file, "utf8")).trim();
      this.readAt = this.now();
    }
    return this.value;
  }

  /** A request sent at `sent` was refused: read the file again unless it was read after that. */
  resetOlderThan(sent: number): void {
    if (this.readAt <= sent) this.readAt = -Infinity;
  }
}

/** The same client, with `fence(what)` called before every write (leader election: a deposed leader writes nothing). */
export function fencedRest(rest: KubeRest, fence: (what: string) => void): KubeRest {
  return {
    server: rest.server,
    get: (path) => rest.get(path),
    list: (path, q) => rest.list(path, q),
    watch: (path, rv, onEvent, signal, idleMs, q) => rest.watch(path, rv, onEvent, signal, idleMs, q),
    create: async (path, body) => {
      fence(`POST ${path}`);
      return rest.create(path, body);
    },
    patch: async (path, body, type) => {
      fence(`PATCH ${path}`);
      return rest.patch(path, body, type);
    },
    put: async (path, body) => {
      fence(`PUT ${path}`);
      return rest.put(path, body);
    },
    delete: async (path, q) => {
      fence(`DELETE ${path}`);
      return rest.delete(path, q);
    },
  };
}
