import { describe, expect, it } from "vitest";
import { chooseSeed, decideProvision, provisionSettings, type ProvisionObserved, type SeedCandidate } from "./decide.js";

const pvc = (annotations: Record<string, string> = {}) => ({ name: "data-db-2", uid: "0123456789", annotations });

function o(x: Partial<ProvisionObserved>): ProvisionObserved {
  return { podReady: true, isMaster: false, pvc: pvc(), restore: undefined, gate: undefined, seed: undefined, ...x };
}

describe("decideProvision", () => {
  it("never acts on a volume that carries the marker: it only opens the gate", () => {
    expect(decideProvision(o({ pvc: pvc({ "replicator.dev/provisioned": "20260101T000000Z-mysqldump-db-0" }) }))).toEqual({
      kind: "openGate",
      message: "volume data-db-2 was provisioned from 20260101T000000Z-mysqldump-db-0",
    });
    expect(decideProvision(o({ pvc: pvc({ "replicator.dev/provisioned": "x" }), gate: "True" })).kind).toBe("wait");
  });

  it("marks the master's volume without restoring anything", () => {
    expect(decideProvision(o({ isMaster: true }))).toEqual({ kind: "markMaster" });
  });

  it("asks for a seed, then starts a restore of it, or says why it cannot", () => {
    expect(decideProvision(o({}))).toEqual({ kind: "needSeed" });
    expect(decideProvision(o({ seed: { ok: true, backup: "b1", position: "0-1-5", kind: "logical" } }))).toEqual({ kind: "needTargetCheck" });
    expect(decideProvision(o({ seed: { ok: true, backup: "b1", position: "0-1-5", kind: "logical" }, target: { configured: false } }))).toEqual({ kind: "createRestore", backup: "b1", position: "0-1-5" });
    expect(decideProvision(o({ seed: { ok: false, reason: "BinlogsPurged", message: "purged" } }))).toMatchObject({ kind: "wait", reason: "BinlogsPurged", gate: "False" });
  });

  it("follows a running restore (after an operator restart too) and marks the volume once it replicates", () => {
    expect(decideProvision(o({ restore: { name: "r", status: { phase: "Running" } } }))).toMatchObject({ kind: "wait", reason: "Provisioning" });
    expect(decideProvision(o({ restore: { name: "r", status: { phase: "Completed", replicating: true, backupName: "b1", position: "0-1-5" } } }))).toEqual({
      kind: "markProvisioned",
      backup: "b1",
      message: "restored b1 at 0-1-5; replicating",
    });
    expect(decideProvision(o({ restore: { name: "r", status: { phase: "Failed", message: "boom" } } }))).toMatchObject({ kind: "retry", reason: "ProvisionFailed" });
    expect(decideProvision(o({ restore: { name: "r", status: { phase: "Completed", replicating: false } } }))).toMatchObject({ kind: "retry", reason: "NotReplicating" });
  });

  it("waits for the server and its volume", () => {
    expect(decideProvision(o({ podReady: false }))).toMatchObject({ kind: "wait", reason: "ServerNotReady" });
    expect(decideProvision(o({ pvc: undefined }))).toMatchObject({ kind: "wait", reason: "VolumeMissing" });
  });
});

describe("provisionSettings", () => {
  it("reads the annotations with defaults", () => {
    const sts = { metadata: { name: "db", annotations: { "replicator.dev/provision": "latest" } }, spec: { volumeClaimTemplates: [{ metadata: { name: "data" } }] } };
    expect(provisionSettings(sts)).toEqual({
      backup: "latest",
      repository: "default",
      cluster: "db",
      credentialsSecret: "db-credentials",
      replicationSecret: "db-replication",
      dataVolume: "data",
      port: 3306,
    });
    expect(provisionSettings({ metadata: { name: "db" } })).toBeUndefined();
    expect(provisionSettings({ metadata: { name: "db", annotations: { "replicator.dev/provision": "latest" } } })).toEqual({
      error: "StatefulSet db has no volumeClaimTemplates: a provisioned slave needs a data volume to mark",
    });
  });
});

describe("decideProvision with the provision init container (physical backups)", () => {
  const seed = (kind: "logical" | "physical") => ({ ok: true as const, backup: `b-${kind}`, position: "0-1-9", kind });
  const p = (x: Partial<ProvisionObserved>) => o({ takesPlan: true, podReady: false, ...x });

  it("decides before the server starts, since the init container blocks it", () => {
    expect(decideProvision(p({}))).toEqual({ kind: "needSeed" });
    expect(decideProvision(p({ seed: seed("physical") }))).toEqual({ kind: "setPlan", plan: { action: "restore", backup: "b-physical", position: "0-1-9" } });
    expect(decideProvision(p({ seed: seed("logical") }))).toMatchObject({ kind: "setPlan", plan: { action: "none" } });
    expect(decideProvision(p({ seed: { ok: false, reason: "NoBackup", message: "none" } }))).toMatchObject({ kind: "wait", reason: "NoBackup", gate: "False" });
  });

  it("never leaves an init container waiting: the master and marked volumes get a none plan", () => {
    expect(decideProvision(p({ isMaster: true }))).toEqual({ kind: "setPlan", plan: { action: "none", reason: "the master" }, then: "markMaster" });
    expect(decideProvision(p({ pvc: pvc({ "replicator.dev/provisioned": "b0" }) }))).toMatchObject({ kind: "setPlan", plan: { action: "none" } });
    expect(decideProvision(p({ pvc: pvc({ "replicator.dev/provisioned": "b0" }), plan: { action: "none" } })).kind).toBe("openGate");
  });

  it("follows the init container, then marks the volume only once the server replicates", () => {
    const plan = { action: "restore" as const, backup: "b-physical" };
    expect(decideProvision(p({ plan }))).toMatchObject({ kind: "wait", reason: "Provisioning" });
    expect(decideProvision(p({ plan, init: { ok: false, error: "boom" } }))).toMatchObject({
      kind: "wait",
      reason: "ProvisionFailed",
      message: "the provision init container failed: boom; it is retried and redoes the restore",
    });
    expect(decideProvision(p({ plan, init: { ok: true, action: "skipped" } }))).toMatchObject({ kind: "wait", reason: "VolumeNotEmpty" });
    expect(decideProvision(p({ plan, init: { ok: true, action: "restored" } }))).toMatchObject({ kind: "wait", reason: "ServerNotReady" });
    expect(decideProvision(p({ plan, init: { ok: true, action: "restored" }, podReady: true }))).toEqual({ kind: "needReplicationCheck" });
    expect(decideProvision(p({ plan, init: { ok: true, action: "restored" }, podReady: true, replicating: { ok: false, message: "IO thread: access denied" } }))).toMatchObject({
      kind: "wait",
      reason: "NotReplicating",
    });
    expect(decideProvision(p({ plan, init: { ok: true, action: "restored" }, podReady: true, replicating: { ok: true, message: "" } }))).toMatchObject({
      kind: "markProvisioned",
      backup: "b-physical",
    });
  });

  it("a logical plan falls through to the restore Job once the server runs", () => {
    expect(decideProvision(p({ plan: { action: "none" }, podReady: true, seed: seed("logical"), target: { configured: false } }))).toMatchObject({ kind: "createRestore", backup: "b-logical" });
  });

  it("never loads a backup into a server that already replicates: it says so, names the fix, and does not retry", () => {
    const plan = decideProvision(o({ seed: seed("logical"), target: { configured: true, master: "db-0.db:3306", io: true, sql: true } }));
    expect(plan).toMatchObject({ kind: "wait", reason: "AlreadyReplicating", gate: "False", requeueMs: 30_000 });
    const message = (plan as { message: string }).message;
    expect(message).toContain("the server is already a slave of db-0.db:3306 (IO thread running, SQL thread running)");
    expect(message).toContain("Remove CHANGE MASTER from the pod's init scripts");
    expect(message).toContain("kubectl annotate pvc data-db-2 replicator.dev/provisioned=manual");
    expect(decideProvision(o({ seed: seed("logical"), target: { error: "access denied" } }))).toMatchObject({ kind: "wait", reason: "ServerUnreachable" });
  });

  it("a restore that found data in the server waits for a human instead of retrying", () => {
    const failed = { phase: "Failed" as const, message: "target 10.0.0.7:3306 is not empty (app: 1 table)", conditions: [{ type: "Ready", status: "False" as const, reason: "TargetNotEmpty", message: "x", lastTransitionTime: "" }] };
    const plan = decideProvision(o({ restore: { name: "r", status: failed } }));
    expect(plan).toMatchObject({ kind: "wait", reason: "TargetNotEmpty", gate: "False" });
    expect((plan as { message: string }).message).toContain("Delete the pod and PVC data-db-2 to provision it afresh");
  });

  it("without the init container a physical backup is not restored into a running server", () => {
    expect(decideProvision(o({ seed: seed("physical") }))).toMatchObject({ kind: "wait", reason: "NeedsInitContainer" });
  });
});

describe("chooseSeed: the master's binlogs, or the binlog archive's bridge", () => {
  const purged = { ok: false, reason: "the master has purged binlogs the backup needs" };
  const bridge = { ok: true as const, binlogs: ["mysql-bin.000001", "mysql-bin.000002"], through: "0-1-30", where: "s3://b/p/c/binlogs/1" };
  const c = (backup: string, kind: SeedCandidate["kind"], x: Partial<SeedCandidate> = {}): SeedCandidate => ({ backup, position: "0-1-5", kind, serve: purged, ...x });

  it("takes the newest backup the master serves, as before", () => {
    expect(chooseSeed([c("b2", "logical", { serve: { ok: true } })])).toEqual({ ok: true, backup: "b2", position: "0-1-5", kind: "logical" });
  });

  it("seeds from a logical backup the master cannot serve when the archive bridges the gap, and the restore says so", () => {
    const seed = chooseSeed([c("b2", "logical", { bridge })]);
    expect(seed).toEqual({ ok: true, backup: "b2", position: "0-1-5", kind: "logical", bridge: { binlogs: bridge.binlogs, through: "0-1-30" } });
    expect(decideProvision(o({ seed, target: { configured: false } }))).toEqual({ kind: "createRestore", backup: "b2", position: "0-1-5", bridge: { binlogs: bridge.binlogs, through: "0-1-30" } });
  });

  it("bridges a physical backup too (the init container replays through a temporary server), and its plan is the ordinary physical restore", () => {
    const seed = chooseSeed([c("b3", "physical", { bridge }), c("b2", "logical", { bridge })]);
    expect(seed).toEqual({ ok: true, backup: "b3", position: "0-1-5", kind: "physical", bridge: { binlogs: bridge.binlogs, through: "0-1-30" } });
    expect(decideProvision(o({ seed, takesPlan: true, plan: undefined }))).toEqual({ kind: "setPlan", plan: { action: "restore", backup: "b3", position: "0-1-5" } });
  });

  it("never bridges a volume snapshot (no server to replay into): an older backup is taken, or it says why", () => {
    expect(chooseSeed([c("b3", "snapshot", { bridge }), c("b2", "logical", { bridge })])).toMatchObject({ ok: true, backup: "b2", bridge: { through: "0-1-30" } });
    const only = chooseSeed([c("b3", "snapshot", { bridge })]);
    expect(only).toMatchObject({ ok: false, reason: "BridgeNeedsServer" });
    expect(!only.ok && only.message).toContain("mysql-bin.000001, mysql-bin.000002");
  });

  it("BinlogsPurged, naming the missing range, only when neither the master nor the archive holds it", () => {
    const none = chooseSeed([c("b2", "logical", { bridge: { ok: false, message: "cannot seed a replica from b2 (GTID 0-1-5): ... the transactions after GTID 0-1-10 through GTID 0-1-20 are missing" } })]);
    expect(none).toMatchObject({ ok: false, reason: "BinlogsPurged" });
    expect(!none.ok && none.message).toContain("after GTID 0-1-10 through GTID 0-1-20");
    // A position the archive cannot help with (no GTID): the master's own reason.
    expect(chooseSeed([c("b2", "logical")])).toEqual({ ok: false, reason: "BinlogsPurged", message: "no stored backup can seed a slave: the newest, b2: the master has purged binlogs the backup needs" });
  });
});
