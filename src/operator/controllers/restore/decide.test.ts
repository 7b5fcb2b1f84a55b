import { describe, expect, it } from "vitest";
import { restoreSpecSchema, validateSpec, type RestoreSpec } from "../../../api/v1alpha1.js";
import { selectServerBackup, type RestoreCandidate } from "./decide.js";

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
