import { describe, expect, it } from "vitest";
import { parseCron } from "../../cron.js";
import { decideScheduleRun } from "./decide.js";

const hourly = parseCron("0 * * * *");

describe("decideScheduleRun", () => {
  it("a schedule added to an old repository does not fire at once: first run at the next cron time", () => {
    const now = new Date("2026-11-29T12:34:00Z");
    const first = decideScheduleRun(hourly, undefined, false, now);
    expect(first.due).toBeUndefined();
    expect(first.next?.toISOString()).toBe("2026-11-29T13:00:00.000Z");
    // Before then: nothing. At 13:00: the run.
    const state = { nextScheduleTime: first.next?.toISOString() };
    expect(decideScheduleRun(hourly, state, false, new Date("2026-11-29T12:59:59Z")).due).toBeUndefined();
    expect(decideScheduleRun(hourly, state, false, new Date("2026-11-29T13:00:05Z")).due?.toISOString()).toBe("2026-11-29T13:00:00.000Z");
  });

  it("after a run, the next one is due at its time (one run for several missed, the latest)", () => {
    const state = { lastScheduleTime: "2026-11-29T13:00:00.000Z", nextScheduleTime: "2026-11-29T14:00:00.000Z" };
    expect(decideScheduleRun(hourly, state, false, new Date("2026-11-29T13:30:00Z")).due).toBeUndefined();
    const late = decideScheduleRun(hourly, state, false, new Date("2026-11-29T16:10:00Z"));
    expect(late.due?.toISOString()).toBe("2026-11-29T16:00:00.000Z");
    expect(late.next?.toISOString()).toBe("2026-11-29T17:00:00.000Z");
  });

  it("a suspended schedule neither runs nor has a next time", () => {
    expect(decideScheduleRun(hourly, { lastScheduleTime: "2026-01-01T00:00:00Z" }, true, new Date("2026-11-29T13:00:05Z"))).toEqual({ due: undefined, next: undefined });
  });
});
