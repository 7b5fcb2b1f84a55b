import { mkdtempSync, writeFileSync, chmodSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { mysqlOptionFile, pgpassFile } from "./credentials.js";
import { inheritedEnv, isValidMethodName, lastLine, validateBackupResult, validateDatadirRestoreResult, validateInfo } from "./protocol.js";
import { findContainerEngine, looksLikeImage } from "./runner.js";

const info = { contract: 1, name: "mydumper", kind: "logical", engine: "mysql", restoreInto: "server", extension: "tar" };
const infoText = (o: Record<string, unknown>): string => JSON.stringify({ ...info, ...o });
const bad = (r: { ok: boolean; error?: string }): string => (r.ok ? "(valid)" : (r.error ?? ""));

describe("validateInfo", () => {
  it("accepts a valid info line, with optional version and description", () => {
    const r = validateInfo(`${infoText({ version: "1.2", description: "x" })}\n`, ["mysqldump"]);
    expect(r).toEqual({ ok: true, value: { ...info, version: "1.2", description: "x" } });
  });

  it("names what is wrong, in one line", () => {
    expect(bad(validateInfo(""))).toBe("it is empty");
    expect(bad(validateInfo("hello"))).toMatch(/^it is not JSON/);
    expect(bad(validateInfo(`starting\n${infoText({})}`))).toBe("expected one JSON object on one line, got 2 lines (logs go to stderr)");
    expect(bad(validateInfo(infoText({ contract: 2 })))).toBe("contract 2 is not supported by this agent (it speaks contract 1)");
    expect(bad(validateInfo(infoText({ contract: "1" })))).toBe('contract must be a number (got a string ("1"))');
    expect(bad(validateInfo(infoText({ kind: "snapshot" })))).toBe('kind must be one of "logical", "physical" (got a string ("snapshot"))');
    expect(bad(validateInfo(infoText({ restoreInto: undefined })))).toBe('restoreInto is missing (one of "server", "datadir")');
    expect(bad(validateInfo(infoText({ extension: ".tar" })))).toMatch(/^extension must be lower-case letters and digits, e.g. tar or xbstream \(no leading dot\)/);
    expect(bad(validateInfo(infoText({ nmae: "x" })))).toBe("the object has unknown field nmae (contract 1 has no such field; check the spelling)");
  });

  it("requires a name that goes into backup names unchanged, and not a built-in's", () => {
    expect(bad(validateInfo(infoText({ name: "My Dumper" })))).toBe(
      'name "My Dumper" is not a valid method name: use lower-case letters and digits with single "_" between words, at most 40 characters (e.g. "my_dumper")',
    );
    expect(bad(validateInfo(infoText({ name: "my-dumper" })))).toMatch(/e\.g\. "my_dumper"/);
    expect(bad(validateInfo(infoText({ name: "mysqldump" }), ["mysqldump"]))).toBe(
      'name "mysqldump" is taken by a built-in method; choose another, so backups say which made them',
    );
    expect(isValidMethodName("pg_basebackup")).toBe(true);
    expect(isValidMethodName("a__b")).toBe(false);
    expect(isValidMethodName("_a")).toBe(false);
  });
});

describe("validateBackupResult", () => {
  const ok = { role: "master", serverId: 1, version: "10.11.14-MariaDB", replication: { role: "master", gtid: "0-1-42", file: "mysql-bin.000001", position: 4242 } };
  const text = (o: Record<string, unknown>): string => JSON.stringify({ ...ok, ...o });

  it("accepts a result with a position, details and warnings", () => {
    const r = validateBackupResult(text({ details: { threads: 4 }, warnings: ["w"] }), "mysql");
    expect(r.ok).toBe(true);
    expect(validateBackupResult(JSON.stringify({ role: "standalone", serverId: 0, version: "x" }), "mysql").ok).toBe(true);
    expect(validateBackupResult(JSON.stringify({ role: "master", serverId: 1, version: "16.4", replication: { role: "master", lsn: "0/3000028", timeline: 1 } }), "postgresql").ok).toBe(true);
  });

  it("says which field is wrong and what it must be", () => {
    expect(bad(validateBackupResult(text({ replication: { ...ok.replication, position: "4242" } }), "mysql"))).toBe(
      'replication.position must be a number (got a string ("4242"))',
    );
    expect(bad(validateBackupResult(text({ replication: { ...ok.replication, position: 1.5 } }), "mysql"))).toBe("replication.position must be a whole number (got a fraction)");
    expect(bad(validateBackupResult(text({ serverId: -1 }), "mysql"))).toBe("serverId must be >= 0 (got a number)");
    expect(bad(validateBackupResult(text({ role: "primary" }), "mysql"))).toBe('role must be one of "master", "slave", "standalone" (got a string ("primary"))');
    expect(bad(validateBackupResult(text({ version: undefined }), "mysql"))).toBe("version is missing");
    expect(bad(validateBackupResult(text({ replicaton: {} }), "mysql"))).toBe("the object has unknown field replicaton (contract 1 has no such field; check the spelling)");
    expect(bad(validateBackupResult(text({ replication: { ...ok.replication, binlog: "x" } }), "mysql"))).toBe(
      "replication has unknown field binlog (contract 1 has no such field; check the spelling)",
    );
    expect(bad(validateBackupResult(text({ warnings: "w" }), "mysql"))).toBe('warnings must be an array (got a string ("w"))');
    expect(bad(validateBackupResult("[]", "mysql"))).toBe("the object must be an object (got an array)");
  });

  it("checks that the position is usable for the engine", () => {
    expect(bad(validateBackupResult(text({ replication: { role: "master", file: "mysql-bin.000001" } }), "mysql"))).toBe(
      "replication.file needs replication.position (the binlog offset)",
    );
    expect(bad(validateBackupResult(text({ replication: { role: "master" } }), "mysql"))).toMatch(/^replication must hold gtid, or file and position/);
    expect(bad(validateBackupResult(text({ replication: { role: "master", lsn: "0/1" } }), "mysql"))).toMatch(/^replication.lsn and replication.timeline are for postgresql/);
    expect(bad(validateBackupResult(text({ replication: { role: "master", lsn: "3000028" } }), "postgresql"))).toBe('replication.lsn must look like "0/3000028" (got "3000028")');
    expect(bad(validateBackupResult(text({ replication: { ...ok.replication, role: "slave" } }), "mysql"))).toMatch(/^role is master but replication.role is slave/);
  });

  it("validates a datadir restore's optional result", () => {
    expect(validateDatadirRestoreResult(JSON.stringify({ warnings: [] }), "mysql").ok).toBe(true);
    expect(bad(validateDatadirRestoreResult(JSON.stringify({ replication: { role: "master", gtid: 5 } }), "mysql"))).toBe("replication.gtid must be a string (got a number)");
  });
});

describe("what a plugin inherits", () => {
  it("drops the agent's settings, storage credentials and anything named like a secret", () => {
    const env = inheritedEnv({
      PATH: "/bin",
      PWD: "/work",
      HOME: "/root",
      MYDUMPER_THREADS: "8",
      REPLICATOR_DB_PASSWORD: "s",
      REPLICATOR_DB_PASSWORD_FILE: "/f",
      REPLICATOR_REPOSITORY: "s3://x",
      AWS_ACCESS_KEY_ID: "a",
      AWS_SECRET_ACCESS_KEY: "s",
      MYSQL_PWD: "s",
      PGPASSWORD: "s",
      PGPASSFILE: "/f",
      GITHUB_TOKEN: "t",
      VAULT_SECRET: "v",
    });
    expect(env).toEqual({ PATH: "/bin", PWD: "/work", HOME: "/root", MYDUMPER_THREADS: "8" });
  });

  it("writes credentials files that tools read", () => {
    expect(mysqlOptionFile({ engine: "mysql", host: "db-0", port: 3307, user: "back\\up", password: 'p"w' })).toBe(
      '[client]\nuser="back\\\\up"\npassword="p\\"w"\nhost="db-0"\nport=3307\nprotocol=TCP\n',
    );
    expect(mysqlOptionFile({ engine: "mysql", host: "localhost", port: 3306, user: "u", password: undefined, socket: "/run/mysqld.sock" })).toBe(
      '[client]\nuser="u"\nsocket="/run/mysqld.sock"\n',
    );
    expect(pgpassFile({ engine: "postgresql", host: "pg", port: 5432, user: "u:x", password: "a\\b:c", database: "app" })).toBe("*:*:*:u\\:x:a\\\\b\\:c\n");
  });

  it("quotes the last stderr line, shortened", () => {
    expect(lastLine("a\nERROR 1045: Access denied\n\n")).toBe("ERROR 1045: Access denied");
    expect(lastLine("")).toBe("");
    expect(lastLine("x".repeat(500))).toHaveLength(401);
  });
});

describe("plugin commands and images", () => {
  it("treats anything with ':' or '/' that is not a path as an image", () => {
    expect(looksLikeImage("ghcr.io/acme/replicator-mydumper:1.0")).toBe(true);
    expect(looksLikeImage("acme/plugin")).toBe(true);
    expect(looksLikeImage("replicator-mydumper")).toBe(false);
    expect(looksLikeImage(tmpdir())).toBe(false);
  });

  it("finds docker or podman on PATH, or nothing", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "engine-"));
    mkdirSync(path.join(dir, "bin"));
    expect(findContainerEngine(path.join(dir, "bin"))).toBeUndefined();
    writeFileSync(path.join(dir, "bin", "podman"), "#!/bin/sh\n");
    chmodSync(path.join(dir, "bin", "podman"), 0o755);
    expect(findContainerEngine(`/nonexistent:${path.join(dir, "bin")}`)).toBe(path.join(dir, "bin", "podman"));
  });
});
