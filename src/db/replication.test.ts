import { describe, expect, it } from "vitest";
import { binlogIndex, decideGtidServable, oldestBinlogStart, parseMariaGtid } from "./replication.js";

describe("parseMariaGtid", () => {
  it("parses multi-domain positions", () => {
    const m = parseMariaGtid("0-1-100, 1-2-7");
    expect(m.get(0)).toEqual({ server: 1, seq: 100n });
    expect(m.get(1)).toEqual({ server: 2, seq: 7n });
    expect(parseMariaGtid("").size).toBe(0);
    expect(() => parseMariaGtid("abc")).toThrow('invalid MariaDB GTID "abc"');
  });
});

describe("decideGtidServable", () => {
  it("accepts a backup at or after the start of the oldest binlog", () => {
    expect(decideGtidServable("0-1-100", "0-1-100", "0-1-150").ok).toBe(true);
    expect(decideGtidServable("0-1-120", "0-1-100", "0-1-150").ok).toBe(true);
    expect(decideGtidServable("0-1-5", "", "0-1-150").ok).toBe(true);
  });

  it("refuses a backup older than every binlog the master still has", () => {
    const r = decideGtidServable("0-1-99", "0-1-100", "0-1-150");
    expect(r.ok).toBe(false);
    expect(r.reason).toContain("the master has purged binlogs the backup needs (domain 0: backup at 99, oldest binlog starts after 100)");
  });

  it("refuses a backup that lacks a domain the master has purged", () => {
    expect(decideGtidServable("0-1-120", "0-1-100,1-5-3", "0-1-150,1-5-9").ok).toBe(false);
  });

  it("refuses a backup ahead of the master (the wrong master)", () => {
    const r = decideGtidServable("0-1-200", "0-1-100", "0-1-150");
    expect(r.ok).toBe(false);
    expect(r.reason).toContain("is ahead of the master's binlog");
  });
});

describe("binlogIndex", () => {
  it("orders binlog files by number", () => {
    expect(binlogIndex("mysql-bin.000010")).toBeGreaterThan(binlogIndex("mysql-bin.000009"));
    expect(binlogIndex("nonsense")).toBe(-1);
  });
});

describe("oldestBinlogStart", () => {
  it("a promoted server seeded from a backup: its first binlog's empty GTID_LIST begins before its first GTID, not at nothing", () => {
    expect(oldestBinlogStart("", ["0-31-57", "0-31-58"])).toBe("0-31-56");
    // So a backup before it counts as purged.
    expect(decideGtidServable("0-31-44", oldestBinlogStart("", ["0-31-57"]), "0-32-80").ok).toBe(false);
    expect(decideGtidServable("0-31-56", oldestBinlogStart("", ["0-31-57"]), "0-32-80").ok).toBe(true);
  });

  it("keeps the GTID_LIST where it has the domain, and a fresh server's first GTID adds nothing", () => {
    expect(oldestBinlogStart("0-1-40", ["0-1-41"])).toBe("0-1-40");
    expect(oldestBinlogStart("", ["0-1-1"])).toBe("");
    expect(oldestBinlogStart("0-1-40", ["1-2-9"])).toBe("0-1-40,1-2-8");
  });
});
