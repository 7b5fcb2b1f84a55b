import { describe, expect, it } from "vitest";
import { repositorySpecSchema } from "../../../api/v1alpha1.js";
import type { BinlogIndex } from "../../../pitr/layout.js";
import type { PodLike } from "../../observe.js";
import { archiverFailure, archiverHealth, decideArchives, readArchive, type ArchiverPod } from "./decide.js";

const creds = { name: "db-creds" };
const spec = (archives: unknown[]) => repositorySpecSchema.parse({ s3: { bucket: "bkp" }, binlogArchives: archives });

function dbPod(name: string, opts: { master?: boolean; ready?: boolean } = {}): PodLike {
  return {
    metadata: { name, namespace: "db", ownerReferences: [{ kind: "StatefulSet", name: "db" }], labels: opts.master ? { "replicator.dev/role": "master" } : {} },
    status: { phase: "Running", podIP: `10.0.0.${name.slice(-1)}`, conditions: [{ type: "Ready", status: "True" }], containerStatuses: [{ name: "mariadb", ready: opts.ready ?? true }] },
  };
}

describe("decideArchives", () => {
  it("runs one archiver per entry against the StatefulSet's master, and follows the role label when the master changes", () => {
    const s = spec([{ source: { statefulSet: "db", credentialsSecret: creds }, flushIntervalSeconds: 5 }]);
    expect(decideArchives(s, [dbPod("db-0"), dbPod("db-1")])).toEqual([
      { kind: "run", cluster: "db", source: s.binlogArchives[0]!.source, flushIntervalSeconds: 5, masterPod: "db-0", address: "10.0.0.0" },
    ]);
    expect(decideArchives(s, [dbPod("db-0"), dbPod("db-1", { master: true })])[0]).toMatchObject({ kind: "run", masterPod: "db-1", address: "10.0.0.1" });
  });

  it("waits (keeping any Deployment) while the master is not ready", () => {
    const s = spec([{ cluster: "orders", source: { statefulSet: "db", credentialsSecret: creds } }]);
    expect(decideArchives(s, [dbPod("db-0", { ready: false })])[0]).toMatchObject({ kind: "wait", cluster: "orders", reason: "SourceNotReady" });
  });

  it("turns off suspended entries, a slave as source, and a second entry for the same cluster, with one line each", () => {
    const s = spec([
      { source: { statefulSet: "db", credentialsSecret: creds } },
      { source: { statefulSet: "db", role: "slave", credentialsSecret: creds }, cluster: "other" },
      { source: { pod: "db-0", credentialsSecret: creds }, cluster: "db" },
      { source: { statefulSet: "x", credentialsSecret: creds }, suspend: true },
    ]);
    const p = decideArchives(s, [dbPod("db-0")]);
    expect(p.map((x) => [x.kind, x.cluster, "reason" in x ? x.reason : ""])).toEqual([
      ["run", "db", ""],
      ["off", "other", "InvalidSpec"],
      ["off", "db", "InvalidSpec"],
      ["off", "x", "Suspended"],
    ]);
    expect(p[1]?.kind === "off" && p[1].message).toContain("set role: master");
    expect(p[2]?.kind === "off" && p[2].message).toContain("a second entry for cluster db");
  });
});

const now = new Date("2026-11-30T12:00:00Z");
function archiverPod(cs: ArchiverPod["status"]): ArchiverPod {
  return { metadata: { name: "backups-binlogs-db-abc" }, status: cs };
}

describe("archiverHealth", () => {
  const gapLog = '{"level":30,"msg":"binlog archive session starting"}\nreplicator binlog-archive: binlog archive gap: the archive s3://b/db/binlogs/1 ends with mysql-bin.000002 at GTID 0-1-9, but the master (server 1) no longer has mysql-bin.000003 (its oldest is mysql-bin.000005); those transactions are lost\n';

  it("a gap the archiver reported (exit 2, last log line as termination message) is ArchiveGap with that line, while it crash-loops", () => {
    const h = archiverHealth(
      [archiverPod({ phase: "Running", containerStatuses: [{ name: "archiver", restartCount: 3, state: { waiting: { reason: "CrashLoopBackOff" } }, lastState: { terminated: { exitCode: 2, message: gapLog } } }] })],
      "archiver",
      now,
    );
    expect(h).toEqual({
      ready: false,
      status: "False",
      reason: "ArchiveGap",
      message: "binlog archive gap: the archive s3://b/db/binlogs/1 ends with mysql-bin.000002 at GTID 0-1-9, but the master (server 1) no longer has mysql-bin.000003 (its oldest is mysql-bin.000005); those transactions are lost (restarted 3 times)",
    });
  });

  it("stays ArchiveGap in the seconds the restarted archiver runs before failing again; a minute of running is recovered", () => {
    const pod = (startedAt: string) => archiverPod({ phase: "Running", containerStatuses: [{ name: "archiver", ready: true, restartCount: 1, state: { running: { startedAt } }, lastState: { terminated: { exitCode: 2, message: gapLog } } }] });
    expect(archiverHealth([pod("2026-11-30T11:59:58Z")], "archiver", now).reason).toBe("ArchiveGap");
    expect(archiverHealth([pod("2026-11-30T11:58:00Z")], "archiver", now)).toMatchObject({ ready: true, status: "True", reason: "ArchiverRunning" });
  });

  it("other failures are ArchiverFailed with the agent's message; JSON results are read too; no pod or a waiting one is ArchiverNotReady", () => {
    expect(archiverFailure({ exitCode: 2, message: "replicator binlog-archive: binary logging is off on db-0:3306: there is nothing to archive; set log_bin and server_id\n" })).toEqual({
      reason: "ArchiverFailed",
      message: "binary logging is off on db-0:3306: there is nothing to archive; set log_bin and server_id",
    });
    expect(archiverFailure({ exitCode: 2, message: '{"ok":false,"reason":"ArchiveGap","error":"binlog archive gap: x"}' })).toEqual({ reason: "ArchiveGap", message: "binlog archive gap: x" });
    expect(archiverFailure({ exitCode: 137, reason: "OOMKilled" }).message).toMatch(/exited with code 137 \(OOMKilled\)/);
    expect(archiverHealth([], "archiver", now)).toMatchObject({ ready: false, reason: "ArchiverNotReady" });
    expect(archiverHealth([archiverPod({ phase: "Pending", containerStatuses: [{ name: "archiver", state: { waiting: { reason: "ContainerCreating" } } }] })], "archiver", now)).toMatchObject({
      reason: "ArchiverNotReady",
      message: "pod backups-binlogs-db-abc is waiting (ContainerCreating)",
    });
  });
});

function idx(file: string, start: string, end: string, first: string, last: string, complete = true): BinlogIndex {
  return {
    formatVersion: 1, serverId: 1, file, object: complete ? file : `${file}.partial`, complete, size: 100, sha256: "0".repeat(64),
    startState: start, endState: end, gtidCount: 1, firstEventTime: first, lastEventTime: last, archivedAt: last,
  };
}

describe("readArchive", () => {
  const complete = [idx("mysql-bin.000001", "", "0-1-10", "2026-11-30T10:00:00Z", "2026-11-30T10:30:00Z"), idx("mysql-bin.000002", "0-1-10", "0-1-20", "2026-11-30T10:31:00Z", "2026-11-30T11:00:00Z")];
  const partial = [idx("mysql-bin.000003", "0-1-20", "0-1-25", "2026-11-30T11:01:00Z", "2026-11-30T11:50:00Z", false)];
  const backups = [
    { name: "before-archive", finishedAt: "2026-11-30T09:00:00Z", gtid: "" },
    { name: "b1", finishedAt: "2026-11-30T10:20:00Z", gtid: "0-1-8" },
    { name: "b2", finishedAt: "2026-11-30T11:20:00Z", gtid: "0-1-22" },
  ];
  const where = "s3://b/db/binlogs/1";

  it("first recoverable: the oldest base backup the archive continues; last: the newest archived event; lag 0 when the master is at the archive's end", () => {
    const r = readArchive({ serverId: 1, complete, partial, unindexed: [] }, backups, "0-1-25", now, where);
    expect(r).toEqual({ lastArchivedFile: "mysql-bin.000003.partial", lastRecoverableTime: "2026-11-30T11:50:00Z", firstRecoverableTime: "2026-11-30T09:00:00Z", lagSeconds: 0 });
  });

  it("lag is now minus the newest archived event when the master is ahead", () => {
    const r = readArchive({ serverId: 1, complete, partial, unindexed: [] }, backups.slice(1), "0-1-30", now, where);
    expect(r.firstRecoverableTime).toBe("2026-11-30T10:20:00Z");
    expect(r.lagSeconds).toBe(600);
  });

  it("a file missing from the archive is a gap: only backups after it count", () => {
    const r = readArchive({ serverId: 1, complete: [complete[0]!], partial: [idx("mysql-bin.000003", "0-1-20", "0-1-25", "2026-11-30T11:01:00Z", "2026-11-30T11:50:00Z", false)], unindexed: [] }, backups, undefined, now, where);
    // buildChain pairs the partial with the file after the last complete one only: .000003 is not .000002.
    expect(r.lastArchivedFile).toBe("mysql-bin.000001");
    const withGap = readArchive({ serverId: 1, complete: [complete[0]!, idx("mysql-bin.000003", "0-1-20", "0-1-25", "2026-11-30T11:01:00Z", "2026-11-30T11:50:00Z")], partial: [], unindexed: [] }, backups, undefined, now, where);
    expect(withGap.problem?.reason).toBe("ArchiveGap");
    expect(withGap.problem?.message).toContain("mysql-bin.000002");
    expect(withGap.firstRecoverableTime).toBe("2026-11-30T11:20:00Z");
  });

  it("no backup since the archive began: NoBaseBackup, with what to do; an empty archive reads as nothing", () => {
    const late = [idx("mysql-bin.000004", "0-1-30", "0-1-40", "2026-11-30T11:10:00Z", "2026-11-30T11:40:00Z")];
    const r = readArchive({ serverId: 1, complete: late, partial: [], unindexed: [] }, backups, "0-1-40", now, where);
    expect(r.firstRecoverableTime).toBeUndefined();
    expect(r.problem?.reason).toBe("NoBaseBackup");
    expect(r.problem?.message).toContain("take one to make this archive usable");
    expect(readArchive({ serverId: 1, complete: [], partial: [], unindexed: [] }, backups, undefined, now, where)).toEqual({});
  });

  it("a promoted server seeded from a backup: its empty first GTID_LIST is not the start of history", () => {
    // Seeded at 0-1-30: the first binlog lists nothing, its first GTID is 0-1-31; the backups before are not its base.
    const seeded = [{ ...idx("mysql-bin.000001", "", "0-2-40", "2026-11-30T11:10:00Z", "2026-11-30T11:40:00Z"), firstGtid: "0-1-31" }];
    const r = readArchive({ serverId: 2, complete: seeded, partial: [], unindexed: [] }, backups, "0-2-40", now, where);
    expect(r.firstRecoverableTime).toBeUndefined();
    expect(r.problem?.reason).toBe("NoBaseBackup");
    expect(r.problem?.message).toContain("after a switchover, a restore from an older backup may still stitch the previous master's archive");
    // With the previous master's archive, which reaches where this one begins, the older backups are bases again.
    const previous = { serverId: 1, where: "w/1", files: [idx("mysql-bin.000001", "", "0-1-35", "2026-11-30T10:00:00Z", "2026-11-30T11:05:00Z")] };
    const s = readArchive({ serverId: 2, complete: seeded, partial: [], unindexed: [] }, backups, "0-2-40", now, where, [previous]);
    expect(s.problem).toBeUndefined();
    expect(s.firstRecoverableTime).toBe(r.firstRecoverableTime ?? backups.map((b) => b.finishedAt).sort()[0]);
  });
});
