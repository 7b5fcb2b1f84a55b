import path from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";

const root = path.resolve(import.meta.dirname, "../..");
const run = (body: string) =>
  execa(path.join(root, "node_modules/.bin/tsx"), ["-e", `import { failIfUnsettled } from "./src/lib/unsettled.ts";\n${body}`], { cwd: root, reject: false });

describe("failIfUnsettled", () => {
  it("a main promise that never settles, with nothing left to run: exit 1 and one line, not Node's silent 0", async () => {
    const r = await run(`failIfUnsettled(new Promise(() => {}), "replicator");`);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([
      "replicator: internal error: the command stopped before it finished (it waited for something that can no longer happen); what it did is not complete",
    ]);
  });

  it("a settled main leaves the exit code as it is (0, or the command's own)", async () => {
    const ok = await run(`failIfUnsettled(Promise.resolve(0), "replicator");`);
    expect([ok.exitCode, ok.stderr]).toEqual([0, ""]);
    const two = await run(`const p = Promise.resolve(2); failIfUnsettled(p, "replicator"); p.then((c) => { process.exitCode = c; });`);
    expect([two.exitCode, two.stderr]).toEqual([2, ""]);
    const failed = await run(`const p = Promise.reject(new Error("x")); failIfUnsettled(p, "replicator"); p.catch(() => { process.exitCode = 1; });`);
    expect([failed.exitCode, failed.stderr]).toEqual([1, ""]);
  });
});
