import { execa } from "execa";
import { existsSync, statSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll } from "vitest";
import { describe, expect, it } from "vitest";
import { makePrivateDir, parsePrivateDirName, privateDirsOf, sweepStalePrivateDirs, writeDefaultsFile } from "./defaults-file.js";

describe("parsePrivateDirName", () => {
  it("reads the owner pid from a private dir name", () => {
    expect(parsePrivateDirName("replicator-cred-1234-4026531836-aB3dE9")).toEqual({ prefix: "replicator-cred", pid: 1234, ns: "4026531836" });
    expect(parsePrivateDirName("replicator-plugin-77-1-zzzzzz")?.pid).toBe(77);
    expect(parsePrivateDirName("replicator-cred-aB3dE9")).toBeUndefined();
    expect(parsePrivateDirName("replicator-mariadb-template-abc")).toBeUndefined();
  });
});

let scratch: string;
beforeAll(async () => { scratch = await mkdtemp(path.join(tmpdir(), "defaults-file-test-")); });
afterAll(async () => { await rm(scratch, { recursive: true, force: true }); });

/** Run `body` as an ES module (node --import tsx, so it imports the TypeScript source) that has writeDefaultsFile in scope. */
async function script(name: string, body: string): Promise<string> {
  const file = path.join(scratch, `${name}.mts`);
  await writeFile(file, `import { writeDefaultsFile } from ${JSON.stringify(path.resolve(import.meta.dirname, "defaults-file.ts"))};\n${body}`);
  return file;
}

describe("writeDefaultsFile", () => {
  it("writes a 0600 file in a 0700 dir named after this process, and removes it", async () => {
    const f = await writeDefaultsFile({ engine: "mysql", host: "127.0.0.1", port: 3306, user: "u", password: 'p"w' } as never);
    const dir = path.dirname(f.path);
    expect(path.basename(dir)).toMatch(new RegExp(`^replicator-cred-${process.pid}-\\d+-`));
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(f.path).mode & 0o777).toBe(0o600);
    await f.cleanup();
    expect(existsSync(dir)).toBe(false);
  });

  it("a SIGKILLed process's dir is removed by the next use; a live process's is kept", async () => {
    const s = await script("killed", `
      const f = await writeDefaultsFile({ engine: "mysql", host: "h", port: 1, user: "u", password: "pw" });
      process.stdout.write(f.path + "\\n");
      setInterval(() => {}, 1000);
    `);
    const child = execa(process.execPath, ["--import", "tsx", s], { reject: false, buffer: false });
    const file = await new Promise<string>((resolve, reject) => {
      child.stdout.once("data", (d: Buffer) => { resolve(d.toString().trim()); });
      child.once("exit", () => { reject(new Error("child exited before writing its file")); });
    });
    expect(existsSync(file)).toBe(true);
    const pid = Number(/replicator-cred-(\d+)-/.exec(file)?.[1]);
    // While the owner lives, a sweep leaves its dir alone.
    const mine = await makePrivateDir();
    expect(existsSync(file)).toBe(true);
    await mine.remove();
    child.kill("SIGKILL");
    await child;
    expect(child.pid).toBe(pid);
    expect(existsSync(file)).toBe(true);
    const removed = sweepStalePrivateDirs();
    expect(removed).toContain(path.dirname(file));
    expect(existsSync(path.dirname(file))).toBe(false);
    expect(privateDirsOf(pid)).toEqual([]);
  });

  it("an exiting process removes the dirs it did not clean up", async () => {
    const s = await script("exits", `
      const f = await writeDefaultsFile({ engine: "mysql", host: "h", port: 1, user: "u", password: "pw" });
      process.stdout.write(f.path + "\\n");
      process.exit(3);
    `);
    const r = await execa(process.execPath, ["--import", "tsx", s], { reject: false });
    expect(r.exitCode).toBe(3);
    const file = r.stdout.trim();
    expect(file).toMatch(/replicator-cred-\d+-/);
    expect(existsSync(path.dirname(file))).toBe(false);
  });
});
