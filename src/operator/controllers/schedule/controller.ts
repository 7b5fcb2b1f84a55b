// Schedules: a ReplicatorRepository's spec.schedules create ReplicatorBackups
// when due (called from the repository's reconcile, ../catalog). The rule is
// in ./decide.ts.
import { API_VERSION, type ReplicatorRepository, type RepositorySpec, type RepositoryStatus } from "../../../api/v1alpha1.js";
import type { Logger } from "../../../lib/log.js";
import { oneLine } from "../../../lib/errors.js";
import { formatStamp } from "../../../storage/catalog.js";
import { parseCron } from "../../cron.js";
import { childName } from "../../builders/jobs.js";
import { setCondition } from "../../conditions.js";
import { isAlreadyExists } from "../../../kube/rest.js";
import { crPath, type OperatorHost } from "../../host.js";
import { decideScheduleRun } from "./decide.js";

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type ScheduleHost = Pick<OperatorHost, "rest">;

export class ScheduleController {
  constructor(
    private readonly host: ScheduleHost,
  ) {}

  /** Create the ReplicatorBackup of every schedule that is due; returns the next due time. */
  async runSchedules(r: ReplicatorRepository, spec: RepositorySpec, status: RepositoryStatus, now: Date, log: Logger): Promise<Date | undefined> {
    const ns = r.metadata.namespace;
    let next: Date | undefined;
    const out: NonNullable<RepositoryStatus["schedules"]> = [];
    for (const s of spec.schedules) {
      const prev = r.status?.schedules?.find((x) => x.name === s.name);
      const entry: NonNullable<RepositoryStatus["schedules"]>[number] = { ...(prev ?? {}), name: s.name };
      let cron;
      try {
        cron = parseCron(s.cron);
      } catch (err) {
        status.conditions = setCondition(status.conditions, { type: "Ready", status: "False", reason: "InvalidSchedule", message: `spec.schedules[${s.name}].cron: ${oneLine(err)}` }, now, r.metadata.generation ?? 0);
        out.push(entry);
        continue;
      }
      const { due, next: n } = decideScheduleRun(cron, prev, s.suspend, now);
      if (due) {
        const backupName = childName(`${r.metadata.name}-${s.name}`, formatStamp(due).toLowerCase().slice(0, 13));
        try {
          await this.host.rest.create(crPath("replicatorbackups", ns), {
            apiVersion: API_VERSION,
            kind: "ReplicatorBackup",
            metadata: { name: backupName, namespace: ns, labels: { "replicator.dev/schedule": s.name, "replicator.dev/repository": r.metadata.name } },
            spec: {
              repository: r.metadata.name,
              source: s.source,
              options: s.options,
              ...(s.cluster ? { cluster: s.cluster } : {}),
              ...(s.method ? { method: s.method } : {}),
            },
          });
          log.info({ schedule: s.name, backup: backupName }, "scheduled backup created");
        } catch (err) {
          if (!isAlreadyExists(err)) throw err;
        }
        entry.lastScheduleTime = due.toISOString();
        entry.lastBackup = backupName;
      }
      if (n) entry.nextScheduleTime = n.toISOString();
      if (n && (!next || n < next)) next = n;
      out.push(entry);
    }
    if (out.length > 0) status.schedules = out;
    return next;
  }
}
