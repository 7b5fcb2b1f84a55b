import { describe, expect, it } from "vitest";
import { comparePosition, countChecks, diffChecksums, formatCheck } from "./kit.js";

describe("comparePosition", () => {
  const source = { gtid: "0-1-25", file: "mysql-bin.000001", position: 4490705 };

  it("passes a position equal to the source's", () => {
    const r = comparePosition({ role: "master", gtid: "0-1-25", file: "mysql-bin.000001", position: 4490705 }, "master", source);
    expect(r.ok).toBe(true);
    expect(comparePosition({ role: "master", gtid: "1-2-3,0-1-25" }, "master", { gtid: "0-1-25,1-2-3" }).ok).toBe(true);
    expect(comparePosition({ role: "master", file: "mysql-bin.000001", position: 4490705 }, "master", source).message).toMatch(/no gtid reported/);
  });

  it("says what differs and how to fix it", () => {
    expect(comparePosition({ role: "master", gtid: "0-1-24" }, "master", source).message).toBe(
      "the backup reported gtid 0-1-24 but the source was at 0-1-25 (nothing was written during the backup, so they must be equal); take it at the dump's consistent point (under the dump's lock or snapshot) and write it to replication in the result file",
    );
    expect(comparePosition({ role: "master", file: "mysql-bin.000001", position: 4 }, "master", source).message).toMatch(/reported mysql-bin.000001:4 but the source was at mysql-bin.000001:4490705/);
    expect(comparePosition(undefined, "master", source).message).toMatch(/^the backup reported no replication position, but the source is a master at gtid 0-1-25, mysql-bin.000001:4490705/);
    expect(comparePosition({ role: "slave", gtid: "0-1-25" }, "slave", source).message).toMatch(/report role "master"/);
  });
});

describe("diffChecksums", () => {
  it("names missing, differing and extra objects", () => {
    expect(diffChecksums({ "table a.t": "1", "table a.u": "2", "view a.v": "x" }, { "table a.t": "1", "table a.u": "3", "table a.w": "4" })).toEqual([
      "table a.u differs",
      "view a.v is missing",
      "table a.w is extra",
    ]);
    expect(diffChecksums({ "table a.t": "1" }, { "table a.t": "1" })).toEqual([]);
  });
});

describe("report lines", () => {
  it("print one line per check and count them", () => {
    const checks = [
      { id: "info" as const, title: "", status: "PASS" as const, message: "ok", durationMs: 1 },
      { id: "backup" as const, title: "", status: "FAIL" as const, message: "bad", durationMs: 1 },
      { id: "position" as const, title: "", status: "SKIP" as const, message: "skipped", durationMs: 0 },
    ];
    expect(checks.map(formatCheck)).toEqual(["PASS info            ok", "FAIL backup          bad", "SKIP position        skipped"]);
    expect(countChecks(checks)).toEqual({ passed: 1, failed: 1, skipped: 1 });
  });
});
