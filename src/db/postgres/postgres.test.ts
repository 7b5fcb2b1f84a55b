import { describe, expect, it } from "vitest";
import { classifyPgError, errorLine, escapePassfileField, parseCsv, passfileLine, quoteIdent, quoteLiteral } from "./client.js";
import { buildConninfo, confLine, quoteConfValue, quoteConninfoValue } from "./conninfo.js";
import { formatLsn, parseLsn, timelineOfWalFile, walFileName } from "./wal.js";

const e = { user: "repl", host: "db-0", port: 5432, database: "app" };

describe("password file", () => {
  it("escapes : and \\ and matches any host, port and database", () => {
    expect(escapePassfileField("a:b\\c")).toBe("a\\:b\\\\c");
    expect(passfileLine("app:user", "p:w\\'x y")).toBe("*:*:*:app\\:user:p\\:w\\\\'x y\n");
  });

  it("refuses a password it cannot hold", () => {
    expect(() => passfileLine("u", "two\nlines")).toThrow(/line break/);
  });
});

describe("classifyPgError: libpq's failures as one line that names the fix", () => {
  // Messages as psql 15 prints them.
  const cases: [string, string, RegExp][] = [
    [
      'psql: error: connection to server at "db-0" (10.0.0.1), port 5432 failed: FATAL:  password authentication failed for user "repl"\npassword retrieved from file "/tmp/x/pgpass"',
      "BadCredentials",
      /^PostgreSQL at db-0:5432 rejected the password of user "repl" \(connect\); check REPLICATOR_DB_PASSWORD or --password-file$/,
    ],
    ['psql: error: connection to server at "db-0", port 5432 failed: fe_sendauth: no password supplied', "BadCredentials", /wants a password for user "repl" .* and none was given/],
    ['psql: error: connection to server at "db-0", port 5432 failed: FATAL:  database "app" does not exist', "NoSuchDatabase", /has no database "app"/],
    ['psql: error: connection to server at "db-0", port 5432 failed: FATAL:  role "repl" does not exist', "BadCredentials", /has no user "repl"/],
    [
      'pg_basebackup: error: connection to server at "db-0", port 5432 failed: FATAL:  must be superuser or replication role to start walsender',
      "NoReplicationPrivilege",
      /ALTER ROLE "repl" REPLICATION/,
    ],
    [
      'psql: error: connection to server at "db-0", port 5432 failed: FATAL:  no pg_hba.conf entry for replication connection from host "10.0.0.9", user "repl", no encryption',
      "ReplicationNotAllowed",
      /no "host replication" line for user "repl"/,
    ],
    ['psql: error: connection to server at "db-0", port 5432 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "repl", database "app", no encryption', "AccessDenied", /pg_hba\.conf does not let user "repl"/],
    [
      'psql: error: connection to server at "db-0" (10.0.0.1), port 5432 failed: Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?',
      "Unreachable",
      /^cannot reach PostgreSQL at db-0:5432 \(connection refused\)/,
    ],
    ['psql: error: could not translate host name "db-0" to address: Name or service not known', "Unreachable", /\(unknown host\)/],
    ['psql: error: connection to server at "db-0", port 5432 failed: timeout expired', "Unreachable", /\(timed out\)/],
  ];
  for (const [stderr, reason, message] of cases) {
    it(`${reason}: ${message.source.slice(0, 50)}`, () => {
      const err = classifyPgError(stderr, e, "connect");
      expect(err?.reason).toBe(reason);
      expect(err?.message).toMatch(message);
      expect(err?.message).not.toContain("\n");
    });
  }

  it("names the replication password when that is the one that was wrong", () => {
    const err = classifyPgError('FATAL:  password authentication failed for user "repl"', e, "check", "REPLICATOR_REPLICATION_PASSWORD or --replication-password-file");
    expect(err?.kind).toBe("BadInput");
    expect(err?.message).toContain("check REPLICATOR_REPLICATION_PASSWORD or --replication-password-file");
  });

  it("leaves SQL errors alone", () => {
    expect(classifyPgError('psql:<stdin>:1: ERROR:  relation "x" does not exist', e, "query")).toBeUndefined();
  });
});

describe("errorLine", () => {
  it("picks the ERROR line, not the context psql prints after it", () => {
    expect(errorLine('psql:<stdin>:42: ERROR:  relation "kit.orders" already exists\nLINE 1: CREATE TABLE kit.orders (\n                     ^\n')).toBe(
      'psql:<stdin>:42: ERROR:  relation "kit.orders" already exists',
    );
    expect(errorLine("pg_dump: error: query failed\n")).toBe("pg_dump: error: query failed");
  });
});

describe("parseCsv (psql --csv)", () => {
  it("reads quoted fields with commas, quotes and newlines, and empty rows", () => {
    expect(parseCsv('1,"a\nb",,"q""x,y"\n2,x\n')).toEqual([
      ["1", "a\nb", "", 'q"x,y'],
      ["2", "x"],
    ]);
    expect(parseCsv("")).toEqual([]);
    expect(parseCsv("\n")).toEqual([[""]]);
    expect(parseCsv("t,f")).toEqual([["t", "f"]]);
  });
});

describe("SQL quoting", () => {
  it("doubles quotes in identifiers and literals", () => {
    expect(quoteIdent('we"ird')).toBe('"we""ird"');
    expect(quoteLiteral("O'Brien \\ x")).toBe("'O''Brien \\ x'");
  });
});

describe("conninfo and postgresql.conf quoting", () => {
  it("single-quotes conninfo values and backslash-escapes ' and \\", () => {
    expect(quoteConninfoValue("it's a \\path")).toBe("'it\\'s a \\\\path'");
    expect(buildConninfo([["host", "db-0"], ["port", 5432], ["password", undefined], ["user", "a b"]])).toBe("host='db-0' port='5432' user='a b'");
  });

  it("doubles ' and \\ in a configuration value, so the server reads the conninfo back unchanged", () => {
    expect(quoteConfValue("host='x' password='p\\'w'")).toBe("'host=''x'' password=''p\\\\''w'''");
    expect(confLine("primary_conninfo", "user='a'")).toBe("primary_conninfo = 'user=''a'''");
    expect(() => confLine("bad name", "x")).toThrow();
  });
});

describe("WAL locations", () => {
  it("parses and formats LSNs", () => {
    expect(parseLsn("0/3000028")).toBe(0x3000028n);
    expect(parseLsn("A/FF123456")).toBe((0xan << 32n) | 0xff123456n);
    expect(formatLsn(parseLsn("a/ff123456"))).toBe("A/FF123456");
    expect(() => parseLsn("3000028")).toThrow(/not a WAL location/);
  });

  it("names the segment that holds an LSN, as pg_walfile_name(lsn + 1) does", () => {
    const mb16 = 16 * 1024 * 1024;
    // Values checked against PostgreSQL 15.
    expect(walFileName(1, "0/2000100", mb16)).toBe("000000010000000000000002");
    expect(walFileName(1, "0/3000000", mb16)).toBe("000000010000000000000003");
    expect(walFileName(1, "0/2FFFFFF", mb16)).toBe("000000010000000000000002");
    expect(walFileName(1, "1/0", mb16)).toBe("000000010000000100000000");
    expect(walFileName(1, "A/FF123456", mb16)).toBe("000000010000000A000000FF");
    expect(walFileName(3, "0/2000100", 64 * 1024 * 1024)).toBe("000000030000000000000000");
    expect(timelineOfWalFile("0000000A0000000000000002")).toBe(10);
  });
});
