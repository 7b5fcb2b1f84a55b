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

  it("does not report a child that read everything", async () => {
    const child = runTool("sh", ["-c", "cat > /dev/null"], { what: "extract the backup stream", stdin: "pipe", stdout: "ignore" });
    await expect(feedMbstream(input(), child)).resolves.toEqual({ stoppedEarly: false });
    await child.done;
  });
});
