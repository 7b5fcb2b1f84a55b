// An https S3 endpoint whose certificate a private CA signed, named by the
// repository's spec.s3.caSecret: the operator trusts it for its own requests
// (the catalog sync lists and reads manifests), the backup and restore Jobs by
// NODE_EXTRA_CA_CERTS on the mounted key. The same endpoint without caSecret:
// the repository says which certificate it does not trust and what to set.
// A second versitygw serves https on the address pods reach (on a real node,
// the node's).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mariadbStatefulSet, podReady, resourceFinished, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";
import { startS3, type S3Server } from "../harness/s3.js";
import { makePrivateCa, type PrivateCa } from "../harness/tls.js";

const NS = "s3-tls";
const BUCKET = "tls";
let env: E2eEnv;
let ca: PrivateCa;
let tlsS3: S3Server;

interface Condition { type: string; status: string; reason: string; message: string }
interface Status { phase?: string; message?: string; backupName?: string; backups?: number; conditions?: Condition[] }
const crPath = (plural: string, name: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}/${name}`;
const ready = (s: Status | undefined): Condition | undefined => s?.conditions?.find((c) => c.type === "Ready");
const sql = <T = Record<string, unknown>>(q: string): Promise<T[]> => env.sql<T>(NS, "db-0", q);
const indent = (pem: string): string => pem.trim().split("\n").map((l) => `    ${l}`).join("\n");

beforeAll(async () => {
  env = await startE2eEnv();
  const host = new URL(env.s3.endpoint).hostname;
  ca = makePrivateCa([host]);
  tlsS3 = await startS3({ host, tls: { certFile: `${ca.dir}/cert.pem`, keyFile: `${ca.dir}/key.pem` } });
  await tlsS3.createBucket(BUCKET);
  // The namespace's Secrets and its (plain http) default repository; then two on the https endpoint.
  await env.setUpNamespace(NS, "tls-default");
  await env.cp.applyYaml(
    `
apiVersion: v1
kind: Secret
metadata: { name: s3-ca, namespace: ${NS} }
stringData:
  ca.crt: |
${indent(ca.caPem)}
---
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: tls, namespace: ${NS} }
spec:
  s3: { bucket: ${BUCKET}, endpoint: "${tlsS3.endpoint}", credentialsSecret: { name: s3-credentials }, caSecret: { name: s3-ca } }
  syncIntervalSeconds: 10
---
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: untrusted, namespace: ${NS} }
spec:
  s3: { bucket: ${BUCKET}, endpoint: "${tlsS3.endpoint}", credentialsSecret: { name: s3-credentials } }
  syncIntervalSeconds: 10
---
${mariadbStatefulSet(NS, "db", 1)}
`,
    { namespace: NS },
  );
  await podReady(env, NS, "db-0");
  await sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB");
  await sql(`INSERT INTO shop.items VALUES ${Array.from({ length: 500 }, (_, i) => `(${i + 1}, 'item ${i + 1}')`).join(",")}`);
}, 600_000);

afterAll(async () => {
  await (tlsS3 as S3Server | undefined)?.stop();
  (ca as PrivateCa | undefined)?.remove();
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("an https S3 endpoint signed by a private CA", () => {
  it("with spec.s3.caSecret: a backup Job writes it, the operator lists it, a restore Job brings the rows back", async () => {
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: over-tls, namespace: ${NS} }
spec:
  repository: tls
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const b = await resourceFinished<Status>(env, NS, "replicatorbackups", "over-tls");
    expect(b.phase, b.message).toBe("Completed");
    // What the Job wrote is in the https server's bucket (versitygw's posix backend: <root>/<bucket>/<key>).
    const listed = await env.waitFor("the tls repository to list the backup", async () => {
      const r = await env.cp.api.get<{ status?: Status }>(crPath("replicatorrepositories", "tls"));
      return ready(r.status)?.status === "True" && r.status?.backups === 1 ? r.status : undefined;
    });
    expect(ready(listed)?.reason).toBe("Synced");

    await sql("DROP DATABASE shop");
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: from-tls, namespace: ${NS} }
spec:
  repository: tls
  cluster: db
  backup: ${b.backupName ?? "latest"}
  target: { pod: db-0, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const r = await resourceFinished<Status>(env, NS, "replicatorrestores", "from-tls");
    expect(r.phase, r.message).toBe("Completed");
    const [n] = await sql<{ n: number | string; s: number | string }>("SELECT COUNT(*) AS n, SUM(id) AS s FROM shop.items");
    expect([Number(n?.n), Number(n?.s)]).toEqual([500, (500 * 501) / 2]);
  });

  it("without caSecret: Ready=False naming the untrusted certificate and spec.s3.caSecret; nothing is imported", async () => {
    const st = await env.waitFor("the untrusted repository to report", async () => {
      const r = await env.cp.api.get<{ status?: Status }>(crPath("replicatorrepositories", "untrusted"));
      return ready(r.status)?.status === "False" ? r.status : undefined;
    });
    expect(ready(st)?.message).toMatch(/presented a TLS certificate this process does not trust \(unable to verify the first certificate\); if a private CA signed it, name a Secret holding that CA's PEM in the ReplicatorRepository's spec\.s3\.caSecret/);
    expect(st.backups ?? 0).toBe(0);
  });
});
