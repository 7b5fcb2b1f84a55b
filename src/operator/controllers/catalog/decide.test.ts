import { describe, expect, it } from "vitest";
import { decideCatalogSync, faultReason, syncMessage, type MirrorResource } from "./decide.js";

const now = new Date("2026-11-29T12:00:00Z");
const old = "2026-11-29T10:00:00Z";
const res = (name: string, backupName: string, phase = "Completed", unusableReason?: string): MirrorResource => ({ name, cluster: "demo", backupName, phase, unusableReason });

describe("decideCatalogSync", () => {
  it("a listing fault creates and deletes nothing, and says why", () => {
    const plan = decideCatalogSync({ ok: false, reason: "StorageUnreachable", message: "GET manifest.json: connect ECONNREFUSED" }, [res("a", "b1")], now, 30_000);
    expect(plan).toEqual({ kind: "fault", reason: "StorageUnreachable", message: "GET manifest.json: connect ECONNREFUSED" });
  });

  it("a corrupt or future-format backup keeps its resource, flagged", () => {
    const plan = decideCatalogSync(
      {
        ok: true,
        clusters: [
          {
            cluster: "demo",
            backups: [{ name: "b2", finishedAt: old }],
            corrupt: [
              { name: "b1", reason: "CorruptManifest", error: "manifest.json: Unexpected token" },
              { name: "b3", reason: "UnknownFormat", error: "formatVersion 9" },
            ],
          },
        ],
      },
      [res("r1", "b1"), res("r2", "b2"), res("r3", "b3")],
      now,
      30_000,
    );
    if (plan.kind !== "sync") throw new Error(plan.kind);
    expect(plan.delete).toEqual([]);
    expect(plan.create).toEqual([]);
    expect(plan.unusable.map((u) => [u.backup, u.reason, u.resource])).toEqual([
      ["b1", "CorruptManifest", "r1"],
      ["b3", "UnknownFormat", "r3"],
    ]);
    expect(syncMessage(plan)).toBe("1 backup(s) in storage; 2 unusable: demo/b1 (CorruptManifest), demo/b3 (UnknownFormat)");
  });

  it("only a backup absent from a complete listing loses its Completed resource", () => {
    const plan = decideCatalogSync(
      { ok: true, clusters: [{ cluster: "demo", backups: [{ name: "b2", finishedAt: old }], corrupt: [] }] },
      [res("r1", "b1"), res("r2", "b2"), res("r3", "b3", "Running"), { ...res("other", "b9"), cluster: "other" }],
      now,
      30_000,
    );
    if (plan.kind !== "sync") throw new Error(plan.kind);
    expect(plan.delete).toEqual([{ resource: "r1", cluster: "demo", backup: "b1" }]);
    expect(plan.total).toBe(1);
  });

  it("mirrors old enough backups without a resource, and clears a flag once a backup reads well", () => {
    const plan = decideCatalogSync(
      {
        ok: true,
        clusters: [
          {
            cluster: "demo",
            backups: [
              { name: "b1", finishedAt: old },
              { name: "b2", finishedAt: old },
              { name: "fresh", finishedAt: "2026-11-29T11:59:50Z" },
            ],
            corrupt: [],
          },
        ],
      },
      [res("r1", "b1", "Completed", "CorruptManifest")],
      now,
      30_000,
    );
    if (plan.kind !== "sync") throw new Error(plan.kind);
    expect(plan.create).toEqual([{ cluster: "demo", backup: "b2" }]);
    expect(plan.usableAgain).toEqual(["r1"]);
  });

  it("a corrupt entry without a reason (an older storage layer) is still kept", () => {
    const plan = decideCatalogSync({ ok: true, clusters: [{ cluster: "demo", backups: [], corrupt: [{ name: "b1", error: "x" }] }] }, [res("r1", "b1")], now, 0);
    if (plan.kind !== "sync") throw new Error(plan.kind);
    expect(plan.delete).toEqual([]);
    expect(plan.unusable[0]?.reason).toBe("CorruptManifest");
  });
});

describe("faultReason", () => {
  it("keeps the storage layer's reason, anything else is a StorageError", () => {
    expect(faultReason({ reason: "StorageUnreachable" })).toBe("StorageUnreachable");
    expect(faultReason({ reason: "StorageError" })).toBe("StorageError");
    expect(faultReason(new Error("boom"))).toBe("StorageError");
    expect(faultReason({ reason: "BackupNotFound" })).toBe("StorageError");
  });
});
