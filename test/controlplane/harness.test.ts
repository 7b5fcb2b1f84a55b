// Proves the control-plane harness: a real API server and controller manager
// (test/harness/kube/controlplane.ts) with the test kubelet
// (test/harness/kube/kubelet.ts) running Pods as local processes: agent Jobs
// complete or fail with the CLI's exit code, a MariaDB StatefulSet runs real
// servers on their own loopback IPs and PVC directories, readiness gates
// hold a pod unready until their condition is True, and env from Secrets,
// ConfigMaps and the downward API reaches the process.
import { existsSync } from "node:fs";
import path from "node:path";
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startControlPlane, type ControlPlane } from "../harness/kube/controlplane.js";
import { startKubelet, type Kubelet } from "../harness/kube/kubelet.js";
import type { Pod, PodCondition } from "../harness/kube/pod-types.js";

const NS = "harness";
const IMAGES = {
  "^test/agent(:|$)": "agent",
  "^test/mariadb(:|$)": "mariadb",
  "^test/shell(:|$)": "exec",
} as const;

let cp: ControlPlane;
let kubelet: Kubelet;

interface Job {
  status?: { succeeded?: number; failed?: number; conditions?: { type: string; status: string; reason?: string }[] };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until `fn` returns a value other than undefined/false. */
async function eventually<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

const getPod = (name: string): Promise<Pod> => cp.api.get<Pod>(`/api/v1/namespaces/${NS}/pods/${name}`);
const condition = (pod: Pod, type: string): PodCondition | undefined => pod.status?.conditions?.find((c) => c.type === type);
const isReady = (pod: Pod): boolean => condition(pod, "Ready")?.status === "True";

async function jobPod(job: string): Promise<Pod | undefined> {
  const list = await cp.api.get<{ items: Pod[] }>(`/api/v1/namespaces/${NS}/pods`, { labelSelector: `job-name=${job}` });
  return list.items[0];
}

async function jobCondition(job: string, type: "Complete" | "Failed"): Promise<{ type: string; reason?: string } | undefined> {
  const j = await cp.api.get<Job>(`/apis/batch/v1/namespaces/${NS}/jobs/${job}`);
  return j.status?.conditions?.find((c) => c.type === type && c.status === "True");
}

async function query<T>(host: string, sql: string): Promise<T[]> {
  const c = await mysql.createConnection({ host, port: 3306, user: "root", password: "" });
  try {
    const [rows] = await c.query(sql);
    return rows as T[];
  } finally {
    await c.end();
  }
}

function jobYaml(name: string, image: string, container: Record<string, unknown>, extraSpec = ""): string {
  return `
apiVersion: batch/v1
kind: Job
metadata: {name: ${name}}
spec:
  backoffLimit: 0
${extraSpec}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: agent
        image: ${image}
        terminationMessagePolicy: FallbackToLogsOnError
${Object.entries(container).map(([k, v]) => `        ${k}: ${JSON.stringify(v)}`).join("\n")}
`;
}

beforeAll(async () => {
  cp = await startControlPlane();
  console.log(`control plane ready in ${cp.startupMs} ms at ${cp.server}`);
  kubelet = await startKubelet({ kubeConfig: cp.kubeConfig(), images: IMAGES });
  await cp.createNamespace(NS);
});

afterAll(async () => {
  // Either may be unset when beforeAll failed.
  await (kubelet as Kubelet | undefined)?.stop();
  await (cp as ControlPlane | undefined)?.stop();
});

describe("control plane", () => {
  it("serves a Ready node and issues ServiceAccount kubeconfigs", async () => {
    const node = await cp.api.get<{ status: { conditions: PodCondition[] } }>("/api/v1/nodes/test-node");
    expect(node.status.conditions.find((c) => c.type === "Ready")?.status).toBe("True");
    const file = await cp.serviceAccountKubeconfig(NS, "probe");
    expect(existsSync(file)).toBe(true);
    const { kubeHttp } = await import("../harness/kube/rest.js");
    const { KubeConfig } = await import("@kubernetes/client-node");
    const kc = new KubeConfig();
    kc.loadFromFile(file);
    const asSa = await kubeHttp(kc);
    // RBAC is on: the new ServiceAccount may not list pods.
    await expect(asSa.get(`/api/v1/namespaces/${NS}/pods`)).rejects.toMatchObject({ status: 403 });
    asSa.close();
  });
});

describe("agent Jobs", () => {
  it("completes a Job whose CLI exits 0", async () => {
    await cp.applyYaml(jobYaml("version", "test/agent:dev", { args: ["--version"] }), { namespace: NS });
    await eventually("Job version to complete", () => jobCondition("version", "Complete"));
    const job = await cp.api.get<Job>(`/apis/batch/v1/namespaces/${NS}/jobs/version`);
    expect(job.status?.succeeded).toBe(1);
    const pod = (await jobPod("version"))!;
    expect(pod.status?.phase).toBe("Succeeded");
    expect(pod.status?.containerStatuses?.[0]?.state.terminated).toMatchObject({ exitCode: 0, reason: "Completed" });
    expect(await kubelet.containerLog(NS, pod.metadata.name, "agent")).toContain("0.1.0");
    expect(pod.metadata.annotations?.["test.replicator.dev/log"]).toBeTruthy();
  });

  it("fails a Job with the CLI's exit code 2 for bad input (podFailurePolicy FailJob)", async () => {
    const policy = `  podFailurePolicy:
    rules:
    - action: FailJob
      onExitCodes: {containerName: agent, operator: In, values: [2]}`;
    await cp.applyYaml(jobYaml("bogus", "test/agent:dev", { args: ["backup", "--bogus"] }, policy).replace("backoffLimit: 0", "backoffLimit: 3"), {
      namespace: NS,
    });
    const failed = await eventually("Job bogus to fail", () => jobCondition("bogus", "Failed"));
    expect(failed.reason).toBe("PodFailurePolicy");
    const pod = (await jobPod("bogus"))!;
    expect(pod.status?.phase).toBe("Failed");
    const terminated = pod.status?.containerStatuses?.[0]?.state.terminated;
    expect(terminated).toMatchObject({ exitCode: 2, reason: "Error" });
    // Nothing in the termination log, so FallbackToLogsOnError gives stderr.
    expect(terminated?.message).toContain("--bogus");
  });
});

describe("MariaDB StatefulSet", () => {
  const podIp = async (name: string): Promise<string> => {
    const pod = await eventually(`${name} to be Ready`, async () => {
      const p = await getPod(name).catch(() => undefined);
      return p && isReady(p) && p.status?.phase === "Running" ? p : undefined;
    }, 120_000);
    return pod.status!.podIP!;
  };

  it("runs each replica as a mariadbd on its own 127.0.0.N with its PVC as datadir", async () => {
    await cp.applyYaml(
      `
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: mariadb
        image: test/mariadb:10.11
        ports: [{name: mysql, containerPort: 3306}]
        volumeMounts: [{name: data, mountPath: /var/lib/mysql}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
`,
      { namespace: NS },
    );
    const ip0 = await podIp("db-0");
    const ip1 = await podIp("db-1");
    expect(ip0).toMatch(/^127\.0\.0\.\d+$/);
    expect(ip1).toMatch(/^127\.0\.0\.\d+$/);
    expect(ip0).not.toBe(ip1);
    expect(kubelet.podAddress(NS, "db-0")).toBe(ip0);
    const [s0] = await query<{ id: number }>(ip0, "SELECT @@server_id AS id");
    const [s1] = await query<{ id: number }>(ip1, "SELECT @@server_id AS id");
    expect(s0?.id).toBe(1);
    expect(s1?.id).toBe(2);
    expect(existsSync(path.join(kubelet.pvcDir(NS, "data-db-0"), "data", "mysql"))).toBe(true);
    // The binlog is on, and the harness's own user set-up is not in it.
    const [gtid] = await query<{ pos: string }>(ip0, "SELECT @@gtid_binlog_pos AS pos");
    expect(gtid?.pos).toBe("");
  });

  it("restarts a crashed mariadbd and keeps the data of a recreated pod", async () => {
    const ip0 = await podIp("db-0");
    await query(ip0, "CREATE DATABASE IF NOT EXISTS keep");
    await query(ip0, "CREATE TABLE IF NOT EXISTS keep.t (id INT PRIMARY KEY)");
    await query(ip0, "REPLACE INTO keep.t VALUES (42)");
    expect(kubelet.killContainer(NS, "db-0")).toBe(true);
    await eventually("db-0 to restart", async () => {
      const p = await getPod("db-0");
      return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 && isReady(p);
    });
    expect(await query(ip0, "SELECT id FROM keep.t")).toEqual([{ id: 42 }]);

    // Deleting the pod: the kubelet stops mariadbd, the StatefulSet controller
    // recreates db-0 (new UID, new IP) on the same PVC directory.
    const oldUid = (await getPod("db-0")).metadata.uid;
    await cp.api.delete(`/api/v1/namespaces/${NS}/pods/db-0`);
    await eventually("db-0 to be recreated", async () => {
      const p = await getPod("db-0").catch(() => undefined);
      return p !== undefined && p.metadata.uid !== oldUid;
    });
    const newIp = await podIp("db-0");
    expect(await query(newIp, "SELECT id FROM keep.t")).toEqual([{ id: 42 }]);
  });
});

describe("readiness gates", () => {
  it("keeps a pod unready until its gate condition is True", async () => {
    await cp.applyYaml(
      `
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  terminationGracePeriodSeconds: 5
  readinessGates: [{conditionType: replicator.dev/provisioned}]
  containers:
  - name: main
    image: test/shell
    command: [sleep, "3600"]
`,
      { namespace: NS },
    );
    await eventually("gated containers to be ready", async () => condition(await getPod("gated"), "ContainersReady")?.status === "True");
    await sleep(1_500); // a few kubelet syncs
    let pod = await getPod("gated");
    expect(condition(pod, "Ready")).toMatchObject({ status: "False", reason: "ReadinessGatesNotReady" });

    await cp.api.patch(
      `/api/v1/namespaces/${NS}/pods/gated/status`,
      { status: { conditions: [{ type: "replicator.dev/provisioned", status: "True", reason: "Provisioned", lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, "Z") }] } },
      "strategic",
    );
    pod = await eventually("gated to be Ready", async () => {
      const p = await getPod("gated");
      return isReady(p) ? p : undefined;
    });
    // The kubelet's own status writes keep the operator's condition.
    expect(condition(pod, "replicator.dev/provisioned")?.status).toBe("True");
    // A steady pod is not rewritten on every sync (informers would churn).
    const rv = (await getPod("gated")).metadata.resourceVersion;
    await sleep(2_000);
    expect((await getPod("gated")).metadata.resourceVersion).toBe(rv);

    await cp.api.delete(`/api/v1/namespaces/${NS}/pods/gated`);
    await eventually("gated to be gone", async () => (await getPod("gated").catch(() => undefined)) === undefined, 30_000);
  });
});

describe("container environment", () => {
  it("resolves env from Secrets, ConfigMaps and the downward API", async () => {
    await cp.applyYaml(
      `
apiVersion: v1
kind: Secret
metadata: {name: db-credentials}
stringData: {password: s3cr3t}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {level: debug}
`,
      { namespace: NS },
    );
    await cp.applyYaml(
      jobYaml("env", "test/shell", {
        command: ["sh", "-c", 'printf "%s|%s|%s|%s" "$DB_PASSWORD" "$LEVEL" "$POD_NAME" "$GREETING" > "$REPLICATOR_TERMINATION_LOG"'],
        env: [
          { name: "DB_PASSWORD", valueFrom: { secretKeyRef: { name: "db-credentials", key: "password" } } },
          { name: "LEVEL", valueFrom: { configMapKeyRef: { name: "settings", key: "level" } } },
          { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
          { name: "GREETING", value: "hello $(LEVEL)" },
        ],
      }),
      { namespace: NS },
    );
    await eventually("Job env to complete", () => jobCondition("env", "Complete"));
    const pod = (await jobPod("env"))!;
    expect(pod.status?.containerStatuses?.[0]?.state.terminated?.message).toBe(`s3cr3t|debug|${pod.metadata.name}|hello debug`);
  });

  it("reports a missing Secret and an unknown image as waiting reasons", async () => {
    await cp.applyYaml(
      `
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  restartPolicy: Never
  containers:
  - name: needs-secret
    image: test/agent:dev
    args: ["--version"]
    env: [{name: X, valueFrom: {secretKeyRef: {name: missing, key: x}}}]
  - name: unknown
    image: quay.io/nobody/nothing:1
`,
      { namespace: NS },
    );
    const pod = await eventually("broken to report both containers", async () => {
      const p = await getPod("broken");
      const reasons = p.status?.containerStatuses?.map((c) => c.state.waiting?.reason);
      return reasons?.includes("CreateContainerConfigError") && reasons.includes("ImageNotKnownToTestKubelet") ? p : undefined;
    });
    expect(pod.status?.phase).toBe("Pending");
    const unknown = pod.status?.containerStatuses?.find((c) => c.name === "unknown");
    expect(unknown?.state.waiting?.message).toContain("quay.io/nobody/nothing:1");
  });
});
