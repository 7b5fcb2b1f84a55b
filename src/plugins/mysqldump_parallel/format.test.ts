import { describe, expect, it } from "vitest";
import {
  encodeHeader,
  FRAME_DATA,
  FRAME_END,
  FRAME_PART_END,
  FRAME_UNIT,
  frameHeader,
  FrameReader,
  markersFor,
  parseQuotedName,
  UnitSplitter,
  type Plan,
  type Unit,
} from "./format.js";
import { chunkWheres, planParts } from "./plan.js";
import { includeUnit } from "./index.js";

const SCHEMA_SQL = [
  "/*M!999999\\- enable the sandbox mode */ ",
  "-- MariaDB dump 10.19",
  "/*!40101 SET NAMES utf8mb4 */;",
  "",
  "--",
  "-- Current Database: `shop`",
  "--",
  "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `shop`;",
  "USE `shop`;",
  "--",
  "-- Table structure for table `odd``name`",
  "--",
  "CREATE TABLE `odd``name` (id int);",
  "--",
  "-- WHERE:  id>=1",
  "-- Temporary table structure for view `v`",
  "CREATE VIEW `v` AS SELECT 1;",
  "-- Dump completed",
  "",
].join("\n");

/** Splits `sql` fed in pieces of `size` bytes; returns each unit and its text. */
function split(sql: string, size: number, kind: "schema" | "data", db?: string): { unit: Unit; text: string }[] {
  const units: { unit: Unit; text: string }[] = [];
  const s = new UnitSplitter(
    markersFor(kind),
    db,
    (index, unit) => { units[index] = { unit, text: "" }; },
    (index, bytes) => {
      const u = units[index];
      if (!u) throw new Error(`bytes for unit ${index} before it started`);
      u.text += bytes.toString("utf8");
    },
  );
  const buf = Buffer.from(sql, "utf8");
  for (let i = 0; i < buf.length; i += size) s.push(buf.subarray(i, i + size));
  s.end();
  return units;
}

describe("UnitSplitter", () => {
  it("cuts a schema dump at its section comments, whatever the chunk size, losing and repeating no byte", () => {
    for (const size of [1, 2, 3, 7, 31, 4096]) {
      const units = split(SCHEMA_SQL, size, "schema");
      expect(units.map((u) => u.text).join("")).toBe(SCHEMA_SQL);
      expect(units.map((u) => u.unit)).toEqual([
        { kind: "preamble" },
        { kind: "db", db: "shop" },
        { kind: "table", db: "shop", name: "odd`name" },
        { kind: "view", db: "shop", name: "v" },
      ]);
      expect(units[2]?.text.startsWith("-- Table structure for table `odd``name`\n")).toBe(true);
    }
  });

  it("tags a data part's units with its database", () => {
    const sql = "SET x;\n--\n-- Dumping data for table `a`\n--\nINSERT INTO `a` VALUES (1,'-- Dumping data for table `b`');\n--\n-- Dumping data for table `c`\n";
    const units = split(sql, 5, "data", "db1");
    expect(units.map((u) => u.unit)).toEqual([{ kind: "preamble", db: "db1" }, { kind: "data", db: "db1", name: "a" }, { kind: "data", db: "db1", name: "c" }]);
    expect(units.map((u) => u.text).join("")).toBe(sql);
  });

  it("reads a quoted name up to its closing backtick", () => {
    expect(parseQuotedName(Buffer.from("a``b`\n"))).toBe("a`b");
    expect(parseQuotedName(Buffer.from("unterminated"))).toBeUndefined();
  });
});

describe("FrameReader", () => {
  const plan: Plan = { version: 1, databases: ["d"], parts: [{ id: 0, kind: "schema" }, { id: 1, kind: "data", db: "d", tables: ["t"] }, { id: 2, kind: "post" }] };
  const UNIT_JSON = Buffer.from(JSON.stringify({ kind: "preamble", db: "d" }));
  const stream = Buffer.concat([
    encodeHeader(plan),
    frameHeader(FRAME_UNIT, 1, 0, UNIT_JSON.length), UNIT_JSON,
    frameHeader(FRAME_DATA, 1, 0, 5), Buffer.from("hello"),
    frameHeader(FRAME_PART_END, 1, 0, 0),
    frameHeader(FRAME_END, 0, 0, 0),
  ]);

  async function read(bytes: Buffer, size: number): Promise<string[]> {
    const seen: string[] = [];
    const r = new FrameReader({
      header: (p) => { seen.push(`header ${p.parts.length}`); },
      unit: (part, i, u) => { seen.push(`unit ${part}/${i} ${u.kind}`); },
      data: (part, u, b) => { seen.push(`data ${part}/${u} ${b.toString()}`); },
      partEnd: (part) => { seen.push(`end ${part}`); },
      end: () => { seen.push("END"); },
    });
    for (let i = 0; i < bytes.length; i += size) await r.push(bytes.subarray(i, i + size));
    r.finish();
    return seen;
  }

  it("parses a stream cut anywhere", async () => {
    for (const size of [1, 3, 13, 1000]) {
      expect(await read(stream, size)).toEqual(["header 3", "unit 1/0 preamble", "data 1/0 hello", "end 1", "END"]);
    }
  });

  it("calls a stream without its end frame truncated, and one with another magic not this format", async () => {
    await expect(read(stream.subarray(0, stream.length - 13), 64)).rejects.toThrow(/truncated/);
    await expect(read(Buffer.concat([Buffer.from("-- MariaDB dump\n"), stream]), 64)).rejects.toThrow(/wrong magic/);
  });
});

describe("planParts", () => {
  it("cuts a table larger than a thread's share into key ranges and packs the rest per database", () => {
    const plan = planParts(["a", "b", "empty"], [
      { db: "a", name: "big", bytes: 800, pk: { column: "id", min: 1n, max: 1000n } },
      { db: "a", name: "s1", bytes: 50 },
      { db: "a", name: "s2", bytes: 40 },
      { db: "b", name: "s3", bytes: 110 },
    ], 4);
    expect(plan.parts[0]).toEqual({ id: 0, kind: "schema" });
    expect(plan.parts.at(-1)?.kind).toBe("post");
    const data = plan.parts.filter((p) => p.kind === "data");
    const chunks = data.filter((p) => p.where);
    expect(chunks.map((p) => p.where)).toEqual(["`id` < 251", "`id` >= 251 AND `id` < 501", "`id` >= 501 AND `id` < 751", "`id` >= 751"]);
    // Every table is dumped exactly once (a chunked one once per range).
    expect(data.filter((p) => !p.where).flatMap((p) => (p.tables ?? []).map((t) => `${p.db ?? ""}.${t}`)).sort()).toEqual(["a.s1", "a.s2", "b.s3"]);
    expect(new Set(plan.parts.map((p) => p.id)).size).toBe(plan.parts.length);
  });

  it("does not cut a table without an integer key, nor any with one thread", () => {
    expect(planParts(["a"], [{ db: "a", name: "big", bytes: 900 }, { db: "a", name: "s", bytes: 1 }], 4).parts.filter((p) => p.where)).toEqual([]);
    expect(planParts(["a"], [{ db: "a", name: "big", bytes: 900, pk: { column: "id", min: 1n, max: 9n } }], 1).parts.filter((p) => p.kind === "data")).toEqual([{ id: 1, kind: "data", db: "a", tables: ["big"] }]);
  });

  it("leaves no row out at the ends of the range", () => {
    const w = chunkWheres("k", 10n, 12n, 8);
    expect(w[0]).toBe("`k` < 11");
    expect(w.at(-1)).toBe("`k` >= 12");
  });
});

describe("includeUnit", () => {
  it("loads everything without a filter, one database's units with --databases, a table's structure and rows with --tables", () => {
    const t: Unit = { kind: "table", db: "a", name: "t" };
    expect(includeUnit("schema", t, {})).toBe(true);
    expect(includeUnit("schema", t, { databases: ["b"] })).toBe(false);
    expect(includeUnit("data", { kind: "data", db: "a", name: "t" }, { tables: ["a.t"] })).toBe(true);
    expect(includeUnit("data", { kind: "data", db: "a", name: "u" }, { tables: ["a.t"] })).toBe(false);
    expect(includeUnit("schema", { kind: "db", db: "a" }, { tables: ["a.t"] })).toBe(true);
    expect(includeUnit("schema", { kind: "view", db: "a", name: "v" }, { tables: ["a.t"] })).toBe(false);
    expect(includeUnit("post", { kind: "db", db: "a" }, { tables: ["a.t"] })).toBe(false);
    expect(includeUnit("post", { kind: "preamble" }, { tables: ["a.t"] })).toBe(true);
  });
});
