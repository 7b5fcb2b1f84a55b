import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { failed } from "../../lib/errors.js";
import { buildLoadArgs, buildPgDumpArgs, DUMP_COMPLETE, inOneTransaction, parsePgDumpOptions } from "./index.js";

async function collect(it: AsyncIterable<Buffer | string>): Promise<string> {
  let s = "";
  for await (const c of it) s += c.toString();
  return s;
}

describe("parsePgDumpOptions", () => {
  it("refuses the MySQL methods' options with what to do instead", () => {
    expect(() => parsePgDumpOptions({ databases: "a,b" })).toThrow(/one database: the one in the source URL/);
    expect(() => parsePgDumpOptions({ lock: "ftwrl" })).toThrow(/option lock does not apply to pg_dump/);
    expect(() => parsePgDumpOptions({ users: true })).toThrow(/roles are cluster-wide/);
    expect(() => parsePgDumpOptions({ noOwner: "yes" })).toThrow(/noOwner must be true or false/);
    expect(parsePgDumpOptions({ users: false, noOwner: "true" })).toEqual({ noOwner: true, dumpCommand: "pg_dump", clientCommand: "psql" });
  });
});

describe("arguments", () => {
  it("dumps plain SQL that replaces what it holds, leaves out the restore sentinel, and carries no password", () => {
    const args = buildPgDumpArgs({ noOwner: false });
    expect(args).toEqual(["--format=plain", "--clean", "--if-exists", "--no-password", "--exclude-schema=_replicator_restore_in_progress"]);
    expect(buildPgDumpArgs({ noOwner: true })).toEqual(expect.arrayContaining(["--no-owner", "--no-privileges"]));
    expect(buildLoadArgs()).toEqual(["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]);
  });
});

describe("inOneTransaction", () => {
  it("commits a complete dump", async () => {
    const dump = `SET x = 1;\nCREATE TABLE t ();\n--\n${DUMP_COMPLETE}\n--\n\n\\unrestrict abc\n`;
    const out = await collect(inOneTransaction(Readable.from([Buffer.from(dump)]), "b1"));
    expect(out).toBe(`BEGIN;\n${dump}\nCOMMIT;\n`);
  });

  it("never writes COMMIT for a dump without pg_dump's completion line", async () => {
    const seen: string[] = [];
    const gen = inOneTransaction(Readable.from([Buffer.from("BEGIN;\nCREATE TABLE t ();\nCOPY t FROM stdin;\n1\n")]), "b1");
    await expect(async () => { for await (const c of gen) seen.push(c.toString()); }).rejects.toThrow(
      "backup b1 does not end with pg_dump's completion line: the dump is incomplete; nothing was committed",
    );
    expect(seen.join("")).not.toContain("COMMIT");
  });

  it("never writes COMMIT when the input fails, and passes its error on", async () => {
    const seen: string[] = [];
    const input = new Readable({ read() { /* pushed below */ } });
    input.push(Buffer.from(`CREATE TABLE t ();\n${DUMP_COMPLETE}\n`));
    setImmediate(() => input.destroy(failed("CorruptBackup", "the stored object is corrupt")));
    await expect(async () => { for await (const c of inOneTransaction(input, "b1")) seen.push(c.toString()); }).rejects.toThrow("the stored object is corrupt");
    expect(seen.join("")).not.toContain("COMMIT");
  });
});
