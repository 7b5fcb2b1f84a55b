import { describe, expect, it } from "vitest";
import { loadable, loadDataSql, preambleAllows, skippedRows } from "./rows.js";

const col = (t: string, c: string, type: string, extra = ""): { s: string; t: string; c: string; type: string; extra: string } => ({ s: "db", t, c, type, extra });

describe("loadable", () => {
  const columns = [
    col("plain", "id", "int"), col("plain", "name", "varchar"), col("plain", "at", "datetime"), col("plain", "blob", "longblob"),
    col("bits", "id", "int"), col("bits", "flags", "bit"),
    col("geo", "id", "int"), col("geo", "p", "point"),
    col("gen", "id", "int"), col("gen", "twice", "int", "STORED GENERATED"),
    col("hidden", "id", "int"), col("hidden", "h", "int", "INVISIBLE"),
    col("versioned", "id", "int"),
    col("odd", "id", "int"), col("odd", "v", "somefuturetype"),
    col("auto", "id", "bigint", "auto_increment"), col("auto", "ts", "timestamp", "on update current_timestamp()"),
  ];
  const names = ["plain", "bits", "geo", "gen", "hidden", "versioned", "odd", "auto", "missing"].map((table) => ({ db: "db", table }));

  it("takes a table only when every column's dump literal reads the same by LOAD DATA", () => {
    const got = loadable(names, columns, new Set(["db.versioned"]));
    expect([...got.keys()]).toEqual(["db.plain", "db.auto"]);
    expect(got.get("db.plain")?.columns).toEqual([
      { name: "id", binary: false }, { name: "name", binary: false }, { name: "at", binary: false }, { name: "blob", binary: true },
    ]);
  });
});

describe("loadDataSql", () => {
  it("reads the dump's row lines, binary columns through UNHEX of their 0x… text", () => {
    const sql = loadDataSql({ db: "d`b", table: "t", columns: [{ name: "id", binary: false }, { name: "b", binary: true }, { name: "c", binary: false }] });
    expect(sql).toBe(
      "LOAD DATA LOCAL INFILE 'rows' INTO TABLE `d``b`.`t` CHARACTER SET utf8mb4 FIELDS TERMINATED BY ',' OPTIONALLY ENCLOSED BY '\\'' " +
        "ESCAPED BY '\\\\' LINES STARTING BY '(' TERMINATED BY '),\\n' (`id`, @b1, `c`) SET `b` = UNHEX(SUBSTRING(@b1, 3))",
    );
  });
});

describe("preambleAllows", () => {
  const header = "/*!40101 SET NAMES utf8mb4 */;\n/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */;\n";
  it("wants the dump in utf8mb4 with backslash escapes", () => {
    expect(preambleAllows(header)).toBe(true);
    expect(preambleAllows(header.replace("utf8mb4", "latin1"))).toBe(false);
    expect(preambleAllows(header.replace("NO_AUTO_VALUE_ON_ZERO", "NO_AUTO_VALUE_ON_ZERO,NO_BACKSLASH_ESCAPES"))).toBe(false);
  });
});

describe("skippedRows", () => {
  it("reads LOAD DATA's info line", () => {
    expect(skippedRows("Records: 4000  Deleted: 0  Skipped: 1  Warnings: 1")).toBe(1);
    expect(skippedRows("Records: 4000  Deleted: 0  Skipped: 0  Warnings: 0")).toBe(0);
    expect(skippedRows("")).toBe(0);
  });
});
