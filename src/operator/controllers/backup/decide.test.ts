import { describe, expect, it } from "vitest";
import { backupSpecSchema, repositorySpecSchema, validateSpec } from "../../../api/v1alpha1.js";
import { stableAddress, type JobLike, type PodLike } from "../../observe.js";
import { computeBackupStatus, decideBackup, positionVerdict, type BackupObserved } from "./decide.js";

const repo = { found: true as const, spec: validateSpec(repositorySpecSchema, { s3: { bucket: "backups" }, retention: { keep: 2 } }) };
const spec = validateSpec(backupSpecSchema, { source: { statefulSet: "db", credentialsSecret: { name: "db-creds" } } });

function pod(name: string, ip: string, ready = true, labels: Record<string, string> = {}): PodLike {
  return {
    metadata: { name, labels, ownerReferences: [{ kind: "StatefulSet", name: "db" }] },
    status: {
      phase: "Running",
      podIP: ip,
      conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
      containerStatuses: [{ name: "mariadb", ready }],
    },
  };
}

function observed(o: Partial<BackupObserved> = {}): BackupObserved {
  return { spec, status: undefined, generation: 1, repository: repo, job: undefined, jobPods: [], pods: [pod("db-0", "10.0.0.5"), pod("db-1", "10.0.0.6")], busyPods: new Map(), imported: false, secretProblem: "", ...o };
}

function job(status: JobLike["status"]): JobLike {
  return { metadata: { name: "b1-backup", labels: { "replicator.dev/source-pod": "db-1" } }, status };
}

function jobPod(message: string): PodLike {
  return { metadata: { name: "b1-backup-x" }, status: { containerStatuses: [{ name: "agent", state: { terminated: { exitCode: 0, message, finishedAt: "2026-01-01T00:00:00Z" } } }] } };
}

describe("decideBackup", () => {
  it("starts a Job on the StatefulSet's master (ordinal 0, or the labelled pod)", () => {
    expect(decideBackup(observed())).toMatchObject({ kind: "createJob", sourcePod: "db-0", sourceAddress: "10.0.0.5", sourceRole: "master", cluster: "db" });
    const labelled = observed({ pods: [pod("db-0", "10.0.0.5"), pod("db-1", "10.0.0.6", true, { "replicator.dev/role": "master" })] });
    expect(decideBackup(labelled)).toMatchObject({ kind: "createJob", sourcePod: "db-1" });
  });

  it("picks a ready slave when asked", () => {
    const s = validateSpec(backupSpecSchema, { source: { statefulSet: "db", role: "slave", credentialsSecret: { name: "c" } } });
    expect(decideBackup(observed({ spec: s }))).toMatchObject({ kind: "createJob", sourcePod: "db-1", sourceRole: "slave" });
    expect(decideBackup(observed({ spec: s, pods: [pod("db-0", "10.0.0.5"), pod("db-1", "10.0.0.6", false)] }))).toMatchObject({ kind: "wait", reason: "SourceNotReady" });
  });

  it("waits for the repository, and never runs two backups of one server at once", () => {
    expect(decideBackup(observed({ repository: { found: false } }))).toMatchObject({ kind: "wait", reason: "RepositoryNotFound" });
    expect(decideBackup(observed({ busyPods: new Map([["db-0", ["other-backup"]]]) }))).toMatchObject({ kind: "wait", reason: "Queued" });
  });

  it("reports an invalid spec with its path and does not retry", () => {
    const bad = validateSpec(backupSpecSchema, { source: { credentialsSecret: {} } });
    const plan = decideBackup(observed({ spec: bad }));
    expect(plan).toEqual({ kind: "invalid", message: "spec.source.credentialsSecret.name: Invalid input: expected string, received undefined" });
    const status = computeBackupStatus(undefined, plan, new Date("2026-01-01T00:00:00Z"), 1);
    expect(status?.phase).toBe("Failed");
    expect(status?.conditions?.find((c) => c.type === "Ready")).toMatchObject({ status: "False", reason: "InvalidSpec" });
  });

  it("follows an existing Job (adoption after a restart) instead of creating one", () => {
    expect(decideBackup(observed({ job: job({ active: 1 }) }))).toEqual({ kind: "running", jobName: "b1-backup" });
  });

  it("completes with the agent's result from the termination message", () => {
    const msg = JSON.stringify({ ok: true, name: "20260101T000000Z-mysqldump-db-0", size: 2048, sha256: "a".repeat(64), method: "mysqldump", replication: { role: "master", gtid: "0-1-5", file: "mysql-bin.000001", position: 4 } });
    const plan = decideBackup(observed({ job: job({ succeeded: 1, conditions: [{ type: "Complete", status: "True" }] }), jobPods: [jobPod(msg)] }));
    expect(plan.kind).toBe("succeeded");
    const status = computeBackupStatus({ phase: "Running" }, plan, new Date("2026-01-01T00:01:00Z"), 1);
    expect(status).toMatchObject({ phase: "Completed", backupName: "20260101T000000Z-mysqldump-db-0", size: 2048, sizeHuman: "2.0 KiB", position: "0-1-5" });
  });

  it("fails with the plugin's own message", () => {
    const msg = JSON.stringify({ ok: false, reason: "CommandFailed", error: "mariadb-dump failed to dump the source (exit code 2): Got error: 1045" });
    const plan = decideBackup(observed({ job: job({ failed: 1, conditions: [{ type: "Failed", status: "True", reason: "BackoffLimitExceeded" }] }), jobPods: [jobPod(msg)] }));
    expect(plan).toMatchObject({ kind: "failed", reason: "CommandFailed", message: "mariadb-dump failed to dump the source (exit code 2): Got error: 1045", sourcePod: "db-1" });
  });

  it("checks the Secrets before it creates a Job, and names the Secret and the missing key", () => {
    expect(decideBackup(observed({ secretProblem: undefined }))).toEqual({ kind: "needPreflight" });
    const problem = 'Secret db-creds (spec.source.credentialsSecret) has no key "username" (spec.source.credentialsSecret.userKey); its keys are password, user.';
    expect(decideBackup(observed({ secretProblem: problem }))).toEqual({ kind: "wait", reason: "SecretInvalid", message: problem, requeueMs: 15_000 });
  });

  it("completes a backup without a position with a warning condition naming the cause: binary logging off on the source", () => {
    const msg = JSON.stringify({ ok: true, name: "20260101T000000Z-mysqldump-db-0", size: 2048, sha256: "a".repeat(64), method: "mysqldump", role: "standalone", warnings: ["binary logging is off on the source: the backup records no replication position"] });
    const plan = decideBackup(observed({ job: job({ succeeded: 1, conditions: [{ type: "Complete", status: "True" }] }), jobPods: [jobPod(msg)] }));
    const status = computeBackupStatus({ phase: "Running", sourcePod: "db-0" }, plan, new Date("2026-01-01T00:01:00Z"), 1);
    expect(status?.phase).toBe("Completed");
    expect(status?.position).toBeUndefined();
    const cond = status?.conditions?.find((c) => c.type === "ReplicationPosition");
    expect(cond).toMatchObject({ status: "False", reason: "BinaryLoggingOff" });
    expect(cond?.message).toBe(
      "binary logging is off on db-0: the backup has no replication position; set log_bin and server_id in db-0's server configuration and take a new backup to seed slaves (this one restores data only)",
    );
    expect(status?.message).toBe(`backup 20260101T000000Z-mysqldump-db-0 stored, but ${cond?.message ?? ""}`);
    expect(positionVerdict({ role: "master", replication: { role: "master", gtid: "0-1-5" } }, "db-0")).toMatchObject({ ok: true, reason: "PositionRecorded" });
  });

  it("deletes a finished Job that mounts the source's volume once its outcome is recorded, and only then", () => {
    const done = job({ succeeded: 1, conditions: [{ type: "Complete", status: "True" }] });
    expect(decideBackup(observed({ status: { phase: "Completed" }, job: done, jobHoldsVolume: true }))).toEqual({ kind: "done", releaseJob: "b1-backup" });
    expect(decideBackup(observed({ status: { phase: "Completed" }, job: done, jobHoldsVolume: false }))).toEqual({ kind: "done" });
    expect(decideBackup(observed({ status: { phase: "Running" }, job: done, jobHoldsVolume: true, jobPods: [jobPod(JSON.stringify({ ok: true, name: "n" }))] })).kind).toBe("succeeded");
  });

  it("does nothing more once terminal, or for a resource that mirrors storage", () => {
    expect(decideBackup(observed({ status: { phase: "Completed" } }))).toEqual({ kind: "done" });
    expect(decideBackup(observed({ imported: true }))).toEqual({ kind: "done" });
  });
});

describe("stableAddress", () => {
  it("points slaves at the master's DNS name under its governing Service, or at its IP", () => {
    expect(stableAddress("dns", "db-0", "prod", "db", "10.0.0.5")).toBe("db-0.db.prod.svc");
    expect(stableAddress("dns", "db-0", "prod", undefined, "10.0.0.5")).toBe("10.0.0.5");
    expect(stableAddress("podIP", "db-0", "prod", "db", "10.0.0.5")).toBe("10.0.0.5");
  });
});
