import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { failed, isReplicatorError } from "./errors.js";
import { feedChild, outputOf } from "./child-streams.js";
import { spawnTool } from "./exec.js";

let dir: string;
beforeAll(async () => { dir = await mkdtemp(path.join(tmpdir(), "child-streams-")); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

async function readAll(r: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

describe("outputOf", () => {
  it("hands on the whole output of a tool that exits 0", async () => {
    const { stream, done } = outputOf(spawnTool("seq", ["1", "3"], { what: "count" }));
    expect(await readAll(stream)).toBe("1\n2\n3\n");
    await done;
  });

  it("never ends cleanly when the tool fails after writing: the stream fails with the tool's error", async () => {
    const child = spawnTool("sh", ["-c", "echo partial; echo 'disk on fire' >&2; exit 2"], { what: "dump the source" });
    const { stream, done } = outputOf(child);
    const err = await readAll(stream).then(() => undefined, (e: unknown) => e);
    expect(isReplicatorError(err) && err.message).toBe("sh failed to dump the source (exit code 2): disk on fire");
    await expect(done).rejects.toThrow("disk on fire");
  });
});

describe("feedChild", () => {
  // A loader that commits (writes `committed`) only when its input ends.
  const loader = (name: string) => spawnTool("sh", ["-c", `cat > ${path.join(dir, `${name}.in`)} && echo ok > ${path.join(dir, `${name}.committed`)}`], {
    what: "load the dump",
    stdin: "pipe",
    stdout: "ignore",
  });

  it("feeds the whole input and waits for the loader", async () => {
    await feedChild(loader("whole"), Readable.from([Buffer.from("a"), Buffer.from("b")]));
    expect(await readFile(path.join(dir, "whole.in"), "utf8")).toBe("ab");
    expect(existsSync(path.join(dir, "whole.committed"))).toBe(true);
  });

  it("kills the loader before it sees an end when the input fails, and the corrupt input is the answer", async () => {
    async function* corrupt(): AsyncGenerator<Buffer> {
      yield Buffer.from("half a dump");
      await new Promise((r) => setTimeout(r, 50));
      throw failed("CorruptBackup", "backup b1 does not match its checksum");
    }
    const err = await feedChild(loader("cut"), corrupt()).then(() => undefined, (e: unknown) => e);
    expect(isReplicatorError(err) && err.reason).toBe("CorruptBackup");
    expect(existsSync(path.join(dir, "cut.committed"))).toBe(false);
  });

  it("reports the loader's own failure, mapped, over the broken pipe it caused", async () => {
    const child = spawnTool("sh", ["-c", "echo 'ERROR 1064: syntax' >&2; exit 1"], { what: "load the dump", stdin: "pipe", stdout: "ignore" });
    const input = Readable.from((function* () { for (let i = 0; i < 64; i++) yield Buffer.alloc(1024 * 1024); })());
    const err = await feedChild(child, input, (e) => failed("LoadFailed", `mapped: ${(e as Error).message}`)).then(() => undefined, (e: unknown) => e);
    expect(isReplicatorError(err) && err.message).toBe("mapped: sh failed to load the dump (exit code 1): ERROR 1064: syntax");
  });
});
