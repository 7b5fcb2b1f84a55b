// A service-account token rotated while the operator runs: the operator reads
// its token from a file (as in a pod: a projected, kubelet-rotated token), the
// file gets a new token, and the old one is revoked (its bound object is
// deleted). The operator picks the new one up (client-node re-reads the file
// about once a minute, as client-go) and keeps working without a restart.
import { readFile, writeFile } from "node:fs/promises";
import https from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_IMAGE, OPERATOR_NS, mariadbStatefulSet, startE2eEnv, type E2eEnv, backupFinished, backupYaml, podReady } from "../harness/e2e-env.js";
import { startOperator, type OperatorProcess } from "../harness/operator.js";

const NS = "tokens";
let env: E2eEnv;
let op: OperatorProcess | undefined;
let tokenFile = "";
let sa = "";
let server = "";
let firstToken = "";

/** The HTTP status the API server answers a request made with `token`. */
function statusWith(token: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${server}/api/v1/namespaces/${NS}/pods`, { headers: { Authorization: `Bearer ${token}` }, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

const backup = (name: string): string => backupYaml(NS, name);

async function completed(name: string): Promise<void> {
  const s = await backupFinished(env, NS, name, 240_000);
  expect(s.phase, s.message).toBe("Completed");
}

/** A token for the operator's ServiceAccount, bound to a Secret: deleting the Secret revokes it. */
async function boundToken(anchor: string): Promise<string> {
  const secret = await env.cp.api.post<{ metadata: { uid: string } }>(`/api/v1/namespaces/${OPERATOR_NS}/secrets`, { apiVersion: "v1", kind: "Secret", metadata: { name: anchor, namespace: OPERATOR_NS } });
  const tr = await env.cp.api.post<{ status: { token: string } }>(`/api/v1/namespaces/${OPERATOR_NS}/serviceaccounts/${sa}/token`, {
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenRequest",
    spec: { expirationSeconds: 3600, boundObjectRef: { apiVersion: "v1", kind: "Secret", name: anchor, uid: secret.metadata.uid } },
  });
  return tr.status.token;
}

beforeAll(async () => {
  env = await startE2eEnv({ operator: "process" });
  await env.operator.stop();
  const kc = await readFile(env.operatorKubeconfig, "utf8");
  sa = /system:serviceaccount:[^:]+:([\w.-]+)/.exec(kc)?.[1] ?? "";
  if (!sa) throw new Error("no service account in the operator's kubeconfig");
  tokenFile = `${env.operatorKubeconfig}.token`;
  firstToken = await boundToken("token-anchor-1");
  await writeFile(tokenFile, firstToken);
  server = /server:\s*"?(https:\/\/[^\s"]+)"?/.exec(kc)?.[1] ?? "";
  const fileKc = `${env.operatorKubeconfig}.token-file`;
  await writeFile(
    fileKc,
    `apiVersion: v1
kind: Config
clusters: [{ name: test, cluster: { server: "${server}", insecure-skip-tls-verify: true } }]
users: [{ name: operator, user: { token-file: "${tokenFile}" } }]
contexts: [{ name: test, context: { cluster: test, user: operator } }]
current-context: test
`,
  );
  op = await startOperator({ kubeconfig: fileKc, agentImage: AGENT_IMAGE, podNamespace: OPERATOR_NS, identity: "operator-token-file" });
  env.operator = op;
  await env.setUpNamespace(NS, "tokens");
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1), { namespace: NS });
  await podReady(env, NS, "db-0");
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("a rotated service-account token", () => {
  it("is picked up from the file while the operator runs; the revoked one is no longer used", async () => {
    await env.cp.applyYaml(backup("t1"), { namespace: NS });
    await completed("t1");
    // Rotate: the file gets a new token, then the old one is revoked.
    await writeFile(tokenFile, await boundToken("token-anchor-2"));
    await env.cp.api.delete(`/api/v1/namespaces/${OPERATOR_NS}/secrets/token-anchor-1`);
    await env.waitFor("the old token to be revoked", async () => ((await statusWith(firstToken)) === 401 ? true : undefined));
    const rotatedAt = Date.now();
    await env.cp.applyYaml(backup("t2"), { namespace: NS });
    await completed("t2");
    console.log(`backup after the rotation completed ${Date.now() - rotatedAt} ms after the old token was revoked`);
    // Still the same process: no restart was needed.
    expect(await Promise.race([op!.exited, new Promise((r) => setTimeout(() => { r("running"); }, 100))])).toBe("running");
  }, 300_000);
});
