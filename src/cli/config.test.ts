import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { endpointFrom, parseConfig, resolveSettings } from "./config.js";

describe("parseConfig", () => {
  it("reads a full config", () => {
    const cfg = parseConfig(
      "cluster: prod\nrepository: s3://b/p\nsource: mysql://backup@db:3306\nretain: 7\ncompression: gzip\nmethodOptions:\n  lock: ftwrl\n",
      "replicator.yaml",
    );
    expect(cfg).toMatchObject({ cluster: "prod", retain: 7, compression: "gzip", methodOptions: { lock: "ftwrl" } });
  });

  it("names the key that is wrong", () => {
    expect(() => parseConfig("retain: zero\n", "r.yaml")).toThrow(/^r\.yaml: retain: /);
    expect(() => parseConfig("repo: s3://x\n", "r.yaml")).toThrow("r.yaml: unknown key(s) repo");
    expect(() => parseConfig("a: [", "r.yaml")).toThrow(/r\.yaml is not valid YAML/);
  });
});

describe("resolveSettings", () => {
  it("lets flags override the environment, and the environment override the file", () => {
    const cfg = { cluster: "file", repository: "file:///f", retain: 3 };
    const s = resolveSettings({ cluster: "flag" }, cfg, { REPLICATOR_CLUSTER: "env", REPLICATOR_REPOSITORY: "s3://env/x" });
    expect(s.cluster).toBe("flag");
    expect(s.repository).toBe("s3://env/x");
    expect(s.retain).toBe(3);
    expect(s.method).toBeUndefined(); // the engine's default is chosen by the command (mysqldump for mysql://)
    expect(s.compression).toBe("zstd");
  });

  it("reads passwords from env, or from a file relative to the config", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "cfg-"));
    writeFileSync(path.join(dir, "pw"), "from-file\n");
    const s = resolveSettings({}, { passwordFile: "pw" }, {}, path.join(dir, "replicator.yaml"));
    expect(s.dbPassword()).toBe("from-file");
    const e = resolveSettings({}, { passwordFile: "pw" }, { REPLICATOR_DB_PASSWORD: "from-env" }, path.join(dir, "replicator.yaml"));
    expect(e.dbPassword()).toBe("from-env");
    const missing = resolveSettings({}, { passwordFile: "nope" }, {}, path.join(dir, "replicator.yaml"));
    expect(() => missing.dbPassword()).toThrow(/cannot read password file .*nope: ENOENT/);
  });

  it("rejects a bad retain count with the rule", () => {
    expect(() => resolveSettings({ retain: "-1" }, {}, {})).toThrow('--retain must be a whole number >= 1 (got "-1")');
  });
});

describe("endpointFrom", () => {
  it("never takes a password from the URL", () => {
    expect(() => endpointFrom("mysql://root:secret@db:3306", "--source", undefined)).toThrow(/contains a password; remove it and set REPLICATOR_DB_PASSWORD/);
    // The replication user's password has its own variable: the message names it.
    expect(() => endpointFrom("mysql://repl:secret@db:3306", "--replicate-from", undefined)).toThrow(
      /--replicate-from URL contains a password; remove it and set REPLICATOR_REPLICATION_PASSWORD/,
    );
    expect(endpointFrom("mysql://backup@db", "--source", "pw")).toEqual({ engine: "mysql", host: "db", port: 3306, user: "backup", password: "pw", socket: undefined });
  });

  it("reads PostgreSQL endpoints with their database and defaults", () => {
    expect(endpointFrom("postgresql://repl@pg-0/app", "--source", "pw")).toEqual({
      engine: "postgresql", host: "pg-0", port: 5432, user: "repl", password: "pw", socket: undefined, database: "app",
    });
    expect(endpointFrom("postgres://pg-0:6543", "--source", undefined)).toMatchObject({ engine: "postgresql", port: 6543, user: "postgres", database: "postgres" });
    expect(() => endpointFrom("redis://x", "--source", undefined)).toThrow(/must start with mysql:\/\/ or postgresql:\/\//);
  });
});
