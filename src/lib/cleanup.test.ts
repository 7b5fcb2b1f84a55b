import { describe, expect, it } from "vitest";
import { settleOutcome, undoOnFailure, type CleanupStack } from "./cleanup.js";

describe("a run's cleanup stack", () => {
  const stackOf = (undone: string[]): CleanupStack => [
    () => { undone.push("close connection"); return Promise.resolve(); },
    () => { undone.push("restart replication"); return Promise.resolve(); },
    () => { undone.push("remove credentials"); return Promise.resolve(); },
  ];

  it("is undone last step first once the outcome is settled, and only once", async () => {
    const undone: string[] = [];
    const stack = stackOf(undone);
    await expect(settleOutcome(stack, () => Promise.resolve("ok"))).resolves.toBe("ok");
    await settleOutcome(stack, () => Promise.resolve("again"));
    expect(undone).toEqual(["remove credentials", "restart replication", "close connection"]);
  });

  it("is undone when the run fails, and the run's error is the outcome", async () => {
    const undone: string[] = [];
    const outcome = settleOutcome(stackOf(undone), () => Promise.reject(new Error("mariadb-dump failed")));
    await expect(outcome).rejects.toThrow("mariadb-dump failed");
    expect(undone).toEqual(["remove credentials", "restart replication", "close connection"]);
  });

  it("is undone when the run cannot start, and left alone when it started", async () => {
    const undone: string[] = [];
    await expect(undoOnFailure(stackOf(undone), () => { throw new Error("no such database"); })).rejects.toThrow("no such database");
    expect(undone).toHaveLength(3);
    const kept: string[] = [];
    await expect(undoOnFailure(stackOf(kept), () => "started")).resolves.toBe("started");
    expect(kept).toEqual([]);
  });
});
