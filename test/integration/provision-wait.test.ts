// `replicator provision` while it waits for the operator's plan: an init
// container that holds a pod back must say what it waits for, at once and
// then periodically, at the CLI's default log level (warn), which used to
// leave it silent.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { runProvision } from "../../src/agent/provision.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("replicator provision, waiting for a plan", () => {
  it("logs what it waits for at once and periodically, then the plan it got", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "provision-wait-"));
    dirs.push(dir);
    const datadir = path.join(dir, "data");
    const planFile = path.join(dir, "plan");
    const lines: { msg: string; planFile?: string; waitedSeconds?: number; action?: string }[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split("\n").filter(Boolean)) lines.push(JSON.parse(l) as (typeof lines)[number]);
        cb();
      },
    });
    // The CLI's default level.
    const log = pino({ level: "warn" }, sink);
    const planned = setTimeout(() => void writeFile(planFile, JSON.stringify({ action: "none", reason: "the master" })), 1_500);
    try {
      const r = await runProvision({
        datadir,
        planFile,
        timeoutMs: 60_000,
        masterFrom: () => {
          throw new Error("no restore in this test");
        },
        s3: {},
        log,
        signal: new AbortController().signal,
        pollMs: 100,
        noteEveryMs: 500,
      });
      expect(r).toMatchObject({ action: "skipped", reason: "the master" });
    } finally {
      clearTimeout(planned);
    }
    const waiting = lines.filter((l) => l.msg.startsWith("the data directory is empty: waiting for the operator's provision plan"));
    expect(waiting.length).toBeGreaterThanOrEqual(2);
    expect(waiting[0]).toMatchObject({ planFile, waitedSeconds: 0 });
    expect(waiting[0]?.msg).toContain("replicator.dev/provision-plan");
    expect(waiting[0]?.msg).toContain("kubectl describe pod");
    expect(lines.some((l) => l.msg === "provision plan received" && l.action === "none")).toBe(true);
  });
});
