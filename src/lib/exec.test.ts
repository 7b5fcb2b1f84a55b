import { describe, expect, it } from "vitest";
import { alive } from "../../test/harness/proc.js";
import { isReplicatorError, type ReplicatorError } from "./errors.js";
import { captureTool, childEnv, redactPasswords, spawnTool } from "./exec.js";

/** The error `p` rejects with (the test fails if it resolves). */
async function rejection(p: Promise<unknown>): Promise<ReplicatorError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  if (!isReplicatorError(err)) throw new Error(`expected a ReplicatorError, got ${String(err)}`);
  return err;
}

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

describe("spawnTool", () => {
  it("does not hand the agent's secrets to a child", async () => {
    const before = { ...process.env };
    process.env.REPLICATOR_DB_PASSWORD = "s3cret-db";
    process.env.AWS_SECRET_ACCESS_KEY = "s3cret-aws";
    try {
      const r = await captureTool("env", [], { what: "print the environment", env: { EXPLICIT: "yes" } });
      expect(r.exitCode).toBe(0);
      expect(r.stdout).not.toContain("s3cret");
      expect(r.stdout).toContain("EXPLICIT=yes");
      expect(r.stdout).toMatch(/^PATH=/m);
    } finally {
      process.env = before;
    }
  });

  it("puts the explicit variables over a caller's base environment instead of the allowlist", async () => {
    const r = await captureTool("/usr/bin/env", [], { what: "print the environment", baseEnv: { ONLY: "base", X: "1" }, env: { X: "2" } });
    expect(r.stdout.trim().split("\n").sort()).toEqual(["ONLY=base", "X=2"]);
  });

  it("fails with the command, the exit code and the last stderr line, the tail as detail", async () => {
    const child = spawnTool("sh", ["-c", "echo first >&2; echo 'the real reason' >&2; exit 3"], { what: "do the thing" });
    const err = await rejection(child.done);
    expect(err.reason).toBe("CommandFailed");
    expect(err.message).toBe("sh failed to do the thing (exit code 3): the real reason");
    expect(err.detail).toBe("first\nthe real reason");
    expect((await child.exit).exitCode).toBe(3);
  });

  it("summarizes a failure with the caller's line picker", async () => {
    const child = spawnTool("sh", ["-c", "echo 'ERROR: no such table' >&2; echo context >&2; exit 1"], {
      what: "load",
      summarize: (stderr) => stderr.split("\n").find((l) => l.startsWith("ERROR")) ?? "",
    });
    expect((await rejection(child.done)).message).toBe("sh failed to load (exit code 1): ERROR: no such table");
  });

  it("keeps only the tail of a chatty stderr", async () => {
    // 200,000 numbered lines, about 1.3 MB.
    const child = spawnTool("sh", ["-c", "seq 1 200000 >&2; exit 1"], { what: "chatter", stdout: "ignore", tailBytes: 1000 });
    const x = await child.exit;
    expect(x.stderr.length).toBeLessThanOrEqual(1000);
    expect(x.stderr.endsWith("199999\n200000\n")).toBe(true);
    expect(x.stderr).not.toContain("\n100000\n");
    expect((await rejection(child.done)).message).toBe("sh failed to chatter (exit code 1): 200000");
  });

  it("hands every stderr line to onLine, the last one even without a newline, before exit settles", async () => {
    const lines: string[] = [];
    const x = await spawnTool("sh", ["-c", "printf 'one\\ntwo\\n\\nthree' >&2"], { what: "talk", onLine: (l) => lines.push(l) }).exit;
    expect(x.exitCode).toBe(0);
    expect(lines).toEqual(["one", "two", "", "three"]);
  });

  it("redacts every stderr line before onLine, the tail and the error see it", async () => {
    const lines: string[] = [];
    const child = spawnTool("sh", ["-c", "echo \"GRANT ALL ON *.* TO 'bk'@'%' IDENTIFIED BY PASSWORD '*SECRETHASH'\" >&2; exit 1"], {
      what: "back up",
      redact: redactPasswords,
      onLine: (l) => lines.push(l),
    });
    const err = await rejection(child.done);
    const x = await child.exit;
    for (const text of [lines.join("\n"), x.stderr, err.message, err.detail ?? ""]) {
      expect(text).not.toContain("SECRETHASH");
      expect(text).toContain("IDENTIFIED BY [redacted]");
    }
  });

  it("says CommandNotFound, and how to fix it, for a tool that is not installed", async () => {
    const child = spawnTool("no-such-tool-here", [], { what: "compress the backup", notFoundHint: "install zstd" });
    const err = await rejection(child.done);
    expect(err.reason).toBe("CommandNotFound");
    expect(err.message).toBe("no-such-tool-here is not installed (needed to compress the backup); install zstd");
    const x = await child.exit;
    expect(x.notFound).toBe(true);
    expect(x.spawnError?.code).toBe("ENOENT");
  });

  it("stops the child when the signal aborts", async () => {
    const ac = new AbortController();
    const child = spawnTool("sleep", ["30"], { what: "wait", signal: ac.signal });
    ac.abort();
    const err = await rejection(child.done);
    expect(err.message).toBe("sleep failed to wait (cancelled)");
    const x = await child.exit;
    expect(x.canceled).toBe(true);
    expect(x.signal).toBe("SIGTERM");
  });

  it("stops a child that runs longer than its timeout, and says so", async () => {
    const x = await spawnTool("sleep", ["30"], { what: "wait", timeoutMs: 100 }).exit;
    expect(x.timedOut).toBe(true);
    expect(x.signal).toBe("SIGTERM");
  });

  it("kills the children a grouped child started", async () => {
    const child = spawnTool("sh", ["-c", "sleep 30 & echo $!; wait"], { what: "run a plugin", group: true });
    const pid = await new Promise<number>((resolve) => { child.stdout?.once("data", (c: Buffer) => { resolve(Number(c.toString().trim())); }); });
    expect(alive(pid)).toBe(true);
    child.kill();
    await child.exit;
    // The grandchild got the group's SIGTERM; it may take a moment to be reaped by init.
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    expect(alive(pid)).toBe(false);
  });

  it("leaves a broken stdin pipe to the child's exit: a tool that stops reading early and exits 0 succeeds", async () => {
    const child = spawnTool("true", [], { what: "read nothing", stdin: "pipe", stdout: "ignore" });
    const big = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 8; i++) child.stdin?.write(big);
    child.stdin?.end();
    await child.done;
    expect((await child.exit).exitCode).toBe(0);
  });

  it("captures a short tool's stdout from its input", async () => {
    const r = await captureTool("tr", ["a-z", "A-Z"], { what: "shout", input: "select 1;\n" });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe("SELECT 1;\n");
  });
});
