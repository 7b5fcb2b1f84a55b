import { describe, expect, it } from "vitest";
import { detectFlavour, mapDbError, mysqlUnsupported } from "./connection.js";
import type { Endpoint } from "./endpoint.js";

describe("detectFlavour", () => {
  it("knows MariaDB by its version, its comment, or its MySQL-compat prefix", () => {
    expect(detectFlavour("10.11.19-MariaDB-0+deb12u1", "Debian 12")).toBe("mariadb");
    expect(detectFlavour("11.4.2-MariaDB", "mariadb.org binary distribution")).toBe("mariadb");
    expect(detectFlavour("10.6.18", "MariaDB Server")).toBe("mariadb");
    expect(detectFlavour("5.5.5-10.11.19-MariaDB-0+deb12u1")).toBe("mariadb");
    expect(detectFlavour("5.5.5-10.11.6")).toBe("mariadb");
    expect(detectFlavour("5.5.5-11.4.2")).toBe("mariadb");
  });
  it("takes MySQL and Percona Server for MySQL", () => {
    expect(detectFlavour("8.0.40", "MySQL Community Server - GPL")).toBe("mysql");
    expect(detectFlavour("8.4.3", "MySQL Community Server - GPL")).toBe("mysql");
    expect(detectFlavour("8.0.36-28", "Percona Server (GPL), Release 28, Revision 47601f19")).toBe("mysql");
    expect(detectFlavour("5.7.44-log", "")).toBe("mysql");
    expect(detectFlavour("5.5.5", "")).toBe("mysql");
  });
});

describe("mysqlUnsupported", () => {
  const e: Endpoint = { engine: "mysql", host: "db.example", port: 3306, user: "backup" } as Endpoint;
  it("is one line with the endpoint, the version and the fix", () => {
    const err = mysqlUnsupported(e, "8.0.40", "MySQL Community Server - GPL");
    expect(err.reason).toBe("MySqlUnsupported");
    expect(err.kind).toBe("BadInput");
    expect(err.message).toBe(
      "db.example:3306 runs MySQL 8.0.40; this release supports MariaDB only (MySQL is not tested: no MySQL server in our CI); use MariaDB, or back up with a plugin (docs/plugins.md)",
    );
    expect(mysqlUnsupported(e, "8.0.36-28", "Percona Server (GPL), Release 28").message).toContain("runs Percona Server 8.0.36-28;");
  });
});

describe("mapDbError", () => {
  const e: Endpoint = { engine: "mysql", host: "db", port: 3306, user: "ops", password: undefined };
  it("names the missing privilege and the GRANT", () => {
    const err = mapDbError(
      { code: "ER_SPECIFIC_ACCESS_DENIED_ERROR", sqlMessage: "Access denied; you need (at least one of) the SUPER, REPLICATION SLAVE ADMIN privilege(s) for this operation" },
      e,
      "stop replication on the target",
    );
    expect(err.reason).toBe("MissingPrivilege");
    expect(err.message).toBe(
      "user 'ops'@'%' lacks the REPLICATION SLAVE ADMIN privilege on db:3306, needed to stop replication on the target (Access denied; you need (at least one of) the SUPER, REPLICATION SLAVE ADMIN privilege(s) for this operation): GRANT REPLICATION SLAVE ADMIN ON *.* TO 'ops'@'%'",
    );
  });
});
