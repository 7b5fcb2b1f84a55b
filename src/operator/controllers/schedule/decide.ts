// When a repository's schedule runs, pure. A schedule is never fired for a
// time before the operator first saw it: a schedule added to (or a status lost
// from) an old repository runs first at the next cron time, not at once for a
// run it "missed" since the repository was created.
import { dueRun, nextRun, type Cron } from "../../cron.js";

export interface ScheduleState {
  lastScheduleTime?: string | undefined;
  nextScheduleTime?: string | undefined;
}

export function decideScheduleRun(cron: Cron, prev: ScheduleState | undefined, suspend: boolean, now: Date): { due: Date | undefined; next: Date | undefined } {
  if (suspend) return { due: undefined, next: undefined };
  const next = nextRun(cron, now);
  let since: Date | undefined;
  if (prev?.lastScheduleTime) since = new Date(prev.lastScheduleTime);
  else if (prev?.nextScheduleTime) since = new Date(Date.parse(prev.nextScheduleTime) - 1);
  // First sight: nothing is due yet.
  if (!since || Number.isNaN(since.getTime())) return { due: undefined, next };
  const due = dueRun(cron, since, now);
  return { due, next: due ? nextRun(cron, now) : next };
}
