// The examples under deploy/examples are part of the product: every Secret
// and key they reference, directly (secretKeyRef) or through what the
// operator reads (credentialsSecret with its default keys, the provisioning
// annotations), is defined by the examples with that key; the provisioned
// StatefulSet has a readiness probe that passes after a physical restore; and
// image builds do not send local caches.
import { readFile, readdir } from "node:fs/promises";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { backupSpecSchema, repositorySpecSchema, restoreSpecSchema, validateSpec } from "../../src/api/v1alpha1.js";
import { provisionSettings } from "../../src/operator/controllers/provision/decide.js";

const root = path.resolve(import.meta.dirname, "../..");
const dir = path.join(root, "deploy/examples");

interface Obj {
  kind: string;
  metadata: { name: string; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  stringData?: Record<string, string>;
  data?: Record<string, string>;
}

async function examples(): Promise<{ file: string; obj: Obj }[]> {
  const out: { file: string; obj: Obj }[] = [];
  for (const f of (await readdir(dir)).filter((x) => x.endsWith(".yaml")).sort()) {
    for (const d of parseAllDocuments(await readFile(path.join(dir, f), "utf8"))) {
      const obj = d.toJSON() as Obj | null;
      if (obj?.kind) out.push({ file: f, obj });
    }
  }
  return out;
}

/** Every secretKeyRef in an object, wherever it is. */
function secretKeyRefs(v: unknown, out: { name: string; key: string }[] = []): { name: string; key: string }[] {
  if (Array.isArray(v)) for (const x of v) secretKeyRefs(x, out);
  else if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    const ref = o.secretKeyRef as { name?: string; key?: string } | undefined;
    if (ref?.name && ref.key) out.push({ name: ref.name, key: ref.key });
    for (const x of Object.values(o)) secretKeyRefs(x, out);
  }
  return out;
}

describe("deploy/examples", () => {
  it("define every Secret and key they use, with the keys the operator reads", async () => {
    const all = await examples();
    const secrets = new Map<string, Set<string>>();
    for (const { obj } of all.filter((e) => e.obj.kind === "Secret")) {
      const keys = secrets.get(obj.metadata.name) ?? new Set<string>();
      for (const k of Object.keys({ ...obj.stringData, ...obj.data })) keys.add(k);
      secrets.set(obj.metadata.name, keys);
    }
    const uses: { file: string; name: string; key: string; by: string }[] = [];
    for (const { file, obj } of all) {
      for (const r of secretKeyRefs(obj.spec)) uses.push({ file, ...r, by: `secretKeyRef in ${obj.kind} ${obj.metadata.name}` });
      const by = `${obj.kind} ${obj.metadata.name}`;
      const ref = (s: { name: string; userKey: string; passwordKey: string } | undefined, field: string): void => {
        if (!s) return;
        uses.push({ file, name: s.name, key: s.userKey, by: `${by} ${field}` }, { file, name: s.name, key: s.passwordKey, by: `${by} ${field}` });
      };
      if (obj.kind === "ReplicatorBackup") {
        const v = validateSpec(backupSpecSchema, obj.spec);
        expect(v.ok, `${file}: ${v.ok ? "" : v.message}`).toBe(true);
        if (v.ok) ref(v.value.source?.credentialsSecret, "spec.source.credentialsSecret");
      }
      if (obj.kind === "ReplicatorRestore") {
        const v = validateSpec(restoreSpecSchema, obj.spec);
        expect(v.ok, `${file}: ${v.ok ? "" : v.message}`).toBe(true);
        if (v.ok) {
          ref(v.value.target.credentialsSecret, "spec.target.credentialsSecret");
          ref(v.value.replicateFrom?.credentialsSecret, "spec.replicateFrom.credentialsSecret");
        }
      }
      if (obj.kind === "ReplicatorRepository") {
        const v = validateSpec(repositorySpecSchema, obj.spec);
        expect(v.ok, `${file}: ${v.ok ? "" : v.message}`).toBe(true);
        const c = v.ok ? v.value.s3?.credentialsSecret : undefined;
        if (c) uses.push({ file, name: c.name, key: c.accessKeyIdKey, by }, { file, name: c.name, key: c.secretAccessKeyKey, by });
      }
      if (obj.kind === "StatefulSet") {
        const s = provisionSettings(obj);
        if (s && !("error" in s)) {
          for (const [name, a] of [[s.credentialsSecret, "replicator.dev/credentials-secret"], [s.replicationSecret, "replicator.dev/replication-secret"]] as const) {
            for (const key of ["username", "password"]) uses.push({ file, name, key, by: `${by} annotation ${a}` });
          }
        }
      }
    }
    expect(uses.length).toBeGreaterThan(10);
    const missing = uses.filter((u) => !secrets.get(u.name)?.has(u.key)).map((u) => `${u.file}: ${u.by} needs key ${u.key} of Secret ${u.name}`);
    expect(missing).toEqual([]);
    // One convention: the replication user is db-replication's username/password everywhere.
    expect([...(secrets.get("db-replication") ?? [])].sort()).toEqual(["password", "username"]);
    expect([...(secrets.get("db-credentials") ?? [])].sort()).toEqual(["password", "username"]);
  });

  it("the provisioned StatefulSet is Ready by a probe that does not need .my-healthcheck.cnf (absent after a physical restore)", async () => {
    const sts = (await examples()).find((e) => e.file === "mariadb-provisioned.yaml" && e.obj.kind === "StatefulSet")?.obj;
    const containers = (sts?.spec as { template: { spec: { containers: { name: string; readinessProbe?: { exec?: { command: string[] } } }[] } } } | undefined)?.template.spec.containers ?? [];
    const probe = containers.find((c) => c.name === "mariadb")?.readinessProbe?.exec?.command;
    expect(probe).toEqual(["healthcheck.sh", "--connect"]);
  });
});

describe("image builds", () => {
  it("send no local installs, builds or tool caches (.dockerignore)", async () => {
    const ignored = (await readFile(path.join(root, ".dockerignore"), "utf8")).split("\n").map((l) => l.trim());
    for (const p of ["node_modules", ".tools", "dist"]) expect(ignored).toContain(p);
  });
});
