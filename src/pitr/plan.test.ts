import { describe, expect, it } from "vitest";
import type { BackupEntry, Manifest } from "../storage/catalog.js";
import { continuityProblem, decideStart } from "./archiver.js";
import type { BinlogScan } from "./binlog-file.js";
import { formatGtidState, parseGtid, parseGtidState } from "./gtid.js";
import type { BinlogIndex } from "./layout.js";
import { buildChain, findStartFile, findStopFile, planRoute, selectBackupBefore, startStateOf, type Chain } from "./plan.js";

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

describe("a replay across a switchover (chains of two servers stitched)", () => {
  const at = (file: string, sid: number, start: string, end: string, first: string): BinlogIndex => ({
    ...idx(file, start, end, "2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z"), serverId: sid, firstGtid: first,
  });
  // Server 11 was master through 0-11-30; server 12, seeded from a backup at 0-11-20 (its first binlog's
  // GTID_LIST is empty), replicated 21..30 and became master at 0-12-31.
  const a: Chain = { serverId: 11, where: "w/11", files: [at("a.000001", 11, "", "0-11-10", "0-11-1"), at("a.000002", 11, "0-11-10", "0-11-25", "0-11-11"), at("a.000003", 11, "0-11-25", "0-11-30", "0-11-26")] };
  const b: Chain = { serverId: 12, where: "w/12", files: [at("b.000001", 12, "", "0-11-28", "0-11-21"), at("b.000002", 12, "0-11-28", "0-12-40", "0-11-29")] };
  const target = { kind: "gtid", gtid: parseGtid("0-12-35") } as const;

  it("a seeded server's first binlog begins after the GTID before its first one, not at nothing", () => {
    expect(startStateOf(b.files[0] as BinlogIndex)).toEqual(parseGtidState("0-11-20"));
    expect(startStateOf(a.files[0] as BinlogIndex)).toEqual(new Map());
    // So a backup older than that is not taken as covered by server 12's chain alone.
    expect(() => findStartFile(b.files, parseGtidState("0-11-5"), 1, "bk", "w/12")).toThrow(/begins at GTID 0-11-20/);
  });

  it("takes one chain when it covers the range", () => {
    const legs = planRoute([a, b], parseGtidState("0-11-22"), new Map([[12, 1]]), "bk", target);
    expect(legs.map((l) => [l.chain.serverId, l.start, l.stop, l.until])).toEqual([[12, 0, 1, undefined]]);
  });

  it("stitches the old master's chain up to where the new one's begins, then the new one's", () => {
    const legs = planRoute([a, b], parseGtidState("0-11-5"), new Map([[12, 1]]), "bk", target);
    expect(legs.map((l) => [l.chain.serverId, l.start, l.stop, l.until && formatGtidState(l.until)])).toEqual([
      [11, 0, 1, "0-11-20"],
      [12, 0, 1, undefined],
    ]);
  });

  it("names where the archives stop connecting when they do not", () => {
    const late: Chain = { ...b, files: [at("b.000001", 12, "0-11-33", "0-12-40", "0-11-34")] };
    expect(() => planRoute([a, late], parseGtidState("0-11-5"), new Map([[12, 0]]), "bk", target)).toThrow(
      /the binlog archives do not connect: from the backup's position they reach GTID 0-11-30 \(w\/11 ends there, a\.000003\), and the transactions after it up to GTID 0-11-33 \(where w\/12 begins again, b\.000001\) are missing/,
    );
  });
});
