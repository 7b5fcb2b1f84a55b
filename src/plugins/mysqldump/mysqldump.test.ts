import { describe, expect, it } from "vitest";
import { buildDumpArgs, decideLockMode, parseDumpPosition, parseMysqldumpOptions } from "./index.js";

describe("decideLockMode", () => {
  it("uses a single transaction only when every table is transactional", () => {
    expect(decideLockMode("auto", [])).toBe("single-transaction");
    expect(decideLockMode("auto", ["shop.legacy (MyISAM)"])).toBe("ftwrl");
    expect(decideLockMode("single-transaction", ["shop.legacy (MyISAM)"])).toBe("single-transaction");
    expect(decideLockMode("ftwrl", [])).toBe("ftwrl");
  });
});

describe("buildDumpArgs", () => {
  const base = { defaultsFile: "/tmp/x/client.cnf", connArgs: ["--host=db", "--port=3306", "--protocol=TCP"], users: false, databases: undefined };

  it("puts the credentials file first and records the master's coordinates", () => {
    const args = buildDumpArgs({ ...base, lock: "single-transaction", role: "master" });
    expect(args[0]).toBe("--defaults-extra-file=/tmp/x/client.cnf");
    expect(args).toEqual(expect.arrayContaining(["--single-transaction", "--master-data=2", "--gtid", "--routines", "--events", "--triggers"]));
    expect(args).toEqual(expect.arrayContaining(["--all-databases", "--ignore-database=mysql", "--ignore-database=sys"]));
    expect(args.join(" ")).not.toMatch(/password/i);
  });

  it("does not ask a slave for its own binlog coordinates", () => {
    const args = buildDumpArgs({ ...base, lock: "ftwrl", role: "slave", databases: ["shop"] });
    expect(args).toContain("--lock-all-tables");
    expect(args).not.toContain("--master-data=2");
    expect(args.slice(-2)).toEqual(["--databases", "shop"]);
  });
});

describe("parseDumpPosition", () => {
  it("reads the coordinates mariadb-dump writes as comments", () => {
    const head = "-- CHANGE MASTER TO MASTER_USE_GTID=slave_pos;\n-- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000003', MASTER_LOG_POS=1489;\n";
    const tail = "-- SET GLOBAL gtid_slave_pos='0-1-7,1-2-3';\n";
    expect(parseDumpPosition(head, tail)).toEqual({ file: "mysql-bin.000003", position: 1489, gtid: "0-1-7,1-2-3" });
    expect(parseDumpPosition("no header", "")).toEqual({});
  });
});

describe("parseMysqldumpOptions", () => {
  it("names the bad option", () => {
    expect(() => parseMysqldumpOptions({ lock: "table" })).toThrow('--lock must be auto, single-transaction or ftwrl (got "table")');
    expect(() => parseMysqldumpOptions({ databases: "shop,mysql" })).toThrow("databases may not include system schemas (mysql)");
    expect(parseMysqldumpOptions({ databases: "a, b" }).databases).toEqual(["a", "b"]);
  });
});
