import { describe, expect, it } from "vitest";
import { restoreSpecSchema, validateSpec, type RestoreSpec } from "../../../api/v1alpha1.js";
import { computeRestoreStatus, decideRestore, pointInTimeProblem, selectServerBackup, type RestoreCandidate, type RestoreObserved } from "./decide.js";
import { buildRestoreJob } from "../../builders/jobs.js";
import { repositorySpecSchema } from "../../../api/v1alpha1.js";

const spec = (s: Record<string, unknown>): RestoreSpec => {
  const r = validateSpec(restoreSpecSchema, { cluster: "db", target: { pod: "db-new", credentialsSecret: { name: "db-credentials" } }, ...s });
  if (!r.ok) throw new Error(r.message);
  return r.value;
};

const b = (name: string, kind: RestoreCandidate["kind"], hasPosition = true, sourceRole = "master"): RestoreCandidate => ({
  name,
  time: new Date(`2026-01-0${name.slice(-1)}T00:00:00Z`),
  method: kind === "logical" ? "mysqldump" : kind === "physical" ? "mariabackup" : "volumesnapshot",
  kind,
  hasPosition,
  sourceRole,
  source: "db-0",
});

const replicating = { replicateFrom: { statefulSet: "db", credentialsSecret: { name: "db-replication" } } };

describe("selectServerBackup: what `latest` means for a restore into a running server", () => {
  it("is the newest logical backup, never a newer physical one", () => {
    expect(selectServerBackup(spec({}), [b("b1", "logical"), b("b2", "physical"), b("b3", "snapshot")], "db-new")).toEqual({ ok: true, backup: "b1" });
    expect(selectServerBackup(spec({ before: "2026-01-01T12:00:00Z" }), [b("b1", "logical"), b("b2", "logical")], "db-new")).toEqual({ ok: true, backup: "b1" });
  });

  it("with replicateFrom, the newest logical backup that has a position", () => {
    expect(selectServerBackup(spec(replicating), [b("b1", "logical"), b("b2", "logical", false, "standalone")], "db-new")).toEqual({ ok: true, backup: "b1" });
  });

  it("says, in one message naming the fix, why there is none", () => {
    const onlyPhysical = selectServerBackup(spec(replicating), [b("b1", "physical")], "db-new");
    expect(onlyPhysical).toEqual({
      ok: false,
      plan: {
        kind: "wait",
        reason: "NoRestorableBackup",
        requeueMs: 60_000,
        message:
          "no logical backup of cluster db in repository default: the running server db-new can load only a logical (mysqldump) backup, and the newest, b1, is physical (mariabackup); take a logical one (kubectl replicator backup db --method mysqldump, or a ReplicatorBackup with method: mysqldump), or seed a new slave from the physical backup with a provisioned StatefulSet (docs/provisioning.md)",
      },
    });
    const noPosition = selectServerBackup(spec(replicating), [b("b1", "logical", false, "standalone")], "db-new");
    expect(noPosition.ok ? "" : noPosition.plan.message).toBe(
      "no logical backup of cluster db in repository default has a replication position, which spec.replicateFrom needs (the newest, b1: binary logging was off on db-0 when it was taken); set log_bin and server_id on the master and take a new backup: kubectl replicator backup db --method mysqldump",
    );
    const none = selectServerBackup(spec({}), [], "db-new");
    expect(none.ok ? "" : none.plan.message).toBe("no backup of cluster db in repository default; take one: kubectl replicator backup STATEFULSET --method mysqldump");
  });

  it("refuses a physical backup named explicitly, saying how it can be restored; leaves an unknown name to the Job", () => {
    const named = selectServerBackup(spec({ backup: "b1" }), [b("b1", "physical")], "db-new");
    expect(named).toMatchObject({ ok: false, plan: { kind: "invalid" } });
    expect(named.ok ? "" : named.plan.message).toContain("backup b1 is physical (mariabackup): it cannot be loaded into the running server db-new");
    expect(selectServerBackup(spec({ backup: "nope" }), [b("b1", "logical")], "db-new")).toEqual({ ok: true, backup: undefined });
  });
});

describe("spec.until / spec.untilGtid: a point-in-time restore", () => {
  const repo = repositorySpecSchema.parse({ s3: { bucket: "bkp" } });
  const target = { metadata: { name: "db-new" }, status: { phase: "Running", podIP: "10.0.0.9", containerStatuses: [{ name: "mariadb", ready: true }] } };
  const observed = (s: Record<string, unknown>, backups: RestoreCandidate[] = [b("b1", "logical"), b("b2", "logical")]): RestoreObserved => ({
    spec: validateSpec(restoreSpecSchema, { cluster: "db", target: { pod: "db-new", credentialsSecret: { name: "db-credentials" } }, ...s }),
    status: undefined,
    generation: 1,
    repository: { found: true, spec: { ok: true, value: repo } },
    job: undefined,
    jobPods: [],
    pods: [target],
    preflight: { catalog: { kind: "listed", backups } },
  });

  it("is exclusive with backup, before, replicateFrom and volume, and until must be a time; one line each", () => {
    expect(pointInTimeProblem(spec({ until: "2026-11-30T10:41:59Z" }))).toBeUndefined();
    expect(pointInTimeProblem(spec({ untilGtid: "0-1-42" }))).toBeUndefined();
    expect(pointInTimeProblem(spec({ until: "2026-11-30T10:41:59Z", untilGtid: "0-1-42" }))).toBe("spec: set until or untilGtid, not both");
    expect(pointInTimeProblem(spec({ until: "2026-11-30T10:41:59Z", backup: "b1", ...replicating }))).toBe("spec: until/untilGtid choose the base backup themselves; remove backup, replicateFrom");
    expect(pointInTimeProblem(spec({ untilGtid: "0-1-42", before: "2026-11-30T10:00:00Z" }))).toBe("spec: until/untilGtid choose the base backup themselves; remove before");
    expect(pointInTimeProblem(spec({ until: "yesterday" }))).toMatch(/^spec\.until: invalid time "yesterday"; use ISO 8601/);
    expect(decideRestore(observed({ until: "yesterday" }))).toMatchObject({ kind: "invalid" });
    expect(validateSpec(restoreSpecSchema, { cluster: "db", target: { pod: "x", credentialsSecret: { name: "c" } }, untilGtid: "42" })).toMatchObject({ ok: false, message: expect.stringMatching(/^spec\.untilGtid: must be a GTID/) as unknown });
  });

  it("leaves the base backup to the Job, which gets --until / --until-gtid and no --backup; the status shows the target", () => {
    for (const [s, args] of [[{ until: "2026-11-30T10:41:59Z" }, ["--until", "2026-11-30T10:41:59Z"]], [{ untilGtid: "0-1-42" }, ["--until-gtid", "0-1-42"]]] as const) {
      const plan = decideRestore(observed(s));
      expect(plan).toMatchObject({ kind: "createJob", targetPod: "db-new" });
      if (plan.kind !== "createJob") continue;
      expect(plan.backup).toBeUndefined();
      const job = buildRestoreJob({ owner: { apiVersion: "replicator.dev/v1alpha1", kind: "ReplicatorRestore", name: "pitr", namespace: "db", uid: "u" }, spec: plan.spec, repo, targetPod: plan.targetPod, targetAddress: plan.targetAddress, settings: { agentImage: "a", backoffLimit: 0, activeDeadlineSeconds: 60, ttlSecondsAfterFinished: 60, logLevel: "info" } });
      const cargs = (job.spec.template as { spec: { containers: { args: string[] }[] } }).spec.containers[0]!.args;
      expect(cargs.slice(-2)).toEqual(args);
      expect(cargs).not.toContain("--backup");
      const st = computeRestoreStatus(undefined, plan, new Date("2026-11-30T12:00:00Z"), 1, "pitr-restore");
      expect(st?.until).toBe("untilGtid" in s ? "GTID 0-1-42" : "2026-11-30T10:41:59Z");
    }
  });

  it("on success, the status shows the base backup the agent chose, the target and the replayed range", () => {
    const result = {
      ok: true,
      operation: "restore",
      pointInTime: true,
      plan: { backup: "20261130T100000Z", backupPosition: "0-1-10", serverId: 1, binlogs: [{ file: "mysql-bin.000002" }, { file: "mysql-bin.000003" }], fromGtid: "0-1-11", stopGtid: "0-1-42", stopTime: "2026-11-30T10:42:00.000Z", until: "GTID 0-1-42" },
      replayed: 31,
    };
    const st = computeRestoreStatus({ phase: "Running" }, { kind: "succeeded", jobName: "pitr-restore", result }, new Date("2026-11-30T12:00:00Z"), 1);
    expect(st).toMatchObject({
      phase: "Completed",
      backupName: "20261130T100000Z",
      until: "GTID 0-1-42",
      pointInTime: { fromGtid: "0-1-11", stopGtid: "0-1-42", stopTime: "2026-11-30T10:42:00.000Z", binlogs: ["mysql-bin.000002", "mysql-bin.000003"], replayed: 31 },
      message: "restored 20261130T100000Z and replayed 31 transaction(s) of the binlog archive up to GTID 0-1-42",
    });
  });
});
