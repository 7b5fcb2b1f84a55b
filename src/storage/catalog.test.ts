import { describe, expect, it } from "vitest";
import {
  buildBackupName,
  formatStamp,
  parseBackupName,
  parseManifest,
  parseTime,
  planRetention,
  scanListing,
  selectBackup,
} from "./catalog.js";

const at = (iso: string): Date => new Date(iso);

describe("backup names", () => {
  it("encode the UTC time, the method and the source, and sort in time order", () => {
    const names = [
      buildBackupName(at("2026-11-24T10:00:05.900Z"), "mysqldump", "db-0.db.prod.svc"),
      buildBackupName(at("2025-01-02T03:04:05Z"), "mariabackup", "DB_1"),
      buildBackupName(at("2026-02-01T00:00:00Z"), "volume snapshot", "db-0"),
    ];
    expect(names).toEqual([
      "20261124T100005Z-mysqldump-db-0.db.prod.svc",
      "20250102T030405Z-mariabackup-db-1",
      "20260201T000000Z-volume_snapshot-db-0",
    ]);
    expect([...names].sort()).toEqual([names[1], names[2], names[0]]);
    expect(parseBackupName(names[2]!)).toEqual({
      name: names[2],
      time: at("2026-02-01T00:00:00Z"),
      method: "volume_snapshot",
      source: "db-0",
    });
  });

  it("reject what is not a backup name", () => {
    for (const bad of ["latest", "2026-11-24-mysqldump-x", "20261124T100005Z", "20261124T100005Z-mysqldump-", "../x"]) {
      expect(parseBackupName(bad)).toBeUndefined();
    }
  });

  it("format stamps without milliseconds", () => {
    expect(formatStamp(at("2026-11-24T23:59:59.999Z"))).toBe("20261124T235959Z");
  });
});

describe("parseTime", () => {
  it("accepts ISO 8601 and backup stamps, and names the format on bad input", () => {
    expect(parseTime("2026-11-24T10:00:00Z")).toEqual(at("2026-11-24T10:00:00Z"));
    expect(parseTime("20261124T100000Z")).toEqual(at("2026-11-24T10:00:00Z"));
    expect(() => parseTime("yesterday")).toThrow(/invalid time "yesterday"; use ISO 8601/);
  });
});

describe("selectBackup", () => {
  const backups = ["20260101T000000Z-mysqldump-a", "20260102T000000Z-mysqldump-a", "20260103T000000Z-mysqldump-a"].map((name) => ({
    name,
    time: parseBackupName(name)!.time,
  }));

  it("takes the latest by default", () => {
    expect(selectBackup(backups, { kind: "latest" }, "repo").name).toBe("20260103T000000Z-mysqldump-a");
  });

  it("takes a named one, or says how many exist", () => {
    expect(selectBackup(backups, { kind: "name", name: "20260101T000000Z-mysqldump-a" }, "repo").name).toBe("20260101T000000Z-mysqldump-a");
    expect(() => selectBackup(backups, { kind: "name", name: "20250101T000000Z-mysqldump-a" }, "repo")).toThrow(
      "backup 20250101T000000Z-mysqldump-a not found (or incomplete) in repo; `replicator list` shows the 3 that exist",
    );
  });

  it("takes the newest at or before a time", () => {
    expect(selectBackup(backups, { kind: "before", time: at("2026-01-02T12:00:00Z") }, "repo").name).toBe("20260102T000000Z-mysqldump-a");
    expect(selectBackup(backups, { kind: "before", time: at("2026-01-02T00:00:00Z") }, "repo").name).toBe("20260102T000000Z-mysqldump-a");
    expect(() => selectBackup(backups, { kind: "before", time: at("2025-12-31T00:00:00Z") }, "repo")).toThrow(/the oldest is 20260101T000000Z/);
  });

  it("says to take a backup when there is none", () => {
    expect(() => selectBackup([], { kind: "latest" }, "s3://b/p/demo")).toThrow("no complete backup in s3://b/p/demo; run `replicator backup` first");
  });
});

describe("scanListing", () => {
  it("separates complete backups, incomplete ones and leases", () => {
    const o = (key: string) => ({ key, size: 1, lastModified: undefined });
    const scan = scanListing([
      o("20260101T000000Z-mysqldump-a/data.sql.zst"),
      o("20260101T000000Z-mysqldump-a/manifest.json"),
      o("20260101T000000Z-mysqldump-a/in-use/x.json"),
      o("20260102T000000Z-mysqldump-a/data.sql.zst"),
      o("20260103T000000Z-mysqldump-a/in-use/y.json"),
      o("notes.txt"),
      o("random-dir/file"),
    ]);
    expect(scan.complete).toEqual(["20260101T000000Z-mysqldump-a"]);
    expect(scan.incomplete.map((i) => i.name)).toEqual(["20260102T000000Z-mysqldump-a"]);
    expect([...scan.leasesByBackup.keys()]).toEqual(["20260101T000000Z-mysqldump-a", "20260103T000000Z-mysqldump-a"]);
  });
});

describe("planRetention", () => {
  const complete = ["20260101T000000Z-m-a", "20260102T000000Z-m-a", "20260103T000000Z-m-a", "20260104T000000Z-m-a"].map((name) => ({
    name,
    time: parseBackupName(name)!.time,
  }));
  const now = at("2026-01-05T00:00:00Z");

  it("keeps the newest N and expires the oldest", () => {
    const plan = planRetention({ complete, incomplete: [], inUse: new Set(), retain: 2, now, incompleteGraceMs: 0 });
    expect(plan.expire).toEqual(["20260101T000000Z-m-a", "20260102T000000Z-m-a"]);
  });

  it("never deletes a backup a restore is using", () => {
    const plan = planRetention({ complete, incomplete: [], inUse: new Set(["20260101T000000Z-m-a"]), retain: 1, now, incompleteGraceMs: 0 });
    expect(plan.expire).toEqual(["20260102T000000Z-m-a", "20260103T000000Z-m-a"]);
    expect(plan.keptInUse).toEqual(["20260101T000000Z-m-a"]);
  });

  it("never deletes the only backup, and refuses retain < 1", () => {
    expect(planRetention({ complete: complete.slice(0, 1), incomplete: [], inUse: new Set(), retain: 1, now, incompleteGraceMs: 0 }).expire).toEqual([]);
    expect(() => planRetention({ complete, incomplete: [], inUse: new Set(), retain: 0, now, incompleteGraceMs: 0 })).toThrow(
      /retain must be a whole number >= 1/,
    );
  });

  it("removes incomplete backups only after the grace period", () => {
    const incomplete = [
      { name: "20260104T230000Z-m-a", time: at("2026-01-04T23:00:00Z") },
      { name: "20260104T000000Z-m-a", time: at("2026-01-04T00:00:00Z") },
    ];
    const plan = planRetention({ complete, incomplete, inUse: new Set(), retain: 10, now, incompleteGraceMs: 6 * 3600_000 });
    expect(plan.abandon).toEqual(["20260104T000000Z-m-a"]);
    expect(plan.expire).toEqual([]);
  });
});

describe("parseManifest", () => {
  it("names the field that is wrong", () => {
    expect(() => parseManifest("{", "x/manifest.json")).toThrow("manifest x/manifest.json is not valid JSON; the backup is corrupt");
    expect(() => parseManifest(JSON.stringify({ formatVersion: 1 }), "x/manifest.json")).toThrow(/manifest x\/manifest.json is invalid at name:/);
  });
});
