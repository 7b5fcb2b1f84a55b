// deploy/ against a real kube-apiserver (test/harness/kube/controlplane.ts):
// the CRDs are applied for real and must become Established; then
// deploy/operator.yaml, every file in deploy/examples/ and a chart rendering
// with a default repository must pass `kubectl apply --dry-run=server`, i.e.
// admission, the built-in schemas and the CRDs' OpenAPI + CEL validation.
//
// Needs the control-plane binaries (hack/build-kube-tools.sh), kubectl on PATH
// (or $KUBECTL) and helm (hack/install-helm.sh). Missing tools fail the test.
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../harness/kube/controlplane.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const HELM = path.join(ROOT, ".tools/bin/helm");
const DEPLOY = path.join(ROOT, "deploy");
const EXAMPLES = path.join(DEPLOY, "examples");
const KUBECTL = process.env.KUBECTL ?? "kubectl";
const OPERATOR_NAMESPACE = "replicator-system";
const EXAMPLES_NAMESPACE = "demo";

let cp: ControlPlane | undefined;
let tmp = "";

const controlPlane = (): ControlPlane => {
  if (!cp) throw new Error("the control plane did not start");
  return cp;
};

async function kubectl(args: string[]): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await execa(KUBECTL, ["--kubeconfig", controlPlane().kubeconfigPath, ...args], { reject: false, cwd: ROOT });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** `kubectl apply --dry-run=server -f file`: every object must be accepted. */
async function dryRun(file: string, namespace?: string): Promise<string[]> {
  const r = await kubectl(["apply", "--dry-run=server", ...(namespace ? ["--namespace", namespace] : []), "-f", file]);
  expect(r.exitCode, `kubectl apply --dry-run=server -f ${path.relative(ROOT, file)}:\n${r.stdout}\n${r.stderr}`).toBe(0);
  const lines = r.stdout.split("\n").filter(Boolean);
  for (const l of lines) expect(l).toMatch(/\((server dry run)\)$/);
  return lines;
}

function countObjects(text: string): number {
  return parseAllDocuments(text).filter((d) => d.toJS() !== null).length;
}

beforeAll(async () => {
  if (!existsSync(HELM)) throw new Error(`helm is not installed at ${HELM}: run hack/install-helm.sh`);
  const v = await execa(KUBECTL, ["version", "--client"], { reject: false });
  if (v.exitCode !== 0) throw new Error(`kubectl (${KUBECTL}) is not usable: ${v.stderr || v.stdout}; install kubectl or set $KUBECTL`);
  tmp = await mkdtemp(path.join(tmpdir(), "replicator-dry-run-"));
  cp = await startControlPlane();
});

afterAll(async () => {
  await cp?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("deploy/ against a real API server", () => {
  it("deploy/crds.yaml applies for real and every CRD becomes Established", async () => {
    const file = path.join(DEPLOY, "crds.yaml");
    const applied = await controlPlane().applyYaml(file);
    const names = applied.map((o) => o.metadata.name ?? "");
    expect(names.sort()).toEqual(["replicatorbackups.replicator.dev", "replicatorrepositories.replicator.dev", "replicatorrestores.replicator.dev"]);
    const r = await kubectl(["wait", "--for=condition=Established", "--timeout=60s", ...names.map((n) => `customresourcedefinition/${n}`)]);
    expect(r.exitCode, r.stderr).toBe(0);
  });

  it("deploy/operator.yaml passes a server-side dry run", async () => {
    // The Namespace is created for real first: a dry-run create of it does not
    // let the namespaced objects after it in.
    await controlPlane().createNamespace(OPERATOR_NAMESPACE);
    const file = path.join(DEPLOY, "operator.yaml");
    const lines = await dryRun(file);
    expect(lines).toHaveLength(countObjects(await readFile(file, "utf8")));
    expect(lines.join("\n")).toMatch(/deployment\.apps\/replicator-operator (created|configured|unchanged) \(server dry run\)/);
    expect(lines.join("\n")).toMatch(/clusterrole\.rbac\.authorization\.k8s\.io\/replicator-operator created \(server dry run\)/);
  });

  it("every file in deploy/examples/ passes a server-side dry run", async () => {
    await controlPlane().createNamespace(EXAMPLES_NAMESPACE);
    const files = (await readdir(EXAMPLES)).filter((f) => f.endsWith(".yaml")).sort();
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      const file = path.join(EXAMPLES, f);
      const lines = await dryRun(file, EXAMPLES_NAMESPACE);
      expect(lines, f).toHaveLength(countObjects(await readFile(file, "utf8")));
    }
  });

  it("the chart with a default repository and watchNamespace passes a server-side dry run", async () => {
    const r = await execa(HELM, [
      "template", "replicator", path.join(ROOT, "charts/replicator-operator"),
      "--namespace", OPERATOR_NAMESPACE,
      "--set", `watchNamespace=${EXAMPLES_NAMESPACE}`,
      "--set", "defaultRepository.create=true",
      "--set", "defaultRepository.s3.bucket=my-backups",
      "--set", "defaultRepository.s3.credentialsSecret.name=s3-credentials",
      "--set", "defaultRepository.retention.keep=7",
    ], { env: { HELM_CACHE_HOME: tmp, HELM_CONFIG_HOME: tmp, HELM_DATA_HOME: tmp } });
    const file = path.join(tmp, "chart.yaml");
    await writeFile(file, r.stdout);
    const lines = await dryRun(file);
    expect(lines.join("\n")).toMatch(/replicatorrepository\.replicator\.dev\/default created \(server dry run\)/);
    expect(lines.join("\n")).toMatch(/role\.rbac\.authorization\.k8s\.io\/replicator-operator created \(server dry run\)/);
  });

  it("applied for real, the RBAC gives the operator's ServiceAccount what it uses and no more", async () => {
    await controlPlane().applyYaml(path.join(DEPLOY, "operator.yaml"));
    const sa = `system:serviceaccount:${OPERATOR_NAMESPACE}:replicator-operator`;
    const can = async (verb: string, resource: string, namespace: string, sub?: string): Promise<boolean> => {
      const r = await kubectl(["auth", "can-i", "--as", sa, "--namespace", namespace, ...(sub ? ["--subresource", sub] : []), verb, resource]);
      return r.stdout.trim() === "yes";
    };
    const yes: [string, string, string, string?][] = [
      ["create", "replicatorbackups.replicator.dev", "demo"],
      ["delete", "replicatorbackups.replicator.dev", "demo"],
      ["patch", "replicatorrestores.replicator.dev", "demo", "status"],
      ["watch", "replicatorrepositories.replicator.dev", "demo"],
      ["create", "jobs.batch", "demo"],
      ["list", "pods", "demo"],
      ["patch", "pods", "demo", "status"],
      ["patch", "pods", "demo"],
      ["get", "secrets", "demo"],
      ["create", "events", "demo"],
      ["create", "events.events.k8s.io", "demo"],
      ["patch", "persistentvolumeclaims", "demo"],
      ["create", "persistentvolumeclaims", "demo"],
      ["watch", "statefulsets.apps", "demo"],
      ["create", "leases.coordination.k8s.io", OPERATOR_NAMESPACE],
      ["update", "leases.coordination.k8s.io/replicator-operator", OPERATOR_NAMESPACE],
    ];
    const no: [string, string, string, string?][] = [
      ["list", "secrets", "demo"],
      ["watch", "secrets", "demo"],
      ["update", "jobs.batch", "demo"],
      ["delete", "pods", "demo"],
      ["create", "pods", "demo"],
      ["update", "statefulsets.apps", "demo"],
      ["delete", "persistentvolumeclaims", "demo"],
      ["create", "leases.coordination.k8s.io", "demo"],
      ["update", "leases.coordination.k8s.io/someone-else", OPERATOR_NAMESPACE],
      ["create", "customresourcedefinitions.apiextensions.k8s.io", "default"],
      ["create", "clusterroles.rbac.authorization.k8s.io", "default"],
    ];
    const check = async ([verb, res, ns, sub]: [string, string, string, string?]): Promise<[string, boolean]> => [
      `${verb} ${res}${sub ? `/${sub}` : ""} in ${ns}`,
      await can(verb, res, ns, sub),
    ];
    const [allowed, denied] = await Promise.all([Promise.all(yes.map(check)), Promise.all(no.map(check))]);
    for (const [what, ok] of allowed) expect(ok, `should be allowed: ${what}`).toBe(true);
    for (const [what, ok] of denied) expect(ok, `should be denied: ${what}`).toBe(false);
  });

  it("the API server refuses an invalid repository (the dry run is not a no-op)", async () => {
    const file = path.join(tmp, "bad-repository.yaml");
    await writeFile(file, [
      "apiVersion: replicator.dev/v1alpha1",
      "kind: ReplicatorRepository",
      "metadata: { name: bad }",
      "spec:",
      "  s3: { bucket: my-backups }",
      "  filesystem: { claimName: backups }",
      "",
    ].join("\n"));
    const r = await kubectl(["apply", "--dry-run=server", "--namespace", EXAMPLES_NAMESPACE, "-f", file]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain("set exactly one of s3 or filesystem");
  });
});
