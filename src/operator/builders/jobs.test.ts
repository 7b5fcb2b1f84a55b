import { describe, expect, it } from "vitest";
import { backupSpecSchema, repositorySpecSchema, restoreSpecSchema } from "../../api/v1alpha1.js";
import { buildBackupJob, buildRestoreJob, childName, dataVolumeOf } from "./jobs.js";

const settings = { agentImage: "agent:1", backoffLimit: 2, activeDeadlineSeconds: 3600, ttlSecondsAfterFinished: 600, logLevel: "info" };
const owner = { apiVersion: "replicator.dev/v1alpha1", kind: "ReplicatorBackup", name: "nightly", namespace: "db", uid: "u1" };

describe("buildBackupJob", () => {
  const job = buildBackupJob({
    owner,
    spec: backupSpecSchema.parse({ source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } }, options: { lock: "ftwrl" } }),
    repo: repositorySpecSchema.parse({ s3: { bucket: "bkp", prefix: "mysql", endpoint: "http://minio:9000", credentialsSecret: { name: "s3" } } }),
    cluster: "db",
    sourcePod: "db-0",
    sourceAddress: "10.0.0.5",
    settings,
  });
  const container = (job.spec.template as { spec: { containers: { args: string[]; env: { name: string; value?: string; valueFrom?: unknown }[] }[] } }).spec.containers[0]!;

  it("has a deterministic name, an owner and the standard labels", () => {
    expect(job.metadata.name).toBe("nightly-backup");
    expect(job.metadata.ownerReferences[0]).toMatchObject({ kind: "ReplicatorBackup", name: "nightly", uid: "u1", controller: true });
    expect(job.metadata.labels).toMatchObject({
      "app.kubernetes.io/name": "replicator-agent",
      "app.kubernetes.io/instance": "nightly",
      "app.kubernetes.io/component": "backup",
      "app.kubernetes.io/managed-by": "replicator-operator",
      "replicator.dev/cluster": "db",
      "replicator.dev/source-pod": "db-0",
    });
  });

  it("passes the run spec as args and every credential as env from a Secret", () => {
    expect(container.args).toEqual([
      "backup", "--json", "--no-progress", "--source", "mysql://10.0.0.5:3306", "--source-name", "db-0",
      "--repository", "s3://bkp/mysql", "--cluster", "db", "--s3-endpoint", "http://minio:9000",
      "--method", "mysqldump", "--compression", "zstd", "--lock", "ftwrl",
    ]);
    const secretEnv = container.env.filter((e) => e.valueFrom).map((e) => e.name);
    expect(secretEnv).toEqual(["REPLICATOR_DB_USER", "REPLICATOR_DB_PASSWORD", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    expect(container.env.every((e) => e.valueFrom || !/PASSWORD|SECRET/.test(e.name))).toBe(true);
  });

  it("has a backoff limit, a deadline, and fails at once on bad input (exit 2)", () => {
    expect(job.spec).toMatchObject({ backoffLimit: 2, activeDeadlineSeconds: 3600, podFailurePolicy: { rules: [{ action: "FailJob", onExitCodes: { values: [2] } }] } });
  });
});

describe("an https repository with a private CA (s3.caSecret)", () => {
  type Spec = { securityContext: { runAsUser: number }; volumes: unknown[]; containers: { env: { name: string; value?: string }[]; volumeMounts: unknown[] }[] };
  const build = (s3: Record<string, unknown>) =>
    buildRestoreJob({
      owner: { ...owner, kind: "ReplicatorRestore" },
      spec: restoreSpecSchema.parse({ cluster: "db", target: { pod: "db-1", credentialsSecret: { name: "c" } } }),
      repo: repositorySpecSchema.parse({ s3: { bucket: "bkp", endpoint: "https://minio.storage:9000", ...s3 } }),
      targetPod: "db-1",
      targetAddress: "10.0.0.6",
      settings,
    }).spec.template as { spec: Spec };

  it("mounts only the CA's key, read-only, and names it by NODE_EXTRA_CA_CERTS; the PEM itself is in no env or arg", () => {
    const { spec } = build({ caSecret: { name: "minio-ca", key: "root.pem" } });
    expect(spec.volumes).toContainEqual({ name: "s3-ca", secret: { secretName: "minio-ca", items: [{ key: "root.pem", path: "ca.crt" }], defaultMode: 0o444 } });
    const agent = spec.containers[0]!;
    expect(agent.volumeMounts).toContainEqual({ name: "s3-ca", mountPath: "/etc/replicator/s3-ca", readOnly: true });
    expect(agent.env).toContainEqual({ name: "NODE_EXTRA_CA_CERTS", value: "/etc/replicator/s3-ca/ca.crt" });
  });

  it("the key defaults to ca.crt; without caSecret nothing is mounted and Node trusts only its own CAs", () => {
    const ca = build({ caSecret: { name: "minio-ca" } }).spec.volumes.find((v) => (v as { name: string }).name === "s3-ca") as { secret: { items: unknown[] } } | undefined;
    expect(ca?.secret.items).toEqual([{ key: "ca.crt", path: "ca.crt" }]);
    const plain = build({}).spec;
    expect(plain.volumes.map((v) => (v as { name: string }).name)).toEqual(["tmp"]);
    expect(plain.containers[0]!.env.map((e) => e.name)).not.toContain("NODE_EXTRA_CA_CERTS");
  });

  it("refuses a key that is not a Secret key", () => {
    expect(() => repositorySpecSchema.parse({ s3: { bucket: "bkp", caSecret: { name: "minio-ca", key: "../ca" } } })).toThrow(/must be a Secret key/);
  });
});

describe("buildRestoreJob", () => {
  it("names the backup, the target and the master", () => {
    const job = buildRestoreJob({
      owner: { ...owner, kind: "ReplicatorRestore", name: "seed-db-2" },
      spec: restoreSpecSchema.parse({ cluster: "db", target: { pod: "db-2", credentialsSecret: { name: "c" } }, replicateFrom: { statefulSet: "db", credentialsSecret: { name: "repl" } }, backup: "20260101T000000Z-mysqldump-db-0" }),
      repo: repositorySpecSchema.parse({ filesystem: { claimName: "backups" } }),
      targetPod: "db-2",
      targetAddress: "10.0.0.7",
      masterAddress: "10.0.0.5",
      settings,
    });
    const c = (job.spec.template as { spec: { containers: { args: string[]; volumeMounts: { mountPath: string }[] }[] } }).spec.containers[0]!;
    expect(c.args).toEqual([
      "restore", "--json", "--no-progress", "--target", "mysql://10.0.0.7:3306", "--repository", "file:///repository", "--cluster", "db",
      "--backup", "20260101T000000Z-mysqldump-db-0", "--replicate-from", "mysql://10.0.0.5:3306",
    ]);
    expect(c.volumeMounts.map((m) => m.mountPath)).toContain("/repository");
  });
});

describe("childName", () => {
  it("stays within 63 characters and stays unique", () => {
    const long = "a".repeat(70);
    expect(childName(long, "backup").length).toBeLessThanOrEqual(63);
    expect(childName(long, "backup")).not.toBe(childName(`${long}b`, "backup"));
  });

  it("gives a valid, deterministic DNS-1123 label for names of every length", () => {
    const valid = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
    const seen = new Map<string, string>();
    for (let n = 1; n <= 120; n++) {
      for (const base of ["a".repeat(n), "ab-".repeat(n).slice(0, n), `x${"-".repeat(n)}`]) {
        for (const suffix of ["backup", "restore", "20261129t1200", `provision-${"f".repeat(8)}`, "s".repeat(70), "20261129T120000Z-mysqldump-Db_0"]) {
          const name = childName(base, suffix);
          expect(name, `${base} + ${suffix}`).toMatch(valid);
          expect(name.length).toBeLessThanOrEqual(63);
          expect(childName(base, suffix)).toBe(name);
          const input = `${base}|${suffix}`;
          const prev = seen.get(name);
          if (prev !== undefined) expect(prev).toBe(input);
          seen.set(name, input);
        }
      }
    }
  });

  it("keeps a short valid name as it is, and the old shape for a long one", () => {
    expect(childName("nightly", "backup")).toBe("nightly-backup");
    const long = "a".repeat(68);
    expect(childName(long, "backup")).toMatch(/^a{47}-[0-9a-f]{8}-backup$/);
  });
});

describe("a physical (mariabackup) backup Job", () => {
  const sourcePod = {
    spec: {
      nodeName: "node-7",
      securityContext: { runAsUser: 999, runAsGroup: 999, fsGroup: 999 },
      volumes: [{ name: "config", configMap: {} }, { name: "data", persistentVolumeClaim: { claimName: "data-db-0" } }],
      containers: [{ name: "mariadb", volumeMounts: [{ name: "config", mountPath: "/etc/mysql/conf.d" }, { name: "data", mountPath: "/var/lib/mysql", subPath: "data" }] }],
    },
  };

  it("finds the server's data volume, node and user", () => {
    expect(dataVolumeOf(sourcePod)).toEqual({ nodeName: "node-7", claimName: "data-db-0", mountPath: "/var/lib/mysql", subPath: "data", runAsUser: 999, runAsGroup: 999, fsGroup: 999 });
    expect(dataVolumeOf({ spec: { nodeName: "n", containers: [{ name: "x" }] } })).toEqual({
      error: "the source pod mounts no PersistentVolumeClaim; a physical backup reads the server's data volume",
    });
    expect(dataVolumeOf({ spec: {} })).toEqual({ error: "the source pod is not scheduled to a node" });
  });

  it("runs on the source's node with its volume mounted where the server has it", () => {
    const dv = dataVolumeOf(sourcePod);
    if ("error" in dv) throw new Error(dv.error);
    const job = buildBackupJob({
      owner,
      spec: backupSpecSchema.parse({ source: { pod: "db-0", credentialsSecret: { name: "db-creds" } }, method: "mariabackup" }),
      repo: repositorySpecSchema.parse({ s3: { bucket: "bkp", prefix: "" } }),
      cluster: "db",
      sourcePod: "db-0",
      sourceAddress: "10.0.0.5",
      settings,
      dataVolume: dv,
    });
    const pod = (job.spec.template as { spec: { nodeName?: string; securityContext: { runAsUser: number }; volumes: unknown[]; containers: { args: string[]; volumeMounts: unknown[] }[] } }).spec;
    expect(pod.nodeName).toBe("node-7");
    expect(pod.securityContext.runAsUser).toBe(999);
    expect(pod.volumes).toContainEqual({ name: "data", persistentVolumeClaim: { claimName: "data-db-0" } });
    expect(pod.containers[0]?.volumeMounts).toContainEqual({ name: "data", mountPath: "/var/lib/mysql", subPath: "data" });
    expect(pod.containers[0]?.args).toContain("mariabackup");
    expect(() =>
      buildBackupJob({
        owner,
        spec: backupSpecSchema.parse({ source: { pod: "db-0", credentialsSecret: { name: "db-creds" } }, method: "mariabackup" }),
        repo: repositorySpecSchema.parse({ s3: { bucket: "bkp", prefix: "" } }),
        cluster: "db",
        sourcePod: "db-0",
        sourceAddress: "10.0.0.5",
        settings,
      }),
    ).toThrow(/needs the source's data volume/);
  });
});
