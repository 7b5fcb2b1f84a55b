// The Helm chart (charts/replicator-operator) and the plain manifests in
// deploy/: helm lint, helm template with several value sets and assertions on
// the rendered objects (env, probes, security context, least-privilege RBAC,
// no secrets), the chart's crds/ against crds/, deploy/*.yaml against
// deploy/generate.sh, and the examples against the API's own schemas.
//
// Needs helm in .tools/bin (hack/install-helm.sh). Without it every test fails
// with that instruction instead of being skipped.
import { existsSync } from "node:fs";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  API_VERSION,
  backupSpecSchema,
  repositorySpecSchema,
  restoreSpecSchema,
  validateServerRef,
  validateSpec,
  type ServerRef,
} from "../../src/api/v1alpha1.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const HELM = path.join(ROOT, ".tools/bin/helm");
const CHART = path.join(ROOT, "charts/replicator-operator");
const CRDS = path.join(ROOT, "crds");
const CHART_CRDS = path.join(CHART, "crds");
const DEPLOY = path.join(ROOT, "deploy");
const EXAMPLES = path.join(DEPLOY, "examples");
const RELEASE = "replicator";
const NAMESPACE = "replicator-system";
const HELM_MISSING = `helm is not installed at ${HELM}: run hack/install-helm.sh (it builds the pinned helm v3 from the Go module proxy into .tools/bin)`;

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
}

interface Container {
  name: string;
  image: string;
  imagePullPolicy?: string;
  env: { name: string; value?: string; valueFrom?: unknown }[];
  ports: { name: string; containerPort: number; protocol?: string }[];
  livenessProbe: { httpGet: { path: string; port: string | number } };
  readinessProbe: { httpGet: { path: string; port: string | number } };
  securityContext: Record<string, unknown>;
  volumeMounts: { name: string; mountPath: string }[];
}

interface Deployment extends K8sObject {
  spec: {
    replicas: number;
    selector: { matchLabels: Record<string, string> };
    template: {
      metadata: { labels: Record<string, string> };
      spec: {
        serviceAccountName: string;
        securityContext: Record<string, unknown>;
        containers: Container[];
        volumes: { name: string; emptyDir?: unknown }[];
      };
    };
  };
}

interface Rule {
  apiGroups: string[];
  resources: string[];
  resourceNames?: string[];
  verbs: string[];
}

interface RoleObj extends K8sObject {
  rules: Rule[];
}

interface BindingObj extends K8sObject {
  roleRef: { apiGroup: string; kind: string; name: string };
  subjects: { kind: string; name: string; namespace: string }[];
}

/** Exactly what the operator uses (issue #3's least-privilege list). */
const OPERATOR_RULES: Rule[] = [
  {
    apiGroups: ["replicator.dev"],
    resources: ["replicatorbackups", "replicatorrestores", "replicatorrepositories"],
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"],
  },
  {
    apiGroups: ["replicator.dev"],
    resources: ["replicatorbackups/status", "replicatorrestores/status", "replicatorrepositories/status"],
    verbs: ["get", "update", "patch"],
  },
  { apiGroups: ["batch"], resources: ["jobs"], verbs: ["get", "list", "watch", "create", "delete"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch", "patch"] },
  { apiGroups: [""], resources: ["pods/status"], verbs: ["get", "update", "patch"] },
  { apiGroups: [""], resources: ["secrets"], verbs: ["get"] },
  { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
  { apiGroups: ["events.k8s.io"], resources: ["events"], verbs: ["create", "patch"] },
  { apiGroups: [""], resources: ["persistentvolumeclaims"], verbs: ["get", "list", "watch", "create", "update", "patch"] },
  { apiGroups: ["snapshot.storage.k8s.io"], resources: ["volumesnapshots"], verbs: ["get", "create", "delete"] },
  { apiGroups: ["apps"], resources: ["statefulsets"], verbs: ["get", "list", "watch"] },
  { apiGroups: ["apps"], resources: ["deployments"], verbs: ["get", "list", "watch", "create", "patch", "delete"] },
];

const leaderRules = (leaseName: string): Rule[] => [
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create"] },
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], resourceNames: [leaseName], verbs: ["get", "update"] },
];

// Value sets the chart must render with.
const S3_REPO = [
  "defaultRepository.create=true",
  "defaultRepository.s3.bucket=my-backups",
  "defaultRepository.s3.prefix=mysql",
  "defaultRepository.s3.endpoint=http://minio.storage:9000",
  "defaultRepository.s3.credentialsSecret.name=s3-credentials",
  "defaultRepository.retention.keep=7",
];
const FS_REPO = ["defaultRepository.create=true", "defaultRepository.filesystem.claimName=backups", "defaultRepository.filesystem.path=/mysql"];
const WATCH = ["watchNamespace=team-a"];
const EVERYTHING = [...S3_REPO, ...WATCH, "metrics.serviceMonitor.enabled=true", "replicaCount=2"];
const VALUE_SETS: Record<string, string[]> = {
  defaults: [],
  "defaultRepository s3": S3_REPO,
  "defaultRepository filesystem": FS_REPO,
  "defaultRepository https with a private CA": [...S3_REPO.filter((v) => !v.includes("endpoint=")), "defaultRepository.s3.endpoint=https://minio.storage:9000", "defaultRepository.s3.caSecret.name=minio-ca"],
  watchNamespace: WATCH,
  "everything on": EVERYTHING,
};

const setArgs = (sets: string[]): string[] => sets.flatMap((s) => ["--set", s]);

async function helm(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  if (!existsSync(HELM)) throw new Error(HELM_MISSING);
  const r = await execa(HELM, args, { reject: false, cwd: ROOT, env: { HELM_CACHE_HOME: helmHome, HELM_CONFIG_HOME: helmHome, HELM_DATA_HOME: helmHome } });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function parseDocs(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`bad YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const obj = doc.toJS() as K8sObject | null;
    if (obj !== null) out.push(obj);
  }
  return out;
}

async function template(sets: string[], namespace = NAMESPACE): Promise<K8sObject[]> {
  const r = await helm(["template", RELEASE, CHART, "--namespace", namespace, ...setArgs(sets)]);
  if (r.exitCode !== 0) throw new Error(`helm template failed (${r.exitCode}): ${r.stderr}`);
  return parseDocs(r.stdout);
}

const find = (objs: K8sObject[], kind: string, name?: string): K8sObject => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!o) throw new Error(`no ${kind}${name ? ` ${name}` : ""} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(", ")}`);
  return o;
};

const operatorContainer = (objs: K8sObject[]): Container => {
  const c = (find(objs, "Deployment") as Deployment).spec.template.spec.containers.find((x) => x.name === "operator");
  if (!c) throw new Error("no operator container");
  return c;
};

/** Every [path, key, value] in an object tree. */
function* walk(v: unknown, p = ""): Generator<[string, string, unknown]> {
  if (Array.isArray(v)) {
    for (const [i, x] of v.entries()) yield* walk(x, `${p}[${i}]`);
  } else if (v !== null && typeof v === "object") {
    for (const [k, x] of Object.entries(v)) {
      yield [`${p}.${k}`, k, x];
      yield* walk(x, `${p}.${k}`);
    }
  }
}

let helmHome = "";
const rendered: Record<string, K8sObject[]> = {};

beforeAll(async () => {
  if (!existsSync(HELM)) throw new Error(HELM_MISSING);
  // Keep helm's cache/config/data out of $HOME.
  helmHome = await mkdtemp(path.join(tmpdir(), "replicator-helm-"));
  for (const [name, sets] of Object.entries(VALUE_SETS)) rendered[name] = await template(sets);
});

afterAll(async () => {
  if (helmHome) await rm(helmHome, { recursive: true, force: true });
});

describe("helm", () => {
  it("is installed at .tools/bin/helm (hack/install-helm.sh)", async () => {
    expect(existsSync(HELM), HELM_MISSING).toBe(true);
    const r = await helm(["version", "--short"]);
    expect(r.stdout).toMatch(/^v3\./);
  });
});

describe("helm lint", () => {
  it.each(Object.entries(VALUE_SETS))("passes --strict with no warnings: %s", async (_name, sets) => {
    const r = await helm(["lint", "--strict", CHART, ...setArgs(sets)]);
    expect(r.exitCode, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toContain("0 chart(s) failed");
    expect(r.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
  });
});

describe("helm template: default values", () => {
  it("renders exactly the expected objects", () => {
    const objs = rendered.defaults!;
    expect(objs.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      [
        "ClusterRole/replicator-operator",
        "ClusterRoleBinding/replicator-operator",
        "Deployment/replicator-operator",
        "Role/replicator-operator-leader-election",
        "RoleBinding/replicator-operator-leader-election",
        "Service/replicator-operator-metrics",
        "ServiceAccount/replicator-operator",
      ].sort(),
    );
    for (const o of objs) {
      expect(o.metadata.labels, `${o.kind}/${o.metadata.name}`).toMatchObject({
        "app.kubernetes.io/name": "replicator-operator",
        "app.kubernetes.io/instance": RELEASE,
        "app.kubernetes.io/version": "0.1.0",
        "app.kubernetes.io/managed-by": "Helm",
        "helm.sh/chart": "replicator-operator-0.1.0",
      });
      if (!o.kind.startsWith("Cluster")) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe(NAMESPACE);
    }
  });

  it("Deployment: images, env, downward API, probes on http-metrics, /tmp", () => {
    const objs = rendered.defaults!;
    const d = find(objs, "Deployment") as Deployment;
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.template.spec.serviceAccountName).toBe("replicator-operator");
    expect(d.spec.selector.matchLabels).toEqual({ "app.kubernetes.io/name": "replicator-operator", "app.kubernetes.io/instance": RELEASE });
    expect(d.spec.template.metadata.labels).toMatchObject(d.spec.selector.matchLabels);
    const c = operatorContainer(objs);
    expect(c.image).toBe("ghcr.io/replicator-dev/replicator-operator:0.1.0");
    expect(c.imagePullPolicy).toBe("IfNotPresent");
    expect(c.env).toEqual([
      { name: "WATCH_NAMESPACE", value: "" },
      { name: "RESYNC_SECONDS", value: "300" },
      { name: "AGENT_IMAGE", value: "ghcr.io/replicator-dev/replicator-agent:0.1.0" },
      { name: "JOB_BACKOFF_LIMIT", value: "2" },
      { name: "JOB_DEADLINE_SECONDS", value: "21600" },
      { name: "JOB_TTL_SECONDS", value: "86400" },
      { name: "AGENT_LOG_LEVEL", value: "info" },
      { name: "LOG_LEVEL", value: "info" },
      { name: "HEALTH_ADDR", value: "0.0.0.0:8080" },
      { name: "NODE_OPTIONS", value: "--max-old-space-size=256 --max-semi-space-size=2" },
      { name: "LEADER_ELECT", value: "true" },
      { name: "LEADER_ELECTION_ID", value: "replicator-operator" },
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
    ]);
    expect(c.ports).toEqual([{ name: "http-metrics", containerPort: 8080, protocol: "TCP" }]);
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http-metrics" });
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http-metrics" });
    expect(c.volumeMounts).toEqual([{ name: "tmp", mountPath: "/tmp" }]);
    expect(d.spec.template.spec.volumes).toEqual([{ name: "tmp", emptyDir: {} }]);
  });

  it("Deployment: non-root 65532, read-only root filesystem, no capabilities, RuntimeDefault seccomp", () => {
    const d = find(rendered.defaults!, "Deployment") as Deployment;
    expect(d.spec.template.spec.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      fsGroup: 65532,
      seccompProfile: { type: "RuntimeDefault" },
    });
    expect(operatorContainer(rendered.defaults!).securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      runAsUser: 65532,
      runAsGroup: 65532,
      capabilities: { drop: ["ALL"] },
    });
  });

  it("ClusterRole: exactly the least-privilege rules, bound to the ServiceAccount", () => {
    const objs = rendered.defaults!;
    expect((find(objs, "ClusterRole") as RoleObj).rules).toEqual(OPERATOR_RULES);
    const b = find(objs, "ClusterRoleBinding") as BindingObj;
    expect(b.roleRef).toEqual({ apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name: "replicator-operator" });
    expect(b.subjects).toEqual([{ kind: "ServiceAccount", name: "replicator-operator", namespace: NAMESPACE }]);
  });

  it("leader election: a Role for its one Lease in the release namespace only", () => {
    const objs = rendered.defaults!;
    const role = find(objs, "Role", "replicator-operator-leader-election") as RoleObj;
    expect(role.metadata.namespace).toBe(NAMESPACE);
    expect(role.rules).toEqual(leaderRules("replicator-operator"));
    const b = find(objs, "RoleBinding", "replicator-operator-leader-election") as BindingObj;
    expect(b.roleRef).toEqual({ apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role.metadata.name });
    expect(b.subjects).toEqual([{ kind: "ServiceAccount", name: "replicator-operator", namespace: NAMESPACE }]);
    // The Lease name the operator uses is the one the Role allows.
    expect(operatorContainer(objs).env).toContainEqual({ name: "LEADER_ELECTION_ID", value: "replicator-operator" });
  });

  it("metrics Service selects the operator's pods on http-metrics", () => {
    const objs = rendered.defaults!;
    const svc = (find(objs, "Service") as K8sObject & { spec: { selector: Record<string, string>; ports: unknown[] } });
    expect(svc.spec.selector).toEqual((find(objs, "Deployment") as Deployment).spec.selector.matchLabels);
    expect(svc.spec.ports).toEqual([{ name: "http-metrics", port: 8080, targetPort: "http-metrics", protocol: "TCP" }]);
  });
});

describe("helm template: other values", () => {
  it("watchNamespace: a Role + RoleBinding there with the same rules, and no cluster-wide RBAC", () => {
    const objs = rendered.watchNamespace!;
    expect(objs.filter((o) => o.kind.startsWith("Cluster"))).toEqual([]);
    const role = find(objs, "Role", "replicator-operator") as RoleObj;
    expect(role.metadata.namespace).toBe("team-a");
    expect(role.rules).toEqual(OPERATOR_RULES);
    const b = find(objs, "RoleBinding", "replicator-operator") as BindingObj;
    expect(b.metadata.namespace).toBe("team-a");
    expect(b.roleRef).toEqual({ apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "replicator-operator" });
    expect(b.subjects).toEqual([{ kind: "ServiceAccount", name: "replicator-operator", namespace: NAMESPACE }]);
    expect((find(objs, "Role", "replicator-operator-leader-election") as RoleObj).metadata.namespace).toBe(NAMESPACE);
    expect(operatorContainer(objs).env).toContainEqual({ name: "WATCH_NAMESPACE", value: "team-a" });
  });

  it("defaultRepository.create with s3: a ReplicatorRepository the API accepts", () => {
    const repo = find(rendered["defaultRepository s3"]!, "ReplicatorRepository") as K8sObject & { spec: unknown };
    expect(repo.apiVersion).toBe(API_VERSION);
    expect(repo.metadata.name).toBe("default");
    expect(repo.metadata.namespace).toBe(NAMESPACE);
    expect(repo.spec).toEqual({
      s3: {
        bucket: "my-backups",
        prefix: "mysql",
        endpoint: "http://minio.storage:9000",
        region: "us-east-1",
        credentialsSecret: { name: "s3-credentials", accessKeyIdKey: "AWS_ACCESS_KEY_ID", secretAccessKeyKey: "AWS_SECRET_ACCESS_KEY" },
      },
      retention: { keep: 7 },
      method: "mysqldump",
      compression: "zstd",
      syncIntervalSeconds: 60,
    });
    expect(validateSpec(repositorySpecSchema.strict(), repo.spec)).toMatchObject({ ok: true });
  });

  it("defaultRepository.s3.caSecret: the repository names the CA's Secret and key (default ca.crt)", () => {
    const repo = find(rendered["defaultRepository https with a private CA"]!, "ReplicatorRepository") as K8sObject & { spec: { s3: Record<string, unknown> } };
    expect(repo.spec.s3).toMatchObject({ endpoint: "https://minio.storage:9000", caSecret: { name: "minio-ca", key: "ca.crt" } });
    expect(validateSpec(repositorySpecSchema.strict(), repo.spec)).toMatchObject({ ok: true });
    // Without a name, no caSecret at all.
    expect((find(rendered["defaultRepository s3"]!, "ReplicatorRepository") as K8sObject & { spec: { s3: Record<string, unknown> } }).spec.s3).not.toHaveProperty("caSecret");
  });

  it("defaultRepository.create with a PVC: filesystem, no retention when keep is 0", () => {
    const repo = find(rendered["defaultRepository filesystem"]!, "ReplicatorRepository") as K8sObject & { spec: unknown };
    expect(repo.spec).toEqual({
      filesystem: { claimName: "backups", path: "/mysql" },
      method: "mysqldump",
      compression: "zstd",
      syncIntervalSeconds: 60,
    });
    expect(validateSpec(repositorySpecSchema.strict(), repo.spec)).toMatchObject({ ok: true });
  });

  it("everything on: the repository goes to watchNamespace, ServiceMonitor, 2 replicas", () => {
    const objs = rendered["everything on"]!;
    expect(find(objs, "ReplicatorRepository").metadata.namespace).toBe("team-a");
    const sm = (find(objs, "ServiceMonitor") as K8sObject & { spec: { selector: { matchLabels: Record<string, string> }; endpoints: { port: string; path: string }[] } });
    expect(sm.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(sm.spec.endpoints).toMatchObject([{ port: "http-metrics", path: "/metrics" }]);
    expect(find(objs, "Service").metadata.labels).toMatchObject(sm.spec.selector.matchLabels);
    expect((find(objs, "Deployment") as Deployment).spec.replicas).toBe(2);
  });

  it("no rendering contains a Secret, a secret value or a wildcard permission", () => {
    for (const [name, objs] of Object.entries(rendered)) {
      for (const o of objs) {
        const where = `${name}: ${o.kind}/${o.metadata.name}`;
        expect(o.kind, where).not.toBe("Secret");
        for (const [p, key, value] of walk(o)) {
          expect(key, `${where} ${p}`).not.toMatch(/^(password|secretAccessKey|accessKeyId|sessionToken|token|stringData)$/i);
          if (typeof value === "string") expect(value, `${where} ${p}`).not.toMatch(/change-me|password=|BEGIN .*PRIVATE KEY/i);
        }
        if (o.kind === "Deployment") {
          for (const e of operatorContainer(objs).env) {
            if (/PASSWORD|SECRET|TOKEN|ACCESS_KEY/.test(e.name)) expect(e.value, `${where} env ${e.name}`).toBeUndefined();
          }
        }
        for (const r of (o as Partial<RoleObj>).rules ?? []) {
          expect([...r.apiGroups, ...r.resources, ...r.verbs], where).not.toContain("*");
          if (r.resources.includes("secrets")) expect(r.verbs, where).toEqual(["get"]);
        }
      }
    }
  });

  it("values.schema.json refuses credentials in values, unknown keys and bad enums", async () => {
    for (const bad of [
      "defaultRepository.s3.secretAccessKey=not-a-real-secret",
      "defaultRepository.s3.credentialsSecret.password=not-a-real-secret",
      "defaultRepository.compression=lz4",
      "defaultRepository.name=Not_A_Name",
      "logLevel=verbose",
      "job.backoffLimit=-1",
      "watchNamespace=UPPER",
      "extraThing=1",
    ]) {
      const r = await helm(["template", RELEASE, CHART, "--set", bad]);
      expect(r.exitCode, bad).not.toBe(0);
      expect(r.stderr, bad).toMatch(/schema/);
      expect(r.stderr, bad).not.toContain("not-a-real-secret");
    }
  });

  it("refuses contradictory values with a clear message", async () => {
    const cases: [string[], RegExp][] = [
      [["defaultRepository.create=true"], /needs s3\.bucket or filesystem\.claimName/],
      [[...S3_REPO, "defaultRepository.filesystem.claimName=backups"], /exactly one of s3\.bucket or filesystem\.claimName/],
      [["replicaCount=2", "leaderElection.enabled=false"], /needs leaderElection\.enabled=true/],
      [["metrics.enabled=false", "metrics.serviceMonitor.enabled=true"], /needs metrics\.enabled=true/],
      [[...S3_REPO, ...WATCH, "defaultRepository.namespace=other"], /must equal watchNamespace/],
    ];
    for (const [sets, message] of cases) {
      const r = await helm(["template", RELEASE, CHART, ...setArgs(sets)]);
      expect(r.exitCode, sets.join(",")).not.toBe(0);
      expect(r.stderr, sets.join(",")).toMatch(message);
    }
  });
});

describe("generated files", () => {
  it("the chart's crds/ are byte-for-byte copies of crds/ (deploy/generate.sh)", async () => {
    const want = (await readdir(CRDS)).filter((f) => f.endsWith(".yaml")).sort();
    const got = (await readdir(CHART_CRDS)).sort();
    expect(want.length).toBeGreaterThan(0);
    expect(got, "charts/replicator-operator/crds/ differs from crds/: run deploy/generate.sh").toEqual(want);
    for (const f of want) {
      const same = (await readFile(path.join(CRDS, f))).equals(await readFile(path.join(CHART_CRDS, f)));
      expect(same, `charts/replicator-operator/crds/${f} differs from crds/${f}: run deploy/generate.sh`).toBe(true);
    }
  });

  it("deploy/operator.yaml and deploy/crds.yaml are what deploy/generate.sh produces now", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "replicator-deploy-"));
    try {
      await execa(path.join(DEPLOY, "generate.sh"), ["--out", out], { cwd: ROOT, env: { HELM, HELM_CACHE_HOME: helmHome, HELM_CONFIG_HOME: helmHome, HELM_DATA_HOME: helmHome } });
      for (const f of ["operator.yaml", "crds.yaml"]) {
        const want = await readFile(path.join(out, f), "utf8");
        const got = await readFile(path.join(DEPLOY, f), "utf8");
        expect(got === want, `deploy/${f} is stale: run deploy/generate.sh`).toBe(true);
      }
      for (const f of await readdir(path.join(out, "chart-crds"))) {
        const same = (await readFile(path.join(out, "chart-crds", f))).equals(await readFile(path.join(CHART_CRDS, f)));
        expect(same, `charts/replicator-operator/crds/${f} is stale: run deploy/generate.sh`).toBe(true);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });

  it("deploy/operator.yaml: a Namespace first, then the chart with default values", async () => {
    const objs = parseDocs(await readFile(path.join(DEPLOY, "operator.yaml"), "utf8"));
    expect(objs[0]).toMatchObject({ apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE } });
    expect(objs.slice(1)).toEqual(rendered.defaults);
  });

  it("deploy/crds.yaml holds every CRD in crds/", async () => {
    const objs = parseDocs(await readFile(path.join(DEPLOY, "crds.yaml"), "utf8"));
    const want: K8sObject[] = [];
    for (const f of (await readdir(CRDS)).filter((x) => x.endsWith(".yaml")).sort()) want.push(...parseDocs(await readFile(path.join(CRDS, f), "utf8")));
    expect(objs).toEqual(want);
    expect(objs.map((o) => o.metadata.name).sort()).toEqual([
      "replicatorbackups.replicator.dev",
      "replicatorrepositories.replicator.dev",
      "replicatorrestores.replicator.dev",
    ]);
  });
});

describe("deploy/examples", () => {
  const load = async (): Promise<{ file: string; objs: K8sObject[] }[]> => {
    const files = (await readdir(EXAMPLES)).filter((f) => f.endsWith(".yaml")).sort();
    return Promise.all(files.map(async (file) => ({ file, objs: parseDocs(await readFile(path.join(EXAMPLES, file), "utf8")) })));
  };

  it("has the documented files", async () => {
    expect((await load()).map((x) => x.file)).toEqual([
      "backup-slave.yaml",
      "backup.yaml",
      "mariadb-cluster.yaml",
      "mariadb-provisioned.yaml",
      "repository.yaml",
      "restore-point-in-time.yaml",
      "restore.yaml",
      "s3-credentials.yaml",
    ]);
  });

  it("every replicator.dev resource passes the API's own validation", async () => {
    const serverRefOk = (ref: ServerRef | undefined, field: string): void => {
      if (ref) expect(validateServerRef(ref, field), field).toBeUndefined();
    };
    let count = 0;
    for (const { file, objs } of await load()) {
      for (const o of objs.filter((x) => x.apiVersion.startsWith("replicator.dev/"))) {
        count++;
        const where = `${file}: ${o.kind}/${o.metadata.name}`;
        expect(o.apiVersion, where).toBe(API_VERSION);
        expect(o.metadata.namespace, `${where}: examples are namespace-less (kubectl -n)`).toBeUndefined();
        const spec = (o as { spec?: unknown }).spec;
        switch (o.kind) {
          case "ReplicatorRepository": {
            const r = validateSpec(repositorySpecSchema.strict(), spec);
            expect(r, where).toMatchObject({ ok: true });
            break;
          }
          case "ReplicatorBackup": {
            const r = validateSpec(backupSpecSchema.strict(), spec);
            expect(r, where).toMatchObject({ ok: true });
            if (r.ok) serverRefOk(r.value.source, "source");
            break;
          }
          case "ReplicatorRestore": {
            const r = validateSpec(restoreSpecSchema.strict(), spec);
            expect(r, where).toMatchObject({ ok: true });
            if (r.ok) {
              serverRefOk(r.value.target, "target");
              serverRefOk(r.value.replicateFrom, "replicateFrom");
            }
            break;
          }
          default:
            throw new Error(`${where}: unknown kind`);
        }
      }
    }
    expect(count).toBe(5);
  });

  it("references resolve: Secrets, keys, the repository and the StatefulSet", async () => {
    const all = (await load()).flatMap((x) => x.objs);
    const secrets = new Map(all.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, Object.keys((o as { stringData?: object }).stringData ?? {})]));
    const repos = all.filter((o) => o.kind === "ReplicatorRepository").map((o) => o.metadata.name);
    const stsNames = all.filter((o) => o.kind === "StatefulSet").map((o) => o.metadata.name);
    const pods = all.filter((o) => o.kind === "Pod").map((o) => o.metadata.name);
    const checkRef = (ref: ServerRef | undefined, where: string): void => {
      if (!ref) return;
      expect(secrets.get(ref.credentialsSecret.name), where).toEqual(expect.arrayContaining([ref.credentialsSecret.userKey, ref.credentialsSecret.passwordKey]));
      if (ref.statefulSet) expect(stsNames, where).toContain(ref.statefulSet);
      if (ref.pod) expect(pods, where).toContain(ref.pod);
    };
    for (const o of all) {
      const where = `${o.kind}/${o.metadata.name}`;
      if (o.kind === "ReplicatorRepository") {
        const spec = repositorySpecSchema.parse((o as { spec?: unknown }).spec);
        if (spec.s3?.credentialsSecret) {
          expect(secrets.get(spec.s3.credentialsSecret.name), where).toEqual(
            expect.arrayContaining([spec.s3.credentialsSecret.accessKeyIdKey, spec.s3.credentialsSecret.secretAccessKeyKey]),
          );
        }
        expect(spec.retention?.keep, where).toBe(7);
      } else if (o.kind === "ReplicatorBackup") {
        const spec = backupSpecSchema.parse((o as { spec?: unknown }).spec);
        expect(repos, where).toContain(spec.repository);
        checkRef(spec.source, `${where} source`);
      } else if (o.kind === "ReplicatorRestore") {
        const spec = restoreSpecSchema.parse((o as { spec?: unknown }).spec);
        expect(repos, where).toContain(spec.repository);
        expect(spec.backup, where).toBe("latest");
        checkRef(spec.target, `${where} target`);
        // A point-in-time restore (until/untilGtid) does not replicate.
        if (spec.until === undefined && spec.untilGtid === undefined) expect(spec.replicateFrom, where).toMatchObject({ statefulSet: "db", role: "master" });
        else expect(spec.replicateFrom, where).toBeUndefined();
        checkRef(spec.replicateFrom, `${where} replicateFrom`);
      }
    }
    const backups = all.filter((o) => o.kind === "ReplicatorBackup").map((o) => backupSpecSchema.parse((o as { spec?: unknown }).spec).source?.role);
    expect(backups.sort()).toEqual(["master", "slave"]);
  });

  it("Secrets hold only placeholder values", async () => {
    for (const { file, objs } of await load()) {
      for (const o of objs.filter((x) => x.kind === "Secret")) {
        expect((o as { data?: unknown }).data, `${file}: use stringData with placeholders`).toBeUndefined();
        for (const [k, v] of Object.entries((o as { stringData?: Record<string, string> }).stringData ?? {})) {
          if (/password|secret|key/i.test(k)) expect(v, `${file}: ${o.metadata.name}.${k}`).toMatch(/^change-me/);
        }
      }
    }
  });

  it("the MariaDB cluster: 3 replicas of mariadb:10.11 behind a headless Service, with a data volumeClaimTemplate", async () => {
    const objs = parseDocs(await readFile(path.join(EXAMPLES, "mariadb-cluster.yaml"), "utf8"));
    const sts = (find(objs, "StatefulSet", "db") as K8sObject & { spec: { replicas: number; serviceName: string; volumeClaimTemplates: { metadata: { name: string } }[]; template: { spec: { containers: { image: string }[]; initContainers: { image: string }[] } } } });
    expect(sts.spec.replicas).toBe(3);
    expect(sts.spec.volumeClaimTemplates.map((v) => v.metadata.name)).toEqual(["data"]);
    expect([...sts.spec.template.spec.containers, ...sts.spec.template.spec.initContainers].map((c) => c.image)).toEqual(["mariadb:10.11", "mariadb:10.11"]);
    const svc = find(objs, "Service", sts.spec.serviceName) as K8sObject & { spec: { clusterIP: string } };
    expect(svc.spec.clusterIP).toBe("None");
    const scripts = JSON.stringify(find(objs, "ConfigMap"));
    expect(scripts).toContain("MASTER_HOST = 'db-0.db'");
    expect(scripts).toContain("MASTER_USE_GTID = slave_pos");
  });
});
