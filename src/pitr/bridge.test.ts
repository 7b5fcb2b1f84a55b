import { describe, expect, it } from "vitest";
import type { MasterHorizon } from "../db/replication.js";
import { decideBridge, type ArchiveChain } from "./bridge.js";
import type { BinlogIndex } from "./layout.js";

function idx(file: string, start: string, end: string): BinlogIndex {
  return {
    formatVersion: 1, serverId: 11, file, object: file, complete: true, size: 100, sha256: "0".repeat(64),
    startState: start, endState: end, gtidCount: 1, firstEventTime: "2026-01-01T00:00:00.000Z", lastEventTime: "2026-01-01T00:10:00.000Z", archivedAt: "2026-01-01T00:10:00.000Z",
  };
}

const files = [
  idx("b.000001", "", "0-11-10"),
  idx("b.000002", "0-11-10", "0-11-20"),
  idx("b.000003", "0-11-20", "0-11-30"),
  idx("b.000004", "0-11-30", "0-11-40"),
];
const archive = (chain: BinlogIndex[], hasPartial = false): ArchiveChain[] => [{ serverId: 11, where: "s3://b/p/c/binlogs/11", chain, hasPartial }];
// The master purged everything before b.000004: its oldest binlog begins after 0-11-30.
const master: MasterHorizon = { oldestFile: "b.000004", oldestStart: "0-11-30", current: "0-11-45" };

describe("bridging a seed over the binlog archive", () => {
  it("replays from the file holding the first transaction the backup lacks through the first file whose end the master serves", () => {
    const d = decideBridge(archive(files), "0-11-15", master, "bk", "s3://b/p/c/binlogs");
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.plan.files.map((f) => f.file)).toEqual(["b.000002", "b.000003"]);
    // gtid_slave_pos after the replay: the master serves 0-11-31 on.
    expect(d.plan.endState).toBe("0-11-30");
  });

  it("a backup exactly at a file's end starts with the next file", () => {
    const d = decideBridge(archive(files), "0-11-20", master, "bk", "w");
    expect(d.ok && d.plan.files.map((f) => f.file)).toEqual(["b.000003"]);
  });

  it("a missing archived file in the bridge names the missing range", () => {
    const d = decideBridge(archive([files[0], files[1], files[3]] as BinlogIndex[]), "0-11-15", master, "bk", "w");
    expect(d.ok).toBe(false);
    if (d.ok) return;
    expect(d.message).toContain("the master has purged binlogs the backup needs and the binlog archive does not hold them either: the transactions after GTID 0-11-20 through GTID 0-11-30 are missing");
    expect(d.message).toContain("b.000003 missing");
    expect(d.message).toContain("the master's oldest binlog b.000004 begins after GTID 0-11-30");
    expect(d.message).not.toContain("\n");
  });

  it("an archive that ends before the master's oldest binlog names where it ends", () => {
    const d = decideBridge(archive(files.slice(0, 2), true), "0-11-15", master, "bk", "w");
    expect(!d.ok && d.message).toContain("after GTID 0-11-20 through GTID 0-11-30");
    expect(!d.ok && d.message).toContain("the archive s3://b/p/c/binlogs/11 ends at GTID 0-11-20 (b.000002");
    expect(!d.ok && d.message).toContain("partial object is never replayed");
  });

  it("an archive that begins after the backup's position, or none at all", () => {
    const late = decideBridge(archive(files.slice(2)), "0-11-15", master, "bk", "w");
    expect(!late.ok && late.message).toContain("after GTID 0-11-15 through GTID 0-11-20");
    expect(!late.ok && late.message).toContain("begins at b.000003 (GTID 0-11-20), after the backup's position");
    const none = decideBridge([], "0-11-15", master, "bk", "s3://b/p/c/binlogs");
    expect(!none.ok && none.message).toContain("after GTID 0-11-15 through GTID 0-11-30");
    expect(!none.ok && none.message).toContain("there is no binlog archive in s3://b/p/c/binlogs");
  });

  it("the missing range ends at the master's oldest binlog when the archive resumes later", () => {
    const m: MasterHorizon = { oldestFile: "b.000003", oldestStart: "0-11-20", current: "0-11-45" };
    const d = decideBridge(archive([files[0], files[3]] as BinlogIndex[]), "0-11-5", m, "bk", "w");
    expect(!d.ok && d.message).toContain("after GTID 0-11-10 through GTID 0-11-20");
  });

  it("uses the archive of the server that bridges (after a switchover, each master has its own)", () => {
    const other: ArchiveChain = { serverId: 12, where: "w/12", chain: [idx("c.000001", "", "0-12-3")], hasPartial: false };
    const d = decideBridge([other, ...archive(files)], "0-11-15", master, "bk", "w");
    expect(d.ok && d.plan.serverId).toBe(11);
  });
});

describe("a bridge over the archive of a server seeded from a backup", () => {
  it("does not take its first binlog's empty GTID_LIST as the start of history", () => {
    // Server 12 was seeded at 0-11-20: its first binlog's GTID_LIST is empty, its first GTID 0-11-21.
    const seeded: ArchiveChain = { serverId: 12, where: "w/12", chain: [{ ...idx("c.000001", "", "0-11-35"), serverId: 12, firstGtid: "0-11-21" }], hasPartial: false };
    const d = decideBridge([seeded], "0-11-15", master, "bk", "w");
    expect(!d.ok && d.message).toContain("begins at c.000001 (GTID 0-11-20), after the backup's position");
    expect(decideBridge([seeded], "0-11-20", master, "bk", "w").ok).toBe(true);
  });
});

describe("a bridge across a switchover", () => {
  it("stitches the old master's archive to the new master's where the new one begins", () => {
    const file = (f: string, sid: number, start: string, end: string, first: string): BinlogIndex => ({ ...idx(f, start, end), serverId: sid, firstGtid: first });
    const a: ArchiveChain = { serverId: 11, where: "w/11", chain: [file("a.000001", 11, "", "0-11-10", "0-11-1"), file("a.000002", 11, "0-11-10", "0-11-30", "0-11-11")], hasPartial: false };
    // Server 12, seeded at 0-11-20, replicated 21..30, became the master at 0-12-31 and purged its first two binlogs.
    const b: ArchiveChain = {
      serverId: 12, where: "w/12", hasPartial: true,
      chain: [file("b.000001", 12, "", "0-11-28", "0-11-21"), file("b.000002", 12, "0-11-28", "0-12-40", "0-11-29"), file("b.000003", 12, "0-12-40", "0-12-50", "0-12-41")],
    };
    const newMaster: MasterHorizon = { oldestFile: "b.000003", oldestStart: "0-12-40", current: "0-12-55" };
    const d = decideBridge([a, b], "0-11-5", newMaster, "bk", "w");
    expect(d.ok).toBe(true);
    if (!d.ok) return;
    expect(d.plan.legs?.map((l) => [l.serverId, l.files.map((f) => f.file), l.until])).toEqual([
      [11, ["a.000001", "a.000002"], "0-11-20"],
      [12, ["b.000001", "b.000002"], undefined],
    ]);
    expect(d.plan.endState).toBe("0-12-40");
    expect(d.plan.serverId).toBe(12);
    // The old master's last binlog archived only as its partial object (it stopped before closing it): the handover may fall inside it.
    const cut: ArchiveChain = { ...a, chain: a.chain.slice(0, 1), partial: { ...(a.chain[1] as BinlogIndex), complete: false, object: "a.000002.partial" }, hasPartial: true };
    const p = decideBridge([cut, b], "0-11-5", newMaster, "bk", "w");
    expect(p.ok && p.plan.files.map((f) => f.object)).toEqual(["a.000001", "a.000002.partial", "b.000001", "b.000002"]);
    // Without the old master's archive, the missing range is named as before.
    const alone = decideBridge([b], "0-11-5", newMaster, "bk", "w");
    expect(!alone.ok && alone.message).toContain("begins at b.000001 (GTID 0-11-20), after the backup's position");
  });
});
