import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { commandRunner, startPlugin } from "./runner.js";

let dir: string;
beforeAll(async () => { dir = await mkdtemp(path.join(tmpdir(), "runner-test-")); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

describe("a plugin's environment", () => {
  it("holds the contract variables the agent passes, and none of the agent's secrets", async () => {
    const plugin = path.join(dir, "env-plugin");
    await writeFile(plugin, "#!/bin/sh\nenv\n");
    await chmod(plugin, 0o755);
    const before = { ...process.env };
    Object.assign(process.env, {
      REPLICATOR_DB_PASSWORD: "s3cret-db",
      REPLICATOR_REPLICATION_PASSWORD: "s3cret-repl",
      AWS_SECRET_ACCESS_KEY: "s3cret-aws",
      AWS_SESSION_TOKEN: "s3cret-token",
      PGPASSWORD: "s3cret-pg",
    });
    try {
      const p = startPlugin(commandRunner(plugin), "backup", {
        env: { REPLICATOR_CONTRACT: "1", REPLICATOR_DB_DEFAULTS_FILE: "/run/x/db.cnf" },
        mounts: [],
        stdin: "ignore",
        stdout: "pipe",
      }, {});
      const chunks: Buffer[] = [];
      p.stdout?.on("data", (c: Buffer) => chunks.push(c));
      const exit = await p.exit;
      expect(exit.code).toBe(0);
      const out = Buffer.concat(chunks).toString("utf8");
      expect(out).not.toContain("s3cret");
      expect(out).toContain("REPLICATOR_CONTRACT=1");
      expect(out).toContain("REPLICATOR_DB_DEFAULTS_FILE=/run/x/db.cnf");
      expect(out).toMatch(/^PATH=/m);
    } finally {
      process.env = before;
    }
  });
});
