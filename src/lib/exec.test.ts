import { describe, expect, it } from "vitest";
import { childEnv, spawnStreaming } from "./exec.js";

describe("childEnv", () => {
  const parent = {
    PATH: "/usr/bin",
    HOME: "/home/a",
    LANG: "C.UTF-8",
    LC_ALL: "C",
    TZ: "UTC",
    TMPDIR: "/tmp",
    PGSSLMODE: "verify-full",
    REPLICATOR_DB_PASSWORD: "s3cret",
    REPLICATOR_REPLICATION_PASSWORD: "r3pl",
    REPLICATOR_REPOSITORY: "s3://b/p",
    AWS_SECRET_ACCESS_KEY: "k",
    AWS_SESSION_TOKEN: "t",
    AWS_ACCESS_KEY_ID: "id",
    PGPASSWORD: "pg",
    PGPASSFILE: "/x/pgpass",
    MYSQL_PWD: "m",
    SOMETHING_ELSE: "x",
  };
  it("keeps only the allowlist, then what the caller passes", () => {
    expect(childEnv({ PGHOST: "h", PGPASSFILE: "/run/pgpass" }, parent)).toEqual({
      PATH: "/usr/bin",
      HOME: "/home/a",
      LANG: "C.UTF-8",
      LC_ALL: "C",
      TZ: "UTC",
      TMPDIR: "/tmp",
      PGSSLMODE: "verify-full",
      PGHOST: "h",
      PGPASSFILE: "/run/pgpass",
    });
  });
});

describe("spawnStreaming", () => {
  it("does not hand the agent's secrets to a child", async () => {
    const before = { ...process.env };
    process.env.REPLICATOR_DB_PASSWORD = "s3cret-db";
    process.env.AWS_SECRET_ACCESS_KEY = "s3cret-aws";
    try {
      const child = spawnStreaming("env", [], { what: "print the environment", env: { EXPLICIT: "yes" } });
      const chunks: Buffer[] = [];
      child.stdout?.on("data", (c: Buffer) => chunks.push(c));
      await child.done;
      const out = Buffer.concat(chunks).toString("utf8");
      expect(out).not.toContain("s3cret");
      expect(out).toContain("EXPLICIT=yes");
      expect(out).toMatch(/^PATH=/m);
    } finally {
      process.env = before;
    }
  });
});
