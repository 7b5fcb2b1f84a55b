import http from "node:http";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createKubeRest, loadKubeConfig } from "./rest.js";

let server: http.Server;
let url = "";
let dir = "";
const seen: string[] = [];
let rejectNext = false;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "rest-test-"));
  server = http.createServer((req, res) => {
    seen.push(req.headers.authorization ?? "");
    if (rejectNext) {
      rejectNext = false;
      res.writeHead(401, { "Content-Type": "application/json" }).end(JSON.stringify({ kind: "Status", reason: "Unauthorized", message: "Unauthorized" }));
      return;
    }
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ metadata: { name: "x" } }));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const addr = server.address();
  url = `http://127.0.0.1:${typeof addr === "object" && addr ? addr.port : 0}`;
});

afterAll(async () => {
  vi.useRealTimers();
  await new Promise((r) => server.close(r));
  await rm(dir, { recursive: true, force: true });
});

describe("createKubeRest credentials", () => {
  it("a rotated token file is picked up by the next request after about a minute (as client-go)", async () => {
    const tokenFile = path.join(dir, "token");
    await writeFile(tokenFile, "first-token");
    const kubeconfig = path.join(dir, "kubeconfig");
    await writeFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "${url}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token-file: "${tokenFile}" } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
    );
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-11-29T12:00:00Z"));
    const rest = await createKubeRest(loadKubeConfig(kubeconfig));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer first-token");
    // The kubelet rotates the projected token.
    await writeFile(tokenFile, "second-token");
    vi.setSystemTime(new Date("2026-11-29T12:01:01Z"));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer second-token");
    vi.useRealTimers();
  });

  it("a 401 makes the next request read the token file again at once (as client-go)", async () => {
    const tokenFile = path.join(dir, "token-401");
    await writeFile(tokenFile, "old-token");
    const kubeconfig = path.join(dir, "kubeconfig-401");
    await writeFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "${url}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token-file: "${tokenFile}" } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
    );
    const rest = await createKubeRest(loadKubeConfig(kubeconfig));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer old-token");
    await writeFile(tokenFile, "new-token");
    rejectNext = true;
    await expect(rest.get("/api/v1/namespaces/a")).rejects.toThrow(/401/);
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer new-token");
  });

  it("a static token stays as it is", async () => {
    const kubeconfig = path.join(dir, "kubeconfig-static");
    await writeFile(
      kubeconfig,
      `apiVersion: v1
kind: Config
clusters: [{ name: c, cluster: { server: "${url}", insecure-skip-tls-verify: true } }]
users: [{ name: u, user: { token: static-token } }]
contexts: [{ name: x, context: { cluster: c, user: u } }]
current-context: x
`,
    );
    const rest = await createKubeRest(loadKubeConfig(kubeconfig));
    await rest.get("/api/v1/namespaces/a");
    expect(seen.at(-1)).toBe("Bearer static-token");
  });
});
