import { describe, expect, it } from "vitest";
import { decideSeeded, decideSpare, gtidBehind, maxGtid, seedPosition, type SpareObserved } from "./decide.js";
import { buildPvcFromSnapshot, buildVolumeSnapshot, largerQuantity, quantityBytes, seedPositionOf, snapshotState, volumeSnapshotName } from "./volumesnapshot.js";
import { snapshotOptions } from "./controller.js";
import { backupSpecSchema } from "../../../api/v1alpha1.js";

describe("GTID positions of a clone", () => {
  it("takes the per-domain maximum and ignores empty positions", () => {
    expect(maxGtid("0-1-10,1-2-5", "", undefined, "0-1-12", "2-3-1")).toBe("0-1-12,1-2-5,2-3-1");
    expect(maxGtid("")).toBe("");
  });

  it("says in which domains a position is behind another", () => {
    expect(gtidBehind("0-1-10", "0-1-10")).toEqual([]);
    expect(gtidBehind("0-1-9,1-1-3", "0-1-10,1-1-3,2-1-1")).toEqual(["domain 0: 9 < 10", "domain 2: none < 1"]);
  });

  it("a master's clone resumes at its binlog position, which is the recorded one", () => {
    const r = seedPosition({ role: "master", gtid: "0-1-42", file: "mysql-bin.000002", position: 900 }, { gtidBinlogPos: "0-1-42", gtidSlavePos: "" });
    expect(r).toEqual({ ok: true, position: { role: "master", gtid: "0-1-42", file: "mysql-bin.000002", position: 900 }, resumed: false });
  });

  it("a clone that already replicated further (an operator restarted before the marker) resumes where it is, never twice", () => {
    const r = seedPosition({ role: "master", gtid: "0-1-42" }, { gtidBinlogPos: "0-1-42", gtidSlavePos: "0-1-57" });
    expect(r).toMatchObject({ ok: true, position: { gtid: "0-1-57" }, resumed: true });
  });

  it("a slave's clone: its gtid_slave_pos is consistent with its data", () => {
    const r = seedPosition({ role: "slave", gtid: "0-1-30" }, { gtidBinlogPos: "0-1-30,0-2-3", gtidSlavePos: "0-1-30" });
    expect(r).toMatchObject({ ok: true, position: { gtid: "0-1-30" } });
  });

  it("refuses a volume that is behind the recorded position", () => {
    const r = seedPosition({ role: "master", gtid: "0-1-42" }, { gtidBinlogPos: "0-1-40", gtidSlavePos: "" });
    expect(r.ok).toBe(false);
    expect(!r.ok && r.message).toContain("behind the position its snapshot recorded (domain 0: 40 < 42)");
  });

  it("without GTIDs, the recorded coordinates; without any position, no seed", () => {
    expect(seedPosition({ role: "master", file: "b.000001", position: 4 }, { gtidBinlogPos: "", gtidSlavePos: "" })).toMatchObject({ ok: true, position: { file: "b.000001" } });
    expect(seedPosition({ role: "master" }, { gtidBinlogPos: "", gtidSlavePos: "" }).ok).toBe(false);
  });
});

describe("the spare volume", () => {
  const base: SpareObserved = {
    replicas: 2,
    claimName: "data-db-2",
    pvc: undefined,
    podExists: false,
    candidate: { backup: "20260101T000000Z-volumesnapshot-db-0" },
    seededFromAnnotation: "replicator.dev/seeded-from",
    provisionedAnnotation: "replicator.dev/provisioned",
  };

  it("is created for the next ordinal from the newest usable snapshot", () => {
    expect(decideSpare(base)).toEqual({ kind: "create", backup: "20260101T000000Z-volumesnapshot-db-0" });
  });

  it("not for ordinal 0, not without a snapshot, not when the pod exists already", () => {
    expect(decideSpare({ ...base, replicas: 0 }).kind).toBe("none");
    expect(decideSpare({ ...base, candidate: undefined }).kind).toBe("none");
    expect(decideSpare({ ...base, podExists: true }).kind).toBe("none");
  });

  it("never touches a claim that holds data or was not made from a snapshot", () => {
    expect(decideSpare({ ...base, pvc: { annotations: { "replicator.dev/provisioned": "x" }, deleting: false } }).kind).toBe("none");
    expect(decideSpare({ ...base, pvc: { annotations: {}, deleting: false } }).kind).toBe("none");
  });

  it("an unused spare from an older snapshot is stale (the operator deletes no volume)", () => {
    const pvc = { annotations: { "replicator.dev/seeded-from": "20251201T000000Z-volumesnapshot-db-0" }, deleting: false };
    expect(decideSpare({ ...base, pvc })).toEqual({ kind: "stale", from: "20251201T000000Z-volumesnapshot-db-0", to: "20260101T000000Z-volumesnapshot-db-0" });
    expect(decideSpare({ ...base, pvc: { ...pvc, annotations: { "replicator.dev/seeded-from": base.candidate?.backup ?? "" } } }).kind).toBe("none");
  });
});

describe("a pod on a cloned volume", () => {
  const o = { claimName: "data-db-1", backup: "B", recorded: { role: "master" as const, gtid: "0-1-5" }, podReady: true };

  it("waits for its server, configures it, then marks it", () => {
    expect(decideSeeded({ ...o, podReady: false })).toMatchObject({ kind: "wait", reason: "Provisioning" });
    expect(decideSeeded(o)).toEqual({ kind: "configure" });
    expect(decideSeeded({ ...o, configured: { ok: true, position: "0-1-5", resumed: false } })).toMatchObject({ kind: "markProvisioned" });
    expect(decideSeeded({ ...o, configured: { ok: false, message: "no" } })).toEqual({ kind: "retry", reason: "ProvisionFailed", message: "no" });
  });

  it("a clone without a recorded position cannot be seeded", () => {
    expect(decideSeeded({ ...o, recorded: undefined }).kind).toBe("retry");
  });
});

describe("VolumeSnapshot objects", () => {
  it("are named after the backup, lower-cased (a DNS name that sorts and states the method)", () => {
    expect(volumeSnapshotName("20261124T101112Z-volumesnapshot-db-0")).toBe("20261124t101112z-volumesnapshot-db-0");
    const vs = buildVolumeSnapshot({ namespace: "ns", backupName: "20261124T101112Z-volumesnapshot-db-0", cluster: "db", claimName: "data-db-0", className: "csi", sourcePod: "db-0" });
    expect(vs.metadata.annotations?.["replicator.dev/backup"]).toBe("20261124T101112Z-volumesnapshot-db-0");
    expect(vs.spec).toEqual({ source: { persistentVolumeClaimName: "data-db-0" }, volumeSnapshotClassName: "csi" });
    expect(vs.metadata).not.toHaveProperty("ownerReferences");
  });

  it("are cut at status.creationTime and usable at readyToUse", () => {
    const vs = buildVolumeSnapshot({ namespace: "ns", backupName: "B", cluster: "db", claimName: "c", sourcePod: "p" });
    expect(snapshotState(vs)).toEqual({ state: "pending", error: undefined });
    expect(snapshotState({ ...vs, status: { error: { message: "boom" } } })).toEqual({ state: "pending", error: "boom" });
    expect(snapshotState({ ...vs, status: { creationTime: "t", readyToUse: false } })).toEqual({ state: "cut", creationTime: "t" });
    expect(snapshotState({ ...vs, status: { creationTime: "t", readyToUse: true, restoreSize: "10Gi", boundVolumeSnapshotContentName: "c1" } })).toEqual({
      state: "ready",
      creationTime: "t",
      restoreSize: "10Gi",
      content: "c1",
    });
  });

  it("a PVC from a snapshot: the template's shape, never smaller than restoreSize, with the seed annotations", () => {
    const pvc = buildPvcFromSnapshot({
      namespace: "ns",
      name: "data-db-2",
      template: { accessModes: ["ReadWriteOnce"], storageClassName: "fast", size: "1Gi", labels: { app: "db" } },
      snapshot: "s",
      backupName: "B",
      position: { role: "master", gtid: "0-1-5" },
      restoreSize: "2Gi",
    });
    expect(pvc.spec).toEqual({
      accessModes: ["ReadWriteOnce"],
      storageClassName: "fast",
      resources: { requests: { storage: "2Gi" } },
      dataSource: { apiGroup: "snapshot.storage.k8s.io", kind: "VolumeSnapshot", name: "s" },
    });
    expect(pvc.metadata.labels).toEqual({ app: "db" });
    expect(seedPositionOf(pvc.metadata.annotations)).toEqual({ role: "master", gtid: "0-1-5" });
    expect(seedPositionOf({ "replicator.dev/seed-position": "{bad" })).toBeUndefined();
  });

  it("reads quantities", () => {
    expect(quantityBytes("10Gi")).toBe(10 * 2 ** 30);
    expect(quantityBytes("500M")).toBe(5e8);
    expect(quantityBytes("123")).toBe(123);
    expect(quantityBytes("x")).toBeUndefined();
    expect(largerQuantity("10Gi", "123456")).toBe("10Gi");
    expect(largerQuantity("1Gi", "2G")).toBe("2G");
    expect(largerQuantity(undefined, "5Gi")).toBe("5Gi");
  });
});

describe("method options", () => {
  const spec = (options: Record<string, string>) => backupSpecSchema.parse({ method: "volumesnapshot", source: { pod: "db-0", credentialsSecret: { name: "c" } }, options });

  it("default to a 60 s watchdog and a 10 min wait for readyToUse", () => {
    expect(snapshotOptions(spec({}))).toEqual({ lockTimeoutS: 60, readyTimeoutS: 600, className: undefined });
    expect(snapshotOptions(spec({ lockTimeoutSeconds: "5", volumeSnapshotClassName: "csi" }))).toEqual({ lockTimeoutS: 5, readyTimeoutS: 600, className: "csi" });
  });

  it("refuse a timeout that is not a whole number of seconds", () => {
    expect(snapshotOptions(spec({ lockTimeoutSeconds: "0" }))).toEqual({ error: 'spec.options.lockTimeoutSeconds: must be a whole number of seconds >= 1 (got "0")' });
  });
});
