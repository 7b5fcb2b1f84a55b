// A minimal Kubernetes REST client for the test harness: JSON over HTTPS with
// the credentials of a client-node KubeConfig (bearer token, client certs, CA
// or insecure-skip-tls-verify). Kept separate from src/kube so the
// harness does not depend on the code under test.
import https from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

export type PatchType = "merge" | "strategic" | "json" | "apply";

const PATCH_CONTENT: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
  apply: "application/apply-patch+yaml",
};

/** A non-2xx answer from the API server (the Status object's reason and message). */
export class KubeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = "KubeHttpError";
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof KubeHttpError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof KubeHttpError && e.status === 409;

export interface KubeHttp {
  readonly server: string;
  get<T>(path: string, query?: Record<string, string>): Promise<T>;
  /** A GET whose answer is not JSON (a pod's log). */
  getText(path: string, query?: Record<string, string>): Promise<string>;
  post<T>(path: string, body: unknown, query?: Record<string, string>): Promise<T>;
  put<T>(path: string, body: unknown): Promise<T>;
  patch<T>(path: string, body: unknown, type?: PatchType, query?: Record<string, string>): Promise<T>;
  delete(path: string, query?: Record<string, string>, body?: unknown): Promise<void>;
  /** Close idle keep-alive sockets. */
  close(): void;
}

/** A client for the current context of `kc`. */
export async function kubeHttp(kc: KubeConfig): Promise<KubeHttp> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const base = new URL(cluster.server);
  const opts: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const agent = new https.Agent({
    keepAlive: true,
    ca: opts.ca,
    cert: opts.cert,
    key: opts.key,
    rejectUnauthorized: opts.rejectUnauthorized ?? true,
  });
  const authHeaders: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts.headers ?? {})) if (typeof v === "string") authHeaders[k] = v;

  const withQuery = (path: string, q?: Record<string, string>): string =>
    q && Object.keys(q).length > 0 ? `${path}?${new URLSearchParams(q).toString()}` : path;

  function request(method: string, path: string, body: unknown, contentType: string | undefined): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = https.request(
        new URL(path, base),
        {
          method,
          agent,
          headers: {
            Accept: "application/json",
            ...authHeaders,
            ...(payload ? { "Content-Type": contentType ?? "application/json", "Content-Length": String(payload.length) } : {}),
          },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => { resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }); });
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on("error", reject);
      if (payload) req.write(payload);
      req.end();
    });
  }

  async function call<T>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    const r = await request(method, path, body, contentType);
    if (r.status >= 200 && r.status < 300) return (r.text ? JSON.parse(r.text) : {}) as T;
    let reason = "";
    let message = r.text.slice(0, 500);
    try {
      const s = JSON.parse(r.text) as { reason?: string; message?: string };
      reason = s.reason ?? "";
      message = s.message ?? message;
    } catch {
      // Not a Status object; keep the raw text.
    }
    throw new KubeHttpError(r.status, reason, `${method} ${path}: ${r.status} ${reason}: ${message}`);
  }

  return {
    server: cluster.server,
    get: (path, q) => call("GET", withQuery(path, q)),
    getText: async (path, q) => {
      const r = await request("GET", withQuery(path, q), undefined, undefined);
      if (r.status >= 200 && r.status < 300) return r.text;
      throw new KubeHttpError(r.status, "", `GET ${path}: ${r.status}: ${r.text.slice(0, 500)}`);
    },
    post: (path, body, q) => call("POST", withQuery(path, q), body),
    put: (path, body) => call("PUT", path, body),
    patch: (path, body, type = "merge", q) => call("PATCH", withQuery(path, q), body, PATCH_CONTENT[type]),
    delete: async (path, q, body) => {
      await call("DELETE", withQuery(path, q), body);
    },
    close: () => {
      agent.destroy();
    },
  };
}
