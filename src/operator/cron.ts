// Five-field cron expressions (minute hour day-of-month month day-of-week),
// in UTC: numbers, `*`, lists `1,5`, ranges `1-5`, steps `*/15` and `1-30/5`,
// and the macros @hourly @daily @weekly @monthly @yearly. Pure.
import { badInput } from "../lib/errors.js";

export interface Cron {
  minute: Set<number>;
  hour: Set<number>;
  dom: Set<number>;
  month: Set<number>;
  dow: Set<number>;
  domStar: boolean;
  dowStar: boolean;
}

const MACROS: Record<string, string> = {
  "@hourly": "0 * * * *",
  "@daily": "0 0 * * *",
  "@midnight": "0 0 * * *",
  "@weekly": "0 0 * * 0",
  "@monthly": "0 0 1 * *",
  "@yearly": "0 0 1 1 *",
  "@annually": "0 0 1 1 *",
};

function field(text: string, min: number, max: number, name: string): Set<number> {
  const out = new Set<number>();
  for (const part of text.split(",")) {
    const m = /^(\*|(\d+)(?:-(\d+))?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw badInput("InvalidSchedule", `invalid cron ${name} field "${text}"`);
    let lo = min;
    let hi = max;
    if (m[1] !== "*") {
      lo = Number(m[2]);
      hi = m[3] !== undefined ? Number(m[3]) : m[4] !== undefined ? max : lo;
    }
    const step = m[4] !== undefined ? Number(m[4]) : 1;
    if (lo < min || hi > max || lo > hi || step < 1) throw badInput("InvalidSchedule", `cron ${name} field "${text}" is out of range ${min}-${max}`);
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

export function parseCron(expr: string): Cron {
  const text = MACROS[expr.trim()] ?? expr.trim();
  const parts = text.split(/\s+/);
  if (parts.length !== 5) throw badInput("InvalidSchedule", `cron "${expr}" must have 5 fields (minute hour day month weekday) or be a macro like @daily`);
  const [mi, h, dom, mo, dow] = parts as [string, string, string, string, string];
  const dowSet = field(dow, 0, 7, "day-of-week");
  if (dowSet.has(7)) dowSet.add(0);
  return {
    minute: field(mi, 0, 59, "minute"),
    hour: field(h, 0, 23, "hour"),
    dom: field(dom, 1, 31, "day-of-month"),
    month: field(mo, 1, 12, "month"),
    dow: dowSet,
    domStar: dom === "*",
    dowStar: dow === "*",
  };
}

function dayMatches(c: Cron, d: Date): boolean {
  const dom = c.dom.has(d.getUTCDate());
  const dow = c.dow.has(d.getUTCDay());
  // Vixie cron: when both are restricted, either may match.
  if (!c.domStar && !c.dowStar) return dom || dow;
  return dom && dow;
}

/** The first time strictly after `after` that matches, within 5 years. */
export function nextRun(c: Cron, after: Date): Date | undefined {
  const t = new Date(after.getTime());
  t.setUTCSeconds(0, 0);
  t.setUTCMinutes(t.getUTCMinutes() + 1);
  const limit = after.getTime() + 5 * 366 * 24 * 3600_000;
  while (t.getTime() <= limit) {
    if (!c.month.has(t.getUTCMonth() + 1)) {
      t.setUTCMonth(t.getUTCMonth() + 1, 1);
      t.setUTCHours(0, 0, 0, 0);
      continue;
    }
    if (!dayMatches(c, t)) {
      t.setUTCDate(t.getUTCDate() + 1);
      t.setUTCHours(0, 0, 0, 0);
      continue;
    }
    if (!c.hour.has(t.getUTCHours())) {
      t.setUTCHours(t.getUTCHours() + 1, 0, 0, 0);
      continue;
    }
    if (!c.minute.has(t.getUTCMinutes())) {
      t.setUTCMinutes(t.getUTCMinutes() + 1, 0, 0);
      continue;
    }
    return t;
  }
  return undefined;
}

/**
 * Pure: is a run due? Given the last time it ran (or when the schedule was
 * created), the newest matching time at or before `now`, if any is after
 * `since`. Missed runs collapse into one, as with a CronJob.
 */
export function dueRun(c: Cron, since: Date, now: Date): Date | undefined {
  let due: Date | undefined;
  let t = nextRun(c, since);
  while (t && t.getTime() <= now.getTime()) {
    due = t;
    t = nextRun(c, t);
  }
  return due;
}
