import { describe, expect, it } from "vitest";
import { repositorySpecSchema } from "../../api/v1alpha1.js";
import { archiverName, buildArchiverDeployment, SPEC_HASH_ANNOTATION } from "./archiver.js";

const settings = { agentImage: "agent:1", backoffLimit: 2, activeDeadlineSeconds: 3600, ttlSecondsAfterFinished: 600, logLevel: "info" };
const owner = { apiVersion: "replicator.dev/v1alpha1", kind: "ReplicatorRepository", name: "backups", namespace: "db", uid: "u1" };
const repo = repositorySpecSchema.parse({
  s3: { bucket: "bkp", prefix: "mysql", endpoint: "http://minio:9000", credentialsSecret: { name: "s3" } },
  binlogArchives: [{ source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } } }],
});
const entry = { cluster: "db", source: repo.binlogArchives[0]!.source, flushIntervalSeconds: repo.binlogArchives[0]!.flushIntervalSeconds };

type Container = { name: string; args: string[]; env: { name: string; value?: string; valueFrom?: { secretKeyRef: { name: string; key: string } } }[]; terminationMessagePolicy: string; securityContext: unknown; resources: unknown; volumeMounts: { name: string; mountPath: string }[] };
type PodSpec = { containers: Container[]; securityContext: { runAsNonRoot: boolean }; restartPolicy: string; volumes: { name: string }[] };
const podSpec = (d: ReturnType<typeof buildArchiverDeployment>): PodSpec => (d.spec.template as { spec: PodSpec }).spec;

describe("buildArchiverDeployment", () => {
  const d = buildArchiverDeployment({ owner, repo, entry, masterPod: "db-0", masterAddress: "db-0.db.db.svc", settings });
  const c = podSpec(d).containers[0]!;

  it("is one replica with strategy Recreate (never two archivers on one archive), owned by the repository", () => {
    expect(d.metadata.name).toBe("backups-binlogs-db");
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.strategy).toEqual({ type: "Recreate" });
    expect(d.metadata.ownerReferences[0]).toMatchObject({ kind: "ReplicatorRepository", name: "backups", uid: "u1", controller: true });
    expect(d.spec.selector).toEqual({ matchLabels: { "app.kubernetes.io/name": "replicator-agent", "app.kubernetes.io/instance": "backups", "replicator.dev/operation": "binlog-archive", "replicator.dev/cluster": "db" } });
    expect((d.spec.template as { metadata: { labels: Record<string, string> } }).metadata.labels).toMatchObject({ "replicator.dev/source-pod": "db-0", "app.kubernetes.io/managed-by": "replicator-operator" });
  });

  it("runs binlog-archive against the master with the repository and interval as args, every credential as env from a Secret", () => {
    expect(c.args).toEqual([
      "binlog-archive", "--source", "mysql://db-0.db.db.svc:3306", "--repository", "s3://bkp/mysql", "--cluster", "db", "--s3-endpoint", "http://minio:9000", "--flush-interval", "60",
    ]);
    expect(c.args.join(" ")).not.toMatch(/password|secret/i);
    expect(c.env.filter((e) => e.valueFrom).map((e) => [e.name, e.valueFrom?.secretKeyRef.name, e.valueFrom?.secretKeyRef.key])).toEqual([
      ["REPLICATOR_DB_USER", "db-creds", "username"],
      ["REPLICATOR_DB_PASSWORD", "db-creds", "password"],
      ["AWS_ACCESS_KEY_ID", "s3", "AWS_ACCESS_KEY_ID"],
      ["AWS_SECRET_ACCESS_KEY", "s3", "AWS_SECRET_ACCESS_KEY"],
    ]);
  });

  it("reports a failure as the last log line (FallbackToLogsOnError), runs as non-root with a read-only root and a /tmp volume, with requests", () => {
    expect(c.terminationMessagePolicy).toBe("FallbackToLogsOnError");
    expect(podSpec(d).restartPolicy).toBe("Always");
    expect(podSpec(d).securityContext.runAsNonRoot).toBe(true);
    expect(c.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(c.volumeMounts).toContainEqual({ name: "tmp", mountPath: "/tmp" });
    expect(c.resources).toEqual({ requests: { cpu: "50m", memory: "96Mi" } });
  });

  it("a new master changes the spec hash (the Deployment is updated), the same input does not", () => {
    const same = buildArchiverDeployment({ owner, repo, entry, masterPod: "db-0", masterAddress: "db-0.db.db.svc", settings });
    const moved = buildArchiverDeployment({ owner, repo, entry, masterPod: "db-1", masterAddress: "db-1.db.db.svc", settings });
    expect(same.metadata.annotations[SPEC_HASH_ANNOTATION]).toBe(d.metadata.annotations[SPEC_HASH_ANNOTATION]);
    expect(moved.metadata.annotations[SPEC_HASH_ANNOTATION]).not.toBe(d.metadata.annotations[SPEC_HASH_ANNOTATION]);
    expect(moved.spec.selector).toEqual(d.spec.selector);
    expect(podSpec(moved).containers[0]!.args[2]).toBe("mysql://db-1.db.db.svc:3306");
  });

  it("mounts a filesystem repository's claim; long names stay valid DNS labels", () => {
    const fs = repositorySpecSchema.parse({ filesystem: { claimName: "backups" } });
    const f = buildArchiverDeployment({ owner, repo: fs, entry, masterPod: "db-0", masterAddress: "10.0.0.5", settings });
    expect(podSpec(f).volumes.map((v) => v.name)).toEqual(["repository", "tmp"]);
    expect(podSpec(f).containers[0]!.args).toContain("file:///repository");
    const long = archiverName("a-very-long-repository-name-for-the-production-cluster", "orders-eu-west-primary-db");
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });
});
