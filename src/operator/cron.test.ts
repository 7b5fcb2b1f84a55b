import { describe, expect, it } from "vitest";
import { dueRun, nextRun, parseCron } from "./cron.js";

const d = (s: string): Date => new Date(s);

describe("cron", () => {
  it("finds the next run", () => {
    expect(nextRun(parseCron("0 3 * * *"), d("2026-11-24T02:59:30Z"))).toEqual(d("2026-11-24T03:00:00Z"));
    expect(nextRun(parseCron("0 3 * * *"), d("2026-11-24T03:00:00Z"))).toEqual(d("2026-11-25T03:00:00Z"));
    expect(nextRun(parseCron("*/15 * * * *"), d("2026-11-24T10:07:00Z"))).toEqual(d("2026-11-24T10:15:00Z"));
    expect(nextRun(parseCron("30 1 * * 0"), d("2026-11-24T00:00:00Z"))).toEqual(d("2026-11-29T01:30:00Z")); // Sunday
    expect(nextRun(parseCron("@monthly"), d("2026-12-15T00:00:00Z"))).toEqual(d("2027-01-01T00:00:00Z"));
    expect(nextRun(parseCron("0 0 29 2 *"), d("2026-03-01T00:00:00Z"))).toEqual(d("2028-02-29T00:00:00Z"));
  });

  it("collapses missed runs into the newest one", () => {
    const c = parseCron("0 * * * *");
    expect(dueRun(c, d("2026-11-24T01:00:00Z"), d("2026-11-24T04:30:00Z"))).toEqual(d("2026-11-24T04:00:00Z"));
    expect(dueRun(c, d("2026-11-24T04:00:00Z"), d("2026-11-24T04:30:00Z"))).toBeUndefined();
  });

  it("names the bad field", () => {
    expect(() => parseCron("0 25 * * *")).toThrow('cron hour field "25" is out of range 0-23');
    expect(() => parseCron("daily")).toThrow(/must have 5 fields/);
  });
});
