import { describe, expect, it } from "vitest";
import { FakeClock } from "./clock.js";
import { Expectations } from "./expectations.js";

describe("Expectations", () => {
  it("blocks the owner and the source pod until the informer has seen the child", () => {
    const e = new Expectations(new FakeClock(), 300_000);
    expect(e.satisfied("backup/db/b1")).toBe(true);
    e.expectCreation("Job/db/b1-backup", ["backup/db/b1", "pod/db/db-1"]);
    expect(e.satisfied("backup/db/b1")).toBe(false);
    // Another backup of the same pod sees the Job that is not in the cache yet.
    expect(e.pending("pod/db/db-1")).toEqual(["Job/db/b1-backup"]);
    expect(e.pending("pod/db/db-0")).toEqual([]);
    e.observed("Job/db/b1-backup");
    expect(e.satisfied("backup/db/b1")).toBe(true);
    expect(e.pending("pod/db/db-1")).toEqual([]);
  });

  it("a failed create lowers the expectation", () => {
    const e = new Expectations(new FakeClock());
    e.expectCreation("Job/db/x", ["backup/db/x"]);
    e.creationFailed("Job/db/x");
    expect(e.satisfied("backup/db/x")).toBe(true);
  });

  it("an expectation whose event never comes expires after the timeout", async () => {
    const clock = new FakeClock();
    const e = new Expectations(clock, 300_000);
    e.expectCreation("Job/db/x", ["backup/db/x"]);
    await clock.advance(200_000);
    expect(e.satisfied("backup/db/x")).toBe(false);
    expect(e.remainingMs("backup/db/x")).toBe(100_000);
    await clock.advance(100_000);
    expect(e.satisfied("backup/db/x")).toBe(true);
    expect(e.remainingMs("backup/db/x")).toBe(0);
  });

  it("whatever the worker count: the second decision sees the first creation at once", async () => {
    const e = new Expectations(new FakeClock());
    const created: string[] = [];
    // Two workers decide concurrently from the same (stale) cache; each records before its create call.
    const worker = async (owner: string): Promise<void> => {
      if (e.pending("pod/db/db-1").length > 0) return;
      e.expectCreation(`Job/db/${owner}`, [`backup/db/${owner}`, "pod/db/db-1"]);
      await Promise.resolve(); // the create call
      created.push(owner);
    };
    await Promise.all([worker("a"), worker("b")]);
    expect(created).toEqual(["a"]);
  });
});
