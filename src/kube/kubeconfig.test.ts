import http from "node:http";
import type https from "node:https";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readPlainKubeconfig, type KubeAccess } from "./kubeconfig.js";
import { createKubeRest, loadKubeAccess, loadKubeConfig } from "./rest.js";

let server: http.Server;
let url = "";
let dir = "";
const seen: string[] = [];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "kubeconfig-test-"));
  server = http.createServer((req, res) => {
    seen.push(req.headers.authorization ?? "");
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ metadata: { name: "x" } }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

let n = 0;
async function kubeconfig(cluster: string, user: string): Promise<string> {
  const file = path.join(dir, `kubeconfig-${n++}`);
  await writeFile(
    file,
    `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: ${cluster} }]
users: [{ name: u, user: ${user} }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
  );
  return file;
}

/** What client-node makes of a kubeconfig (as createKubeRest used it before kubeconfig.ts). */
async function clientNodeReads(file: string): Promise<Omit<KubeAccess, "authHeaders"> & { headers: Record<string, string> }> {
  const kc = loadKubeConfig(file);
  const o: https.RequestOptions = {};
  await kc.applyToHTTPSOptions(o);
  const provider = kc.getCurrentUser()?.authProvider as { name?: string; config?: { tokenFile?: string } } | undefined;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === "string") headers[k] = v;
  return {
    server: kc.getCurrentCluster()?.server ?? "",
    ca: o.ca as Buffer | undefined,
    cert: o.cert as Buffer | undefined,
    key: o.key as Buffer | undefined,
    rejectUnauthorized: o.rejectUnauthorized ?? true,
    tokenFile: provider?.name === "tokenFile" ? provider.config?.tokenFile : undefined,
    // A token file is read by TokenFile in both cases; client-node's own header for it is not what is sent.
    headers: provider?.name === "tokenFile" ? {} : headers,
  };
}

async function plainReads(file: string): Promise<Omit<KubeAccess, "authHeaders"> & { headers: Record<string, string> }> {
  const a = readPlainKubeconfig(file);
  if (!a) throw new Error(`${file} was left to client-node`);
  const { authHeaders, ...rest } = a;
  return { ...rest, headers: await authHeaders() };
}

describe("a plain kubeconfig, read without client-node", () => {
  it("gives the server, TLS material and credentials client-node gives", async () => {
    await mkdir(path.join(dir, "pki"), { recursive: true });
    await writeFile(path.join(dir, "pki/ca.crt"), "ca-bytes");
    await writeFile(path.join(dir, "pki/client.crt"), "cert-bytes");
    await writeFile(path.join(dir, "pki/client.key"), "key-bytes");
    const tokenFile = path.join(dir, "token");
    await writeFile(tokenFile, "file-token\n");
    const b64 = (s: string): string => Buffer.from(s).toString("base64");
    const cases = [
      // A static token, TLS verification off, a trailing slash on the server.
      [`{ server: "https://api.example:6443/", insecure-skip-tls-verify: true }`, `{ token: static-token }`],
      // A ServiceAccount token file (read again as it rotates), a CA file relative to the kubeconfig.
      [`{ server: "https://10.0.0.1:443", certificate-authority: pki/ca.crt }`, `{ token-file: "${tokenFile}" }`],
      // A client certificate from files (relative), and one inline; a token wins over a token file.
      [`{ server: "https://api.example:6443", certificate-authority-data: ${b64("ca-inline")} }`, `{ client-certificate: pki/client.crt, client-key: pki/client.key }`],
      [`{ server: "https://api.example:6443" }`, `{ client-certificate-data: ${b64("cert-inline")}, client-key-data: ${b64("key-inline")}, token: t, token-file: "${tokenFile}" }`],
    ] as const;
    for (const [cluster, user] of cases) {
      const file = await kubeconfig(cluster, user);
      expect(await plainReads(file), `${cluster} ${user}`).toEqual(await clientNodeReads(file));
    }
  });

  it("a request carries the kubeconfig's token, and the token file's as it is now", async () => {
    const tokenFile = path.join(dir, "sa-token");
    await writeFile(tokenFile, "sa-token-1\n");
    const rest = await createKubeRest(await loadKubeAccess(await kubeconfig(`{ server: "${url}", insecure-skip-tls-verify: true }`, `{ token-file: "${tokenFile}" }`)));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer sa-token-1");
    const stat = await createKubeRest(await loadKubeAccess(await kubeconfig(`{ server: "${url}", insecure-skip-tls-verify: true }`, `{ token: static-token }`)));
    await stat.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer static-token");
  });

  it("in a pod: the ServiceAccount's token and CA, and the service's address", async () => {
    const sa = path.join(dir, "serviceaccount");
    await mkdir(sa, { recursive: true });
    await writeFile(path.join(sa, "token"), "pod-token");
    await writeFile(path.join(sa, "ca.crt"), "cluster-ca");
    const env = { HOME: path.join(dir, "no-home"), KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" };
    const a = readPlainKubeconfig(undefined, { env, serviceAccountDir: sa, platform: "linux" });
    expect(a).toMatchObject({ server: "https://[fd00::1]:443", ca: Buffer.from("cluster-ca"), rejectUnauthorized: true, tokenFile: path.join(sa, "token") });
    // Outside a pod (no token mounted), client-node's default search decides.
    expect(readPlainKubeconfig(undefined, { env, serviceAccountDir: path.join(dir, "none"), platform: "linux" })).toBeUndefined();
  });

  it("anything else is read by client-node, as before: an exec plugin's token reaches the server", async () => {
    const plugin = path.join(dir, "exec-plugin.sh");
    await writeFile(
      plugin,
      `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"exec-token"}}'\n`,
    );
    await chmod(plugin, 0o755);
    const file = await kubeconfig(`{ server: "${url}", insecure-skip-tls-verify: true }`, `{ exec: { apiVersion: client.authentication.k8s.io/v1, command: "${plugin}", interactiveMode: Never } }`);
    expect(readPlainKubeconfig(file)).toBeUndefined();
    const rest = await createKubeRest(await loadKubeAccess(file));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer exec-token");
    // Basic auth, impersonation, a proxy, and plain HTTP with TLS verification on (client-node refuses it) are client-node's too.
    expect(readPlainKubeconfig(await kubeconfig(`{ server: "https://api.example", proxy-url: "http://proxy:3128" }`, `{ token: t }`))).toBeUndefined();
    await expect(loadKubeAccess(await kubeconfig(`{ server: "${url}" }`, `{ token: t }`))).rejects.toThrow(/HTTP protocol is not allowed/);
    expect(readPlainKubeconfig(await kubeconfig(`{ server: "${url}" }`, `{ username: a, password: b }`))).toBeUndefined();
    expect(readPlainKubeconfig(await kubeconfig(`{ server: "${url}" }`, `{ token: t, as: someone }`))).toBeUndefined();
  });
});
