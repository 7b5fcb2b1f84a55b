import { describe, expect, it } from "vitest";
import {
  buildBackupName,
  computePartSize,
  defaultSourceName,
  formatStamp,
  MAX_PARTS,
  MIB,
  parseBackupName,
  parseManifest,
  parseTime,
  planRetention,
  scanListing,
  selectBackup,
  validateSourceName,
} from "./catalog.js";

const at = (iso: string): Date => new Date(iso);

describe("backup names", () => {
  it("encode the UTC time, the method and the source, and sort in time order", () => {
    const names = [
      buildBackupName(at("2026-11-24T10:00:05.900Z"), "mysqldump", "db-0.db.prod.svc"),
      buildBackupName(at("2025-01-02T03:04:05Z"), "mariabackup", "db-1"),
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

  it("refuse a source name they cannot hold instead of mangling it", () => {
    expect(() => buildBackupName(at("2026-01-01T00:00:00Z"), "mysqldump", "dé-ü_数据库")).toThrow(
      /source name "dé-ü_数据库" holds "é", "ü", "_", "数", "据", "库"; use lowercase letters, digits, "." and "-", at most 63 characters/,
    );
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

  it("never abandons a backup that is still running: its heartbeat is recent, however old its name", () => {
    const scan = scanListing([
      { key: "20260104T000000Z-m-a/claim.json", size: 10, lastModified: at("2026-01-04T00:00:00Z") },
      { key: "20260104T000000Z-m-a/running.json", size: 10, lastModified: at("2026-01-04T23:50:00Z") },
      { key: "20260103T000000Z-m-a/claim.json", size: 10, lastModified: at("2026-01-03T00:00:00Z") },
    ]);
    expect(scan.incomplete.map((i) => [i.name, i.lastActivity.toISOString()])).toEqual([
      ["20260103T000000Z-m-a", "2026-01-03T00:00:00.000Z"],
      ["20260104T000000Z-m-a", "2026-01-04T23:50:00.000Z"],
    ]);
    const plan = planRetention({ complete, incomplete: scan.incomplete, inUse: new Set(), retain: 10, now, incompleteGraceMs: 6 * 3600_000 });
    expect(plan.abandon).toEqual(["20260103T000000Z-m-a"]);
  });
});

describe("parseManifest", () => {
  it("names the field that is wrong", () => {
    expect(() => parseManifest("{", "x/manifest.json")).toThrow("manifest x/manifest.json is not valid JSON; the backup is corrupt");
    expect(() => parseManifest(JSON.stringify({ formatVersion: 1 }), "x/manifest.json")).toThrow(/manifest x\/manifest.json is invalid at name:/);
  });
});

describe("source names", () => {
  it("validateSourceName accepts DNS-like names and refuses the rest with the rule", () => {
    for (const ok of ["a", "db-0", "127.0.0.1-3306", "db-0.db.prod.svc", "x".repeat(63)]) expect(validateSourceName(ok)).toBe(ok);
    expect(() => validateSourceName("DB_1")).toThrow(/holds "D", "B", "_"/);
    expect(() => validateSourceName("")).toThrow(/empty source name/);
    expect(() => validateSourceName("-db")).toThrow(/must start and end with a letter or digit/);
    expect(() => validateSourceName("db.")).toThrow(/must start and end with a letter or digit/);
    expect(() => validateSourceName("x".repeat(64))).toThrow(/is 64 characters long/);
    try {
      validateSourceName("dé");
    } catch (err) {
      expect(err).toMatchObject({ kind: "BadInput", reason: "InvalidSourceName" });
    }
    // A message never carries an unbounded list.
    const many = String.fromCodePoint(...Array.from({ length: 40 }, (_, i) => 0x4e00 + i));
    expect(() => validateSourceName(many)).toThrow(/and 30 more; use/);
  });

  it("defaultSourceName keeps the port so two servers on one host differ", () => {
    expect(defaultSourceName("127.0.0.1", 3306)).toBe("127.0.0.1-3306");
    expect(defaultSourceName("127.0.0.1", 3307)).toBe("127.0.0.1-3307");
    expect(defaultSourceName("DB-0.db", 3306)).toBe("db-0.db-3306");
    expect(defaultSourceName("[::1]", 3306)).toBe("1-3306");
    expect(defaultSourceName("fe80::1", 3306)).toBe("fe80--1-3306");
    expect(defaultSourceName("db_primary", 5432)).toBe("db-primary-5432");
    const long = defaultSourceName(`${"a".repeat(60)}.example`, 3306);
    expect(long.length).toBeLessThanOrEqual(63);
    expect(long.endsWith("-3306")).toBe(true);
    expect(validateSourceName(long)).toBe(long);
    expect(defaultSourceName("数据库", 3306)).toBe("host-3306");
  });

  it("parseBackupName still reads names written before", () => {
    expect(parseBackupName("20250102T030405Z-mariabackup-db-1")?.source).toBe("db-1");
    expect(parseBackupName("20250102T030405Z-mysqldump-127.0.0.1")?.source).toBe("127.0.0.1");
  });
});

describe("computePartSize", () => {
  it("is 16 MiB without a hint or for small objects", () => {
    expect(computePartSize(undefined)).toBe(16 * MIB);
    expect(computePartSize(0)).toBe(16 * MIB);
    expect(computePartSize(100 * MIB)).toBe(16 * MIB);
  });

  it("grows with the hint so 1.5x the hint fits in 10,000 parts, rounded up to MiB", () => {
    const oneTiB = 1024 * 1024 * MIB;
    const p = computePartSize(oneTiB);
    expect(p % MIB).toBe(0);
    expect(p * MAX_PARTS).toBeGreaterThanOrEqual(oneTiB * 1.5);
    expect(p).toBe(Math.ceil((oneTiB * 1.5) / MAX_PARTS / MIB) * MIB);
    const fiveTiB = 5 * oneTiB;
    expect(computePartSize(fiveTiB) * MAX_PARTS).toBeGreaterThanOrEqual(fiveTiB);
    // Just over the 16 MiB threshold (~104 GiB hint).
    expect(computePartSize(110 * 1024 * MIB)).toBe(17 * MIB);
  });
});

describe("manifest formats and unusable backups", () => {
  it("a newer formatVersion is UnknownFormat, not corrupt", () => {
    expect(() => parseManifest(JSON.stringify({ formatVersion: 2, name: "x" }), "x/manifest.json")).toThrow(
      /format version 2, newer than this replicator's 1: written by a newer replicator; upgrade/,
    );
    try {
      parseManifest(JSON.stringify({ formatVersion: 99 }), "m");
    } catch (err) {
      expect(err).toMatchObject({ reason: "UnknownFormat" });
    }
    try {
      parseManifest("{not json", "m");
    } catch (err) {
      expect(err).toMatchObject({ reason: "CorruptManifest" });
    }
  });

  it("retention neither counts nor deletes an unusable backup", () => {
    const good = ["20260101T000000Z-m-a", "20260102T000000Z-m-a"].map((name) => ({ name, time: parseBackupName(name)!.time }));
    const unusable = [{ name: "20260103T000000Z-m-a", reason: "CorruptManifest" as const, error: "bad" }];
    const plan = planRetention({ complete: good, unusable, incomplete: [], inUse: new Set(), retain: 1, now: at("2026-01-05T00:00:00Z"), incompleteGraceMs: 0 });
    expect(plan.expire).toEqual(["20260101T000000Z-m-a"]);
    expect(plan.unusable.map((u) => u.name)).toEqual(["20260103T000000Z-m-a"]);
    const only = planRetention({ complete: good.slice(1), unusable, incomplete: [], inUse: new Set(), retain: 1, now: at("2026-01-05T00:00:00Z"), incompleteGraceMs: 0 });
    expect(only.expire).toEqual([]);
  });

  it("scanListing hides backups being deleted and keeps claims in incomplete ones", () => {
    const o = (key: string) => ({ key, size: 1, lastModified: at("2026-01-01T00:00:00Z") });
    const scan = scanListing([
      o("20260101T000000Z-m-a/manifest.json"),
      o("20260101T000000Z-m-a/deleting.json"),
      o("20260102T000000Z-m-a/claim.json"),
      o("20260103T000000Z-m-a/claim.json"),
      o("20260103T000000Z-m-a/manifest.json"),
    ]);
    expect(scan.complete).toEqual(["20260103T000000Z-m-a"]);
    expect(scan.incomplete.map((i) => [i.name, i.keys])).toEqual([["20260102T000000Z-m-a", ["20260102T000000Z-m-a/claim.json"]]]);
    expect([...scan.deleting.keys()]).toEqual(["20260101T000000Z-m-a"]);
  });
});
