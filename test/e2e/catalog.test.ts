// The catalog sync against the real S3 server: a fault is never a verdict.
// A backup whose manifest turns corrupt keeps its ReplicatorBackup (flagged
// Usable=False); a dead S3 endpoint sets the repository's condition and
// deletes nothing; only a backup really gone loses its resource.
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mariadbStatefulSet, startE2eEnv, type E2eEnv, podReady } from "../harness/e2e-env.js";

const NS = "catalog";
let env: E2eEnv;

interface Condition { type: string; status: string; reason: string; message: string }
interface Obj { metadata: { name: string }; status?: { phase?: string; message?: string; backupName?: string; conditions?: Condition[] } }
const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;
const cond = (o: Obj | undefined, type: string): Condition | undefined => o?.status?.conditions?.find((c) => c.type === type);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  env = await startE2eEnv();
  // The shortest sync interval (10 s; the default is 60 s) so that several syncs pass within the test.
  await env.setUpNamespace(NS, "catalog", { prefix: "k8s", extraSpec: "  syncIntervalSeconds: 10" });
  await env.cp.applyYaml(mariadbStatefulSet(NS, "db", 1), { namespace: NS });
  await podReady(env, NS, "db-0");
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("catalog sync", () => {
  it("keeps a corrupt backup's resource, flagged; deletes nothing while S3 is down; removes only a backup really gone", async () => {
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: b1, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const done = await env.waitFor("b1 to complete", async () => {
      const o = await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1"));
      return o.status?.phase === "Completed" ? o : undefined;
    });
    // Through S3 (a write on disk would be caught by the server's checksum: a storage fault, not a corrupt manifest).
    const s3 = new S3Client({ endpoint: env.s3.endpoint, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: env.s3.accessKeyId, secretAccessKey: env.s3.secretAccessKey } });
    const Key = `k8s/db/${done.status?.backupName ?? "?"}/manifest.json`;
    const good = await (await s3.send(new GetObjectCommand({ Bucket: "catalog", Key }))).Body!.transformToString();
    const put = (Body: string) => s3.send(new PutObjectCommand({ Bucket: "catalog", Key, Body }));

    // 1. A corrupt manifest: the resource stays, Usable=False CorruptManifest; the repository says so.
    await put("{ this is not json");
    const flagged = await env.waitFor("b1 flagged unusable", async () => {
      const o = await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1"));
      return cond(o, "Usable")?.status === "False" ? o : undefined;
    });
    expect(cond(flagged, "Usable")?.reason).toBe("CorruptManifest");
    const repo = await env.waitFor("the repository to name the unusable backup", async () => {
      const r = await env.cp.api.get<Obj>(crPath("replicatorrepositories", "default"));
      return cond(r, "Ready")?.message.includes("unusable") ? r : undefined;
    });
    expect(cond(repo, "Ready")).toMatchObject({ status: "True", reason: "Synced" });
    await sleep(22_000); // two more syncs
    expect((await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1"))).status?.phase).toBe("Completed");

    // 2. Readable again: Usable=True.
    await put(good);
    await env.waitFor("b1 usable again", async () => (cond(await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1")), "Usable")?.status === "True" ? true : undefined));

    // 3. S3 down: the repository's condition carries the fault; nothing is deleted.
    await env.s3.kill();
    try {
      const down = await env.waitFor("the repository to report the fault", async () => {
        const r = await env.cp.api.get<Obj>(crPath("replicatorrepositories", "default"));
        return cond(r, "Ready")?.status === "False" ? r : undefined;
      }, 180_000);
      expect(["StorageUnreachable", "StorageError"]).toContain(cond(down, "Ready")?.reason);
      console.log(`S3 down: ${JSON.stringify(cond(down, "Ready"))}`);
      await sleep(22_000);
      expect((await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1"))).status?.phase).toBe("Completed");
    } finally {
      await env.s3.restart();
    }
    await env.waitFor("the repository to sync again", async () => (cond(await env.cp.api.get<Obj>(crPath("replicatorrepositories", "default")), "Ready")?.status === "True" ? true : undefined), 180_000);
    expect((await env.cp.api.get<Obj>(crPath("replicatorbackups", "b1"))).status?.phase).toBe("Completed");

    // 4. Really gone from a complete listing: the resource is deleted.
    // Deleted by someone else (another tool): every object of the backup, through S3.
    const objects = await s3.send(new ListObjectsV2Command({ Bucket: "catalog", Prefix: `k8s/db/${done.status?.backupName ?? "?"}/` }));
    expect(objects.Contents?.length ?? 0).toBeGreaterThan(0);
    for (const o of objects.Contents ?? []) await s3.send(new DeleteObjectCommand({ Bucket: "catalog", Key: o.Key }));
    await env.waitFor("b1's resource to be deleted", async () => {
      const l = await env.cp.api.get<{ items: Obj[] }>(crPath("replicatorbackups"));
      return l.items.some((i) => i.metadata.name === "b1") ? undefined : true;
    });
  }, 600_000);
});
