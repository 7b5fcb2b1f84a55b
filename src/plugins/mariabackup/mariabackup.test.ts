// The parsers run against lines and files captured from mariabackup 10.11.19.
import { describe, expect, it } from "vitest";
import type { Manifest } from "../../storage/catalog.js";
import { slavePosition } from "./index.js";
import {
  buildBackupArgs,
  buildSeedServerArgs,
  decideSafeSlaveBackup,
  isReplicationStateFile,
  isStreamReadError,
  lastErrorLine,
  parseBackupMyCnf,
  parseBinlogInfo,
  parseBinlogPositionLine,
  parseMariabackupOptions,
  parseSlaveInfo,
  parseSlavePositionLine,
  parseToolVersion,
  stripLogPrefix,
  missingPrivileges,
  summarizeBackupFailure,
} from "./parse.js";
import { positionFromInfo } from "./restore.js";
import { replicaStatements } from "./seed.js";

// Captured from `mariabackup --backup --stream=xbstream [--slave-info]` on stderr.
const MASTER_LINE = "[00] 2026-11-25 01:14:52 MySQL binlog position: filename 'mysql-bin.000001', position '20015', GTID of the last change '0-1-37'";
const SLAVE_GTID_LINE = "[00] 2026-11-25 01:14:59 MySQL slave binlog position: gtid_slave_pos '0-1-37'; master '' master_use_gtid = slave_pos";
const SLAVE_FILE_LINE = "[00] 2026-11-25 01:15:38 MySQL slave binlog position: master '' filename 'mysql-bin.000001' position '20015'";
const VERSION_LINE = "mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)";
const WRONG_PASSWORD = [
  "[00] 2026-11-25 01:17:37 Connecting to MariaDB server host: 127.0.0.1, user: root, password: set, port: 37627, socket: /run/mysqld/mysqld.sock",
  "[00] 2026-11-25 01:17:37 Failed to connect to MariaDB server: Access denied for user 'root'@'127.0.0.1' (using password: YES).",
];

const manifest = (role: "master" | "slave", replication?: Manifest["replication"]): Manifest => ({
  formatVersion: 1,
  name: "20261125T011452Z-mariabackup-db-0",
  cluster: "c",
  method: "mariabackup",
  kind: "physical",
  source: { host: "db-0", port: 3306, role, serverId: 2 },
  startedAt: "2026-11-25T01:14:51.000Z",
  finishedAt: "2026-11-25T01:14:52.000Z",
  compression: "zstd",
  objects: [{ name: "data.xbstream.zst", size: 1, sha256: "0".repeat(64) }],
  details: {},
  tool: { name: "replicator", version: "0" },
  ...(replication ? { replication } : {}),
});

describe("parseMariabackupOptions", () => {
  it("has defaults, and validates each option with a message that names it", () => {
    const o = parseMariabackupOptions({});
    expect(o).toMatchObject({ datadir: undefined, parallel: undefined, safeSlaveBackup: "auto", mariabackupCommand: "mariabackup", mbstreamCommand: "mbstream", mariadbdCommand: "mariadbd", startTimeoutSeconds: 300 });
    expect(parseMariabackupOptions({ parallel: "4", datadir: "/var/lib/mysql/", safeSlaveBackup: "true", useMemory: "1G" })).toMatchObject({
      parallel: 4,
      datadir: "/var/lib/mysql",
      safeSlaveBackup: true,
      useMemory: "1G",
    });
    expect(() => parseMariabackupOptions({ parallel: "four" })).toThrow('parallel must be a whole number from 1 to 64 (got "four")');
    expect(() => parseMariabackupOptions({ parallel: 0 })).toThrow("parallel must be a whole number from 1 to 64 (got 0)");
    expect(() => parseMariabackupOptions({ parallel: 2.5 })).toThrow("parallel must be a whole number");
    expect(() => parseMariabackupOptions({ datadir: "data" })).toThrow('datadir must be the absolute path of the server\'s data directory on this host (got "data")');
    expect(() => parseMariabackupOptions({ datadir: 7 })).toThrow("datadir must be the absolute path");
    expect(() => parseMariabackupOptions({ safeSlaveBackup: "sometimes" })).toThrow("safeSlaveBackup must be auto, true or false");
    expect(() => parseMariabackupOptions({ useMemory: "lots" })).toThrow("useMemory must be a size like 512M or 2G");
    expect(() => parseMariabackupOptions({ databases: "shop" })).toThrow("databases is not supported by mariabackup");
    expect(() => parseMariabackupOptions({ mariadbdArgs: ["plugin-load=x"] })).toThrow("mariadbdArgs must be a list of --flags");
    expect(() => parseMariabackupOptions({ mbstreamCommand: "" })).toThrow("mbstreamCommand must be a command name or path");
    try {
      parseMariabackupOptions({ parallel: -1 });
    } catch (err) {
      expect((err as { kind: string; reason: string }).kind).toBe("BadInput");
      expect((err as { reason: string }).reason).toBe("InvalidOption");
    }
  });
});

describe("decideSafeSlaveBackup", () => {
  it("stops the SQL thread only on a slave, and by default only when it holds temporary tables", () => {
    expect(decideSafeSlaveBackup("auto", false, 3)).toBe(false);
    expect(decideSafeSlaveBackup("auto", true, 0)).toBe(false);
    expect(decideSafeSlaveBackup("auto", true, 1)).toBe(true);
    expect(decideSafeSlaveBackup(true, true, 0)).toBe(true);
    expect(decideSafeSlaveBackup(false, true, 5)).toBe(false);
  });
});

describe("buildBackupArgs", () => {
  it("puts the credentials file first, streams xbstream, and holds no secret", () => {
    const args = buildBackupArgs({
      defaultsFile: "/tmp/c/client.cnf",
      connArgs: ["--host=db", "--port=3306", "--protocol=TCP"],
      datadir: "/var/lib/mysql",
      targetDir: "/tmp/t",
      parallel: 2,
      slaveInfo: true,
      safeSlaveBackup: false,
    });
    expect(args[0]).toBe("--defaults-extra-file=/tmp/c/client.cnf");
    expect(args).toEqual(["--defaults-extra-file=/tmp/c/client.cnf", "--backup", "--stream=xbstream", "--host=db", "--port=3306", "--protocol=TCP", "--datadir=/var/lib/mysql", "--target-dir=/tmp/t", "--parallel=2", "--slave-info"]);
    expect(args.join(" ")).not.toMatch(/password/i);
    const master = buildBackupArgs({ defaultsFile: "/f", connArgs: ["--socket=/s"], datadir: "/d", targetDir: "/t", parallel: undefined, slaveInfo: false, safeSlaveBackup: false });
    expect(master).not.toContain("--slave-info");
    expect(master.some((a) => a.startsWith("--parallel"))).toBe(false);
  });
});

describe("mariabackup's stderr", () => {
  it("reads a master's binlog position", () => {
    expect(parseBinlogPositionLine(MASTER_LINE)).toEqual({ file: "mysql-bin.000001", position: 20015, gtid: "0-1-37" });
    expect(parseBinlogPositionLine("[00] 2026-11-25 01:14:52 MySQL binlog position: filename 'mysql-bin.000004', position '342'")).toEqual({ file: "mysql-bin.000004", position: 342 });
    expect(parseBinlogPositionLine("[00] 2026-11-25 01:14:52 Streaming xtrabackup_binlog_info")).toBeUndefined();
  });

  it("reads a slave's master coordinates, with GTID or file/position", () => {
    expect(parseSlavePositionLine(SLAVE_GTID_LINE)).toEqual({ coordinates: { gtid: "0-1-37" }, otherConnections: [] });
    expect(parseSlavePositionLine(SLAVE_FILE_LINE)).toEqual({ coordinates: { file: "mysql-bin.000001", position: 20015 }, otherConnections: [] });
    expect(parseSlavePositionLine(MASTER_LINE)).toBeUndefined();
    const multi = parseSlavePositionLine("[00] 2026-11-25 01:15:38 MySQL slave binlog position: master '' filename 'a-bin.000002' position '7'; master 'm2' filename 'b-bin.000001' position '9'");
    expect(multi).toEqual({ coordinates: { file: "a-bin.000002", position: 7 }, otherConnections: ["m2"] });
  });

  it("reads the tool version", () => {
    expect(parseToolVersion(VERSION_LINE)).toBe("10.11.19-MariaDB");
  });

  it("names the failure in one line without the log prefixes", () => {
    expect(lastErrorLine(WRONG_PASSWORD)).toBe("Failed to connect to MariaDB server: Access denied for user 'root'@'127.0.0.1' (using password: YES).");
    expect(lastErrorLine(["[00] 2026-11-25 01:16:15 xb_stream_read_chunk(): my_read() failed."])).toBe("xb_stream_read_chunk(): my_read() failed.");
    expect(lastErrorLine(["2026-11-25  1:14:52 0 [ERROR] InnoDB: Unable to open './ibdata1'", "2026-11-25  1:14:52 0 [Note] InnoDB: Starting shutdown..."])).toBe(
      "[ERROR] InnoDB: Unable to open './ibdata1'",
    );
    expect(lastErrorLine(["[00] 2026-11-25 01:14:52 something odd"])).toBe("something odd");
    expect(lastErrorLine([])).toBe("");
    expect(stripLogPrefix("[01] 2026-11-25 01:14:52 Streaming ./shop/a.frm to <STDOUT>")).toBe("Streaming ./shop/a.frm to <STDOUT>");
  });

  it("names every missing privilege together", () => {
    const lines = [
      "[00] 2026-11-25 01:26:01 Using server version 10.11.19-MariaDB-0+deb12u1-log",
      "[00] 2026-11-25 01:26:01 Error: missing required privilege RELOAD on *.*",
      "[00] 2026-11-25 01:26:01 Error: missing required privilege PROCESS on *.*",
      "[00] 2026-11-25 01:26:01 Current privileges, as reported by 'SHOW GRANTS': ",
      "[00] 2026-11-25 01:26:01   1.GRANT SELECT, BINLOG MONITOR, SLAVE MONITOR ON *.* TO `weak`@`127.0.0.1` IDENTIFIED BY PASSWORD [redacted]",
    ];
    expect(summarizeBackupFailure(lines)).toBe("the backup user is missing privileges mariabackup needs: RELOAD on *.*, PROCESS on *.*");
    expect(summarizeBackupFailure(WRONG_PASSWORD)).toBe(lastErrorLine(WRONG_PASSWORD));
  });

  it("tells mbstream's complaints about its input from other failures", () => {
    // Captured from mbstream -x on a truncated, a byte-flipped and a garbage stream.
    expect(isStreamReadError("xb_stream_read_chunk(): my_read() failed.")).toBe(true);
    expect(isStreamReadError("xb_stream_read_chunk(): invalid checksum at offset 0x4c245: expected 0x2844e6fd, read 0x5032816a.")).toBe(true);
    expect(isStreamReadError("xb_stream_read_chunk(): wrong chunk magic at offset 0x0.")).toBe(true);
    expect(isStreamReadError("my_write() failed: No space left on device")).toBe(false);
  });
});

describe("files in the restored data", () => {
  it("reads xtrabackup_binlog_info and xtrabackup_slave_info", () => {
    expect(parseBinlogInfo("mysql-bin.000001\t20015\t0-1-37\n")).toEqual({ file: "mysql-bin.000001", position: 20015, gtid: "0-1-37" });
    expect(parseBinlogInfo("mysql-bin.000001\t20015\n")).toEqual({ file: "mysql-bin.000001", position: 20015 });
    expect(parseBinlogInfo("")).toBeUndefined();
    expect(parseSlaveInfo("SET GLOBAL gtid_slave_pos = '0-1-37';\nCHANGE MASTER TO master_use_gtid = slave_pos;\n")).toEqual({ coordinates: { gtid: "0-1-37" }, otherConnections: [] });
    expect(parseSlaveInfo("CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=20015;\n")).toEqual({
      coordinates: { file: "mysql-bin.000001", position: 20015 },
      otherConnections: [],
    });
    expect(parseSlaveInfo("CHANGE MASTER 'm2' TO MASTER_LOG_FILE='b.000001', MASTER_LOG_POS=4;\n")).toEqual({ coordinates: undefined, otherConnections: ["m2"] });
  });

  it("reads the InnoDB layout from backup-my.cnf", () => {
    const cnf = [
      "# This options file was generated by innobackupex.",
      "",
      "# The server",
      "[mysqld]",
      "innodb_checksum_algorithm=crc32",
      "innodb_data_file_path=ibdata1:12M:autoextend",
      "innodb_log_file_size=50331648",
      "innodb_page_size=16384",
      "innodb_undo_directory=./",
      "innodb_undo_tablespaces=0",
      "innodb_compression_level=6",
    ].join("\n");
    expect(parseBackupMyCnf(cnf)).toEqual({
      innodb_data_file_path: "ibdata1:12M:autoextend",
      innodb_log_file_size: "50331648",
      innodb_page_size: "16384",
      innodb_undo_tablespaces: "0",
    });
  });

  it("gives the position in the manifest's terms: a master's own, a slave's master's", () => {
    const w: string[] = [];
    expect(positionFromInfo(manifest("master", { role: "master", file: "mysql-bin.000001", position: 20015, gtid: "0-1-37", sourceServerId: 2 }), "mysql-bin.000001\t20015\t0-1-37\n", undefined, w)).toEqual({
      role: "master",
      file: "mysql-bin.000001",
      position: 20015,
      gtid: "0-1-37",
      sourceServerId: 2,
    });
    const slaveManifest = manifest("slave", { role: "slave", gtid: "0-1-37", masterHost: "db-0", masterPort: 3306, sourceServerId: 1 });
    expect(positionFromInfo(slaveManifest, "mysql-bin.000001\t19897\t0-1-37\n", "SET GLOBAL gtid_slave_pos = '0-1-37';\nCHANGE MASTER TO master_use_gtid = slave_pos;\n", w)).toEqual({
      role: "slave",
      gtid: "0-1-37",
      masterHost: "db-0",
      masterPort: 3306,
      sourceServerId: 1,
    });
    expect(positionFromInfo(slaveManifest, "mysql-bin.000001\t19897\t0-1-37\n", undefined, w)).toBeUndefined();
    expect(positionFromInfo(manifest("master"), undefined, undefined, w)).toBeUndefined();
    expect(w).toEqual([]);
  });

  it("recognises a source's replication state files, and nothing else", () => {
    for (const n of ["master.info", "relay-log.info", "multi-master.info", "master-m2.info", "mysqld-relay-bin.000002", "db-0-relay-bin.index", "mysql-bin.000001", "mysql-bin.index"]) {
      expect(isReplicationStateFile(n), n).toBe(true);
    }
    for (const n of ["ibdata1", "ib_logfile0", "aria_log.00000001", "aria_log_control", "shop", "xtrabackup_binlog_info", "backup-my.cnf", "mysql"]) {
      expect(isReplicationStateFile(n), n).toBe(false);
    }
  });
});

describe("slavePosition", () => {
  it("records the master's coordinates and which master", () => {
    expect(slavePosition({ coordinates: { gtid: "0-1-37" }, otherConnections: [] }, { host: "db-0", port: 3306, serverId: 1 })).toEqual({
      role: "slave",
      gtid: "0-1-37",
      masterHost: "db-0",
      masterPort: 3306,
      sourceServerId: 1,
    });
    expect(slavePosition({ coordinates: undefined, otherConnections: [] }, {})).toBeUndefined();
  });
});

describe("the replica configuration", () => {
  const master = { engine: "mysql" as const, host: "db-0.db", port: 3306, user: "repl", password: "s'cret" };
  const esc = (v: string): string => `'${v.replace(/'/g, "\\'")}'`;

  it("uses GTID when the backup has one, else the binlog file and position", () => {
    expect(replicaStatements(master, { role: "master", gtid: "0-1-37", file: "mysql-bin.000001", position: 20015 }, esc)).toEqual([
      "RESET SLAVE ALL",
      "SET GLOBAL gtid_slave_pos = '0-1-37'",
      "CHANGE MASTER TO MASTER_HOST='db-0.db', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD='s\\'cret', MASTER_CONNECT_RETRY=5, MASTER_USE_GTID=slave_pos",
    ]);
    expect(replicaStatements(master, { role: "slave", file: "mysql-bin.000001", position: 20015 }, esc)[1]).toBe(
      "CHANGE MASTER TO MASTER_HOST='db-0.db', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD='s\\'cret', MASTER_CONNECT_RETRY=5, MASTER_LOG_FILE='mysql-bin.000001', MASTER_LOG_POS=20015, MASTER_USE_GTID=no",
    );
    expect(() => replicaStatements(master, { role: "master" }, esc)).toThrow("no replication position");
  });

  it("runs the temporary server closed to the world, with the backup's InnoDB layout", () => {
    const args = buildSeedServerArgs({ datadir: "/data", tmp: "/tmp/s", layout: { innodb_page_size: "32768" }, runAsUser: "root", extra: ["--plugin-load-add=file_key_management"] });
    expect(args[0]).toBe("--no-defaults");
    expect(args).toEqual(
      expect.arrayContaining([
        "--datadir=/data",
        "--socket=/tmp/s/s.sock",
        "--skip-networking",
        "--skip-grant-tables",
        "--skip-slave-start",
        "--event-scheduler=DISABLED",
        "--relay-log=/tmp/s/relay-bin",
        "--relay-log-info-file=/tmp/s/relay-log.info",
        "--innodb_page_size=32768",
        "--user=root",
        "--plugin-load-add=file_key_management",
      ]),
    );
    expect(buildSeedServerArgs({ datadir: "/data", tmp: "/tmp/s", layout: {}, runAsUser: undefined, extra: [] }).some((a) => a.startsWith("--user"))).toBe(false);
  });
});

describe("missingPrivileges", () => {
  it("groups what mariabackup says it is missing by where", () => {
    expect(
      missingPrivileges([
        "[00] 2026-11-25 01:26:01 Error: missing required privilege RELOAD on *.*",
        "[00] 2026-11-25 01:26:01 Error: missing required privilege PROCESS on *.*",
        "[00] 2026-11-25 01:26:01 Error: missing required privilege RELOAD on *.*",
        "[00] 2026-11-25 01:26:01 something else",
      ]),
    ).toEqual([{ grant: "RELOAD, PROCESS", on: "*.*" }]);
  });
});
