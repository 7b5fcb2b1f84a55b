import { createHash, randomBytes } from "node:crypto";
import { appendFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { followFile } from "./follow.js";

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("followFile", () => {
  it("reads every byte in order while the file grows, and the rest once the writer has ended", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "follow-"));
    const file = path.join(dir, "f");
    await writeFile(file, "");
    const parts = Array.from({ length: 12 }, (_, i) => randomBytes(1000 + i * 777));
    const writer = (async () => {
      for (const p of parts) {
        await appendFile(file, p);
        await sleep(5);
      }
      // The last bytes land after the follower last looked, just before the end.
      await appendFile(file, "tail");
    })();
    const got = createHash("sha256");
    let calls = 0;
    // A small buffer: reads of a part at a time, the buffer reused across them.
    const n = await followFile(file, writer, (b) => { got.update(b); calls++; }, { bufferSize: 4096, pollMs: 2 });
    expect(n).toBe(parts.reduce((s, p) => s + p.length, 0) + 4);
    expect(got.digest("hex")).toBe(createHash("sha256").update(Buffer.concat([...parts, Buffer.from("tail")])).digest("hex"));
    expect(calls).toBeGreaterThan(parts.length);
  });

  it("ends when the writer fails too, with what was written", async () => {
    dir = await mkdtemp(path.join(tmpdir(), "follow-"));
    const file = path.join(dir, "f");
    await writeFile(file, "abc");
    const failing = (async () => {
      await sleep(10);
      await appendFile(file, "def");
      throw new Error("writer failed");
    })();
    failing.catch(() => undefined);
    const seen: string[] = [];
    const n = await followFile(file, failing, (b) => { seen.push(b.toString()); }, { pollMs: 2 });
    expect(n).toBe(6);
    expect(seen.join("")).toBe("abcdef");
  });
});
