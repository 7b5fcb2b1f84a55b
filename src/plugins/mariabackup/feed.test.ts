// feedMbstream against a real child that stops reading early and exits 0, as
// mbstream can when a damaged byte reads as the stream's end: the rest of the
// input is still read, so the verifying stream's sha256 verdict is the answer,
// and an early stop with an intact input is reported, never taken as success.
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import { failed } from "../../lib/errors.js";
import { runTool } from "./proc.js";
import { feedMbstream } from "./restore.js";

/** 8 MiB in 64 KiB chunks, then the end, or (`verdict`) an error as the verifying transform raises at its end. */
function input(verdict?: Error): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent < 128) {
        sent++;
        this.push(Buffer.alloc(64 * 1024, sent));
      } else if (verdict) {
        this.destroy(verdict);
      } else {
        this.push(null);
      }
    },
  });
}

/** A child that reads 100 bytes of its stdin and exits 0. */
const stopsEarly = () => runTool("sh", ["-c", "head -c 100 > /dev/null"], { what: "extract the backup stream", stdin: "pipe", stdout: "ignore" });

describe("feedMbstream", () => {
  it("reads on after the child exits 0 early, so a sha256 mismatch at the end is the verdict", async () => {
    const sha = failed("CorruptBackup", "c/20260101T000000Z/data.xbstream: sha256 mismatch; the stored object is corrupt");
    await expect(feedMbstream(input(sha), stopsEarly())).rejects.toBe(sha);
  });

  it("reports an early exit 0 on an intact input (what was extracted is not the whole backup)", async () => {
    await expect(feedMbstream(input(), stopsEarly())).resolves.toEqual({ stoppedEarly: true });
  });

  it("a child gone before a write (Node destroys its stdin on exit, without an error): no wait for a drain that cannot come; the verdict still wins", async () => {
    const sha = failed("CorruptBackup", "c/20260101T000000Z/data.xbstream: sha256 mismatch; the stored object is corrupt");
    const gone = runTool("sh", ["-c", "exit 0"], { what: "extract the backup stream", stdin: "pipe", stdout: "ignore" });
    await gone.done;
    expect(gone.stdin?.destroyed).toBe(true);
    // Before the fix this waited for a "drain" on the destroyed stdin forever: in the CLI, with nothing else
    // keeping the event loop alive, the process then ended silently with exit code 0.
    await expect(feedMbstream(input(sha), gone)).rejects.toBe(sha);
    const again = runTool("sh", ["-c", "exit 0"], { what: "extract the backup stream", stdin: "pipe", stdout: "ignore" });
    await again.done;
    await expect(feedMbstream(input(), again)).resolves.toEqual({ stoppedEarly: true });
  }, 10_000);

  it("does not report a child that read everything", async () => {
    const child = runTool("sh", ["-c", "cat > /dev/null"], { what: "extract the backup stream", stdin: "pipe", stdout: "ignore" });
    await expect(feedMbstream(input(), child)).resolves.toEqual({ stoppedEarly: false });
    await child.done;
  });
});
