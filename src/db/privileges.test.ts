import { describe, expect, it } from "vitest";
import { asBackupPrivilegeError, findPrivilegeProblem, privilegeToGrant, quoteAccount } from "./privileges.js";
import { runningThreads, stoppedBeforeWarning } from "./replication.js";
import { failed } from "../lib/errors.js";

describe("findPrivilegeProblem", () => {
  it("reads mariadb-dump's and the server's refusals", () => {
    expect(findPrivilegeProblem("mariadb-dump: Couldn't execute 'FLUSH /*!40101 LOCAL */ TABLES': Access denied; you need (at least one of) the RELOAD privilege(s) for this operation (1227)")).toEqual({
      grant: "RELOAD",
      on: "*.*",
      serverMessage: "Access denied; you need (at least one of) the RELOAD privilege(s) for this operation",
    });
    expect(findPrivilegeProblem("Access denied; you need (at least one of) the SUPER, BINLOG MONITOR privilege(s) for this operation")?.grant).toBe("BINLOG MONITOR");
    expect(findPrivilegeProblem("Access denied; you need (at least one of) the SUPER, SLAVE MONITOR privilege(s) for this operation")?.grant).toBe("SLAVE MONITOR");
    expect(findPrivilegeProblem("mariadb-dump: Got error: 1044: \"Access denied for user 'u'@'%' to database 'shop'\" when using LOCK TABLES")).toMatchObject({
      grant: "SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES",
      on: "`shop`.*",
    });
    expect(findPrivilegeProblem("mariadb-dump: Couldn't execute 'show create table `rich`': SHOW VIEW command denied to user 'u'@'127.0.0.1' for table `shop`.`rich` (1142)")).toMatchObject({
      grant: "SHOW VIEW",
      on: "`shop`.*",
    });
    expect(findPrivilegeProblem("mariadb-dump: Got error: 2013: Lost connection")).toBeUndefined();
  });
  it("grants the narrowest privilege named", () => {
    expect(privilegeToGrant(["SUPER", "BINLOG ADMIN"])).toBe("BINLOG ADMIN");
    expect(privilegeToGrant(["SUPER"])).toBe("SUPER");
  });
  it("turns a CommandFailed with a refusal in its stderr into MissingPrivilege, and leaves other errors", () => {
    const err = failed("CommandFailed", "mariadb-dump failed to dump the source (exit code 2)", {
      detail: "mariadb-dump: Couldn't execute 'FLUSH /*!40101 LOCAL */ TABLES': Access denied; you need (at least one of) the RELOAD privilege(s) for this operation (1227)",
    });
    const mapped = asBackupPrivilegeError(err, quoteAccount("bk@10.0.0.%"), "db:3306", "dump the source");
    expect(mapped).toMatchObject({ reason: "MissingPrivilege", kind: "BadInput" });
    expect((mapped as Error).message).toBe(
      "backup user 'bk'@'10.0.0.%' lacks the RELOAD privilege on db:3306, needed to dump the source (Access denied; you need (at least one of) the RELOAD privilege(s) for this operation): GRANT RELOAD ON *.* TO 'bk'@'10.0.0.%'",
    );
    const other = failed("CommandFailed", "mariadb-dump failed (exit code 2): Lost connection");
    expect(asBackupPrivilegeError(other, "'bk'@'%'", "db:3306", "dump the source")).toBe(other);
  });
});

describe("replication found stopped", () => {
  it("says which threads, and that they were left so", () => {
    expect(stoppedBeforeWarning("db:3306", { ioRunning: true, sqlRunning: true })).toBeUndefined();
    expect(stoppedBeforeWarning("db:3306", { ioRunning: false, sqlRunning: false })).toBe(
      "replication on db:3306 was already stopped before this backup (IO thread: No, SQL thread: No); it was left stopped — `replicator online` starts it",
    );
    expect(stoppedBeforeWarning("db:3306", { ioRunning: true, sqlRunning: false })).toMatch(/^the SQL thread of replication on db:3306 was already stopped/);
  });
  it("stops only running threads", () => {
    expect(runningThreads({ ioRunning: true, sqlRunning: false }, ["sql"])).toEqual([]);
    expect(runningThreads({ ioRunning: true, sqlRunning: true }, ["sql"])).toEqual(["sql"]);
  });
});
