import { describe, expect, it } from "vitest";
import type { BackupEntry, Manifest, UnusableEntry } from "../storage/catalog.js";
import type { ServerArchive } from "./archive.js";
import type { BinlogIndex } from "./layout.js";
import { coveredByAll, keptPositions, selectArchiveRetention } from "./retention.js";

function idx(serverId: number, file: string, start: string, end: string, complete = true): BinlogIndex {
  return {
    formatVersion: 1, serverId, file, object: complete ? file : `${file}.partial`, complete, size: 100, sha256: "0".repeat(64),
    startState: start, endState: end, gtidCount: 1, firstEventTime: "2026-01-01T00:00:00.000Z", lastEventTime: "2026-01-01T00:01:00.000Z", archivedAt: "2026-01-01T00:02:00.000Z",
  };
}

function server(serverId: number, complete: BinlogIndex[], partial: BinlogIndex[] = [], unindexed: string[] = []): ServerArchive {
  return { serverId, complete, partial, unindexed };
}

function backup(name: string, gtid: string | undefined, kind = "logical"): BackupEntry {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(name);
  const time = m ? new Date(`${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z`) : new Date(0);
  const manifest = { kind, replication: gtid === undefined ? undefined : { role: "master", gtid } } as unknown as Manifest;
  return { name, time, method: "mysqldump", source: "db", manifest, size: 1 };
}

const prefix = (sid: number): string => `c/binlogs/${sid}/`;
const files = (p: { remove: { serverId: number; file: string }[] }): string[] => p.remove.map((r) => `${r.serverId}/${r.file}`);

// b.000001 holds 0-1-1..10, b.000002 0-1-11..20, b.000003 0-1-21..30, b.000004 0-1-31..40, b.000005 open.
const one = server(1, [
  idx(1, "b.000001", "", "0-1-10"),
  idx(1, "b.000002", "0-1-10", "0-1-20"),
  idx(1, "b.000003", "0-1-20", "0-1-30"),
  idx(1, "b.000004", "0-1-30", "0-1-40"),
], [idx(1, "b.000005", "0-1-40", "0-1-45", false)]);

const B1 = "20260101T000100Z-mysqldump-db";
const B2 = "20260101T000200Z-mysqldump-db";
const B3 = "20260101T000300Z-mysqldump-db";

describe("archive retention: which binlogs go with the pruned backups", () => {
  it("deletes exactly the files whose every transaction the oldest kept backup has, index first", () => {
    const plan = selectArchiveRetention([one], [backup(B2, "0-1-25"), backup(B3, "0-1-38")], [], prefix);
    expect(files(plan)).toEqual(["1/b.000001", "1/b.000002"]);
    expect(plan.remove[0]?.keys).toEqual(["c/binlogs/1/b.000001.index.json", "c/binlogs/1/b.000001"]);
    expect(plan.oldest).toEqual({ name: B2, position: "0-1-25" });
    expect(plan.heldBack).toEqual([]);
  });

  it("a file ending exactly at the backup's position is wholly in it and goes; one GTID short, it stays", () => {
    expect(files(selectArchiveRetention([one], [backup(B2, "0-1-20")], [], prefix))).toEqual(["1/b.000001", "1/b.000002"]);
    expect(files(selectArchiveRetention([one], [backup(B2, "0-1-19")], [], prefix))).toEqual(["1/b.000001"]);
  });

  it("never deletes the newest complete file (the archiver resumes after it) nor a partial object", () => {
    const plan = selectArchiveRetention([one], [backup(B3, "0-1-45")], [], prefix);
    expect(files(plan)).toEqual(["1/b.000001", "1/b.000002", "1/b.000003"]);
    expect(plan.remove.flatMap((r) => r.keys).some((k) => k.includes(".partial") || k.includes("b.000004"))).toBe(false);
  });

  it("deletes nothing without a remaining backup that has a GTID position, and says so", () => {
    const none = selectArchiveRetention([one], [], [], prefix);
    expect(none.remove).toEqual([]);
    expect(none.heldBack[0]).toMatch(/no backup remains/);
    const noGtid = selectArchiveRetention([one], [backup(B2, undefined)], [], prefix);
    expect(noGtid.remove).toEqual([]);
    expect(noGtid.heldBack[0]).toMatch(/no remaining backup has a GTID position/);
  });

  it("compares per domain: a domain the backup lacks, or is behind in, keeps the file", () => {
    const two = server(1, [idx(1, "b.000001", "", "0-1-10,1-1-5"), idx(1, "b.000002", "0-1-10,1-1-5", "0-1-20,1-1-9"), idx(1, "b.000003", "0-1-20,1-1-9", "0-1-30,1-1-9")]);
    expect(files(selectArchiveRetention([two], [backup(B2, "0-1-25")], [], prefix))).toEqual([]);
    expect(files(selectArchiveRetention([two], [backup(B2, "0-1-25,1-1-4")], [], prefix))).toEqual([]);
    expect(files(selectArchiveRetention([two], [backup(B2, "0-1-25,1-1-9")], [], prefix))).toEqual(["1/b.000001", "1/b.000002"]);
    // A sequence number of another domain never stands in for this one.
    expect(files(selectArchiveRetention([two], [backup(B2, "0-1-5,1-1-100")], [], prefix))).toEqual([]);
  });

  it("bounds by every remaining backup (the oldest position per domain), physical ones included", () => {
    const plan = selectArchiveRetention([one], [backup(B2, "0-1-38"), backup(B3, "0-1-12", "physical")], [], prefix);
    expect(files(plan)).toEqual(["1/b.000001"]);
    expect(coveredByAll(idx(1, "x.1", "", "0-1-12"), keptPositions([backup(B2, "0-1-38"), backup(B3, "0-1-12")]))).toBe(true);
    expect(coveredByAll(idx(1, "x.1", "", "0-1-13"), keptPositions([backup(B2, "0-1-38"), backup(B3, "0-1-12")]))).toBe(false);
  });

  it("deletes only a prefix of the chain: the first file still needed stops the walk", () => {
    // b.000002 ends at 0-1-50 (out of order): it and everything after it stay.
    const odd = server(1, [idx(1, "b.000001", "", "0-1-10"), idx(1, "b.000002", "0-1-10", "0-1-50"), idx(1, "b.000003", "0-1-50", "0-1-20"), idx(1, "b.000004", "0-1-20", "0-1-60")]);
    expect(files(selectArchiveRetention([odd], [backup(B2, "0-1-30")], [], prefix))).toEqual(["1/b.000001"]);
  });

  it("treats each server's archive on its own (a former master's, after a switchover)", () => {
    const old = server(1, [idx(1, "a.000001", "", "0-1-10"), idx(1, "a.000002", "0-1-10", "0-1-20")]);
    const cur = server(2, [idx(2, "b.000001", "0-1-20", "0-2-30"), idx(2, "b.000002", "0-2-30", "0-2-40"), idx(2, "b.000003", "0-2-40", "0-2-50")]);
    expect(files(selectArchiveRetention([cur, old], [backup(B2, "0-2-41")], [], prefix))).toEqual(["1/a.000001", "2/b.000001", "2/b.000002"]);
  });

  it("an unusable backup not newer than the oldest kept one holds the whole archive back; a newer one does not", () => {
    const older: UnusableEntry = { name: B1, reason: "UnknownFormat", error: "format 9" };
    const held = selectArchiveRetention([one], [backup(B2, "0-1-25")], [older], prefix);
    expect(held.remove).toEqual([]);
    expect(held.heldBack[0]).toMatch(new RegExp(`backup ${B1} is unusable \\(UnknownFormat\\)`));
    const newer: UnusableEntry = { name: B3, reason: "CorruptManifest", error: "bad json" };
    expect(files(selectArchiveRetention([one], [backup(B2, "0-1-25")], [newer], prefix))).toEqual(["1/b.000001", "1/b.000002"]);
  });

  it("removes data objects left without their index before the first kept file (a prune cut short), nothing else", () => {
    const s = server(1, one.complete, one.partial, ["b.000000", "b.000002", "b.000009", "b.000005.partial", "other.000001"]);
    const plan = selectArchiveRetention([s], [backup(B2, "0-1-25")], [], prefix);
    expect(plan.leftovers.map((l) => l.key)).toEqual(["c/binlogs/1/b.000000", "c/binlogs/1/b.000002"]);
  });
});
