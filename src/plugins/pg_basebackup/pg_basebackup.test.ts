import { describe, expect, it } from "vitest";
import { failed } from "../../lib/errors.js";
import { buildBasebackupArgs, parsePgBasebackupOptions, standbySettings, tarError } from "./index.js";
import { parseBackupLabel, parseBasebackupStderr, parseManifestWalRange } from "./position.js";

// What pg_basebackup 15 -v prints.
const STDERR = `pg_basebackup: initiating base backup, waiting for checkpoint to complete
pg_basebackup: checkpoint completed
pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1
pg_basebackup: write-ahead log end point: 0/2000100
pg_basebackup: syncing data to disk ...
pg_basebackup: base backup completed
`;

const LABEL = `START WAL LOCATION: 0/5000028 (file 000000020000000000000005)
CHECKPOINT LOCATION: 0/5000060
BACKUP METHOD: streamed
BACKUP FROM: standby
START TIME: 2026-11-25 01:17:01 UTC
LABEL: replicator
START TIMELINE: 2
`;

describe("parseBasebackupStderr", () => {
  it("reads the start point, its timeline and the end point", () => {
    expect(parseBasebackupStderr(STDERR)).toEqual({ startLsn: "0/2000028", timeline: 1, endLsn: "0/2000100" });
  });

  it("reads PostgreSQL 9's wording, and nothing from output without positions", () => {
    expect(parseBasebackupStderr("transaction log start point: 1/AB000028 on timeline 3\ntransaction log end point: 1/ab0000f8\n")).toEqual({
      startLsn: "1/AB000028",
      timeline: 3,
      endLsn: "1/AB0000F8",
    });
    expect(parseBasebackupStderr("pg_basebackup: error: could not connect\n")).toEqual({});
  });
});

describe("parseBackupLabel", () => {
  it("reads the start location, timeline and where the backup was taken", () => {
    expect(parseBackupLabel(LABEL)).toEqual({
      startLsn: "0/5000028",
      startWalFile: "000000020000000000000005",
      checkpointLsn: "0/5000060",
      backupFrom: "standby",
      startTimeline: 2,
      label: "replicator",
    });
    expect(parseBackupLabel("garbage")).toEqual({});
  });
});

describe("parseManifestWalRange", () => {
  it("takes the last WAL range of a backup_manifest", () => {
    const manifest = JSON.stringify({
      "PostgreSQL-Backup-Manifest-Version": 1,
      Files: [],
      "WAL-Ranges": [
        { Timeline: 1, "Start-LSN": "0/2000028", "End-LSN": "0/3000000" },
        { Timeline: 2, "Start-LSN": "0/3000000", "End-LSN": "0/3000100" },
      ],
    });
    expect(parseManifestWalRange(manifest)).toEqual({ timeline: 2, startLsn: "0/3000000", endLsn: "0/3000100" });
    expect(parseManifestWalRange("{")).toBeUndefined();
    expect(parseManifestWalRange(JSON.stringify({ "WAL-Ranges": [{ Timeline: 1, "Start-LSN": "x" }] }))).toBeUndefined();
  });
});

describe("standbySettings", () => {
  it("writes primary_conninfo as pg_basebackup -R does, quoting twice", () => {
    const text = standbySettings({
      host: "db-0.db",
      port: 5432,
      user: "repl",
      password: "pa'ss\\word",
      applicationName: "db-1",
      comment: "replicator: a standby\nof db-0",
    });
    expect(text.split("\n")).toEqual([
      "# replicator: a standby of db-0",
      // conninfo: 'pa\'ss\\word'; then every ' and \ doubled for postgresql.conf.
      "primary_conninfo = 'host=''db-0.db'' port=''5432'' user=''repl'' password=''pa\\\\''ss\\\\\\\\word'' application_name=''db-1'''",
      "recovery_target_timeline = 'latest'",
      "",
    ]);
  });

  it("adds the slot when asked, and no password when there is none", () => {
    const text = standbySettings({ host: "h", port: 1, user: "u", password: undefined, applicationName: "a", primarySlotName: "s1", comment: "c" });
    expect(text).not.toContain("password");
    expect(text).toContain("primary_slot_name = 's1'\n");
  });
});

describe("options and arguments", () => {
  it("refuses MySQL options and bad slot names", () => {
    expect(() => parsePgBasebackupOptions({ databases: "a,b" })).toThrow(/does not apply to pg_basebackup/);
    expect(() => parsePgBasebackupOptions({ primarySlotName: "Bad-Slot" })).toThrow(/not a replication slot name/);
    expect(parsePgBasebackupOptions({ applicationName: "db-1" })).toEqual({ command: "pg_basebackup", applicationName: "db-1", primarySlotName: undefined });
  });

  it("writes one tar to stdout with the WAL fetched into it, and never a password", () => {
    const args = buildBasebackupArgs();
    expect(args.slice(0, 5)).toEqual(["-D", "-", "-Ft", "-X", "fetch"]);
    expect(args).toContain("--no-password");
    expect(args.join(" ")).not.toMatch(/password=/);
  });
});

describe("tarError", () => {
  it("reports a cut-short archive as a corrupt backup, and other failures by their cause", () => {
    const eof = failed("CommandFailed", "tar failed to extract the base backup (exit code 2): tar: Error is not recoverable: exiting now", {
      detail: "tar: Unexpected EOF in archive\ntar: Unexpected EOF in archive\ntar: Error is not recoverable: exiting now",
    });
    expect((tarError(eof, "b1") as Error).message).toBe("backup b1: the archive ends early (tar: Unexpected EOF in archive); the stored backup is incomplete");
    const perm = failed("CommandFailed", "x", { detail: "tar: ./base: Cannot mkdir: Permission denied\ntar: Exiting with failure status due to previous errors" });
    expect((tarError(perm, "b1") as Error).message).toBe("tar failed to extract the base backup: tar: ./base: Cannot mkdir: Permission denied");
  });
});
