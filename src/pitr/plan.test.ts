import { describe, expect, it } from "vitest";
import type { BackupEntry, Manifest } from "../storage/catalog.js";
import { continuityProblem, decideStart } from "./archiver.js";
import type { BinlogScan } from "./binlog-file.js";
import { parseGtid, parseGtidState } from "./gtid.js";
import type { BinlogIndex } from "./layout.js";
import { buildChain, findStartFile, findStopFile, selectBackupBefore } from "./plan.js";

function idx(file: string, start: string, end: string, first: string, last: string, complete = true): BinlogIndex {
  return {
    formatVersion: 1, serverId: 1, file, object: complete ? file : `${file}.partial`, complete, size: 100, sha256: "0".repeat(64),
    startState: start, endState: end, gtidCount: 1, firstEventTime: first, lastEventTime: last, archivedAt: last,
  };
}

const chain = [
  idx("b.000001", "", "0-1-10", "2026-01-01T00:00:00.000Z", "2026-01-01T00:10:00.000Z"),
  idx("b.000002", "0-1-10", "0-1-20", "2026-01-01T00:10:00.000Z", "2026-01-01T00:20:00.000Z"),
  idx("b.000003", "0-1-20", "0-1-30", "2026-01-01T00:20:00.000Z", "2026-01-01T00:30:00.000Z"),
];

function backup(name: string, gtid: string | undefined, at: string): BackupEntry {
  const manifest = { kind: "logical", replication: gtid === undefined ? undefined : { role: "master", gtid } } as unknown as Manifest;
  return { name, time: new Date(at), method: "mysqldump", source: "db", manifest, size: 1 };
}

describe("planning a point-in-time restore", () => {
  it("finds the file holding the target, by GTID and by time", () => {
    expect(findStopFile(chain, { kind: "gtid", gtid: parseGtid("0-1-15") }, "w")).toBe(1);
    expect(findStopFile(chain, { kind: "time", time: new Date("2026-01-01T00:25:00Z") }, "w")).toBe(2);
    expect(() => findStopFile(chain, { kind: "gtid", gtid: parseGtid("0-1-31") }, "w")).toThrow(/reaches .*0-1-30/);
  });

  it("picks the newest backup at or before the target", () => {
    const bs = [backup("a", "0-1-5", "2026-01-01T00:05:00Z"), backup("b", "0-1-12", "2026-01-01T00:12:00Z"), backup("c", "0-1-25", "2026-01-01T00:25:00Z")];
    const target = { kind: "gtid", gtid: parseGtid("0-1-20") } as const;
    expect(selectBackupBefore(bs, parseGtidState("0-1-19"), target, "w").backup.name).toBe("b");
    expect(() => selectBackupBefore([backup("x", undefined, "2026-01-01T00:00:00Z")], parseGtidState("0-1-19"), target, "w")).toThrow(/no logical backup has a GTID position/);
  });

  it("names a missing file between the backup and the target", () => {
    const holed = [chain[0], chain[2]] as BinlogIndex[];
    expect(() => findStartFile(holed, parseGtidState("0-1-5"), 1, "b1", "w")).toThrow(/b\.000002, GTIDs after 0-1-10 up to 0-1-20/);
    expect(findStartFile(chain, parseGtidState("0-1-12"), 2, "b1", "w")).toBe(1);
  });

  it("takes the partial of the next binlog only", () => {
    const a = { serverId: 1, complete: chain, partial: [idx("b.000002", "", "", "", "", false), idx("b.000004", "0-1-30", "0-1-33", "2026-01-01T00:30:00.000Z", "2026-01-01T00:33:00.000Z", false)], unindexed: [] };
    expect(buildChain(a).map((f) => f.object)).toEqual(["b.000001", "b.000002", "b.000003", "b.000004.partial"]);
  });
});

describe("resuming the archive", () => {
  it("goes on with the binlog after the last complete one, and reports a purged one as a gap", () => {
    expect(decideStart(1, undefined, ["b.000003", "b.000004"], "w")).toEqual({ kind: "start", file: "b.000003" });
    expect(decideStart(1, chain[2], ["b.000003", "b.000004"], "w")).toEqual({ kind: "start", file: "b.000004" });
    const gap = decideStart(1, chain[1], ["b.000005", "b.000006"], "w");
    expect(gap.kind).toBe("gap");
    expect(gap.kind === "gap" && gap.message).toMatch(/no longer has b\.000003 .* \(its oldest is b\.000005\)/);
  });

  it("refuses a binlog whose GTID state does not continue the archive", () => {
    const scan = { startState: parseGtidState("0-1-25") } as BinlogScan;
    expect(continuityProblem(1, chain[1], "b.000003", scan, "w")).toMatch(/starts at GTID 0-1-25/);
    expect(continuityProblem(1, chain[1], "b.000003", { startState: parseGtidState("0-1-20") } as BinlogScan, "w")).toBeUndefined();
  });
});
