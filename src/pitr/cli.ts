// The CLI faces of PITR: `replicator binlog-archive` and `replicator restore
// --until/--until-gtid`. main.ts parses flags and settings; these run the
// command and print its summary.
import { badInput } from "../lib/errors.js";
import type { Logger } from "../lib/log.js";
import type { Endpoint } from "../db/endpoint.js";
import type { DatadirReplay, RestoreResult } from "../agent/restore.js";
import { formatBytes, parseTime } from "../storage/catalog.js";
import type { Repository } from "../storage/repository.js";
import { runBinlogArchive, type ArchiveResult } from "./archiver.js";
import { parseGtid } from "./gtid.js";
import type { Target } from "./plan.js";
import { runPointInTimeRestore, type PitrResult } from "./restore-until.js";

export async function binlogArchiveCommand(o: {
  repo: Repository; master: Endpoint; once: boolean; flushInterval: string | undefined; json: boolean; out: (l: string) => void; log: Logger; signal: AbortSignal;
}): Promise<ArchiveResult> {
  const text = o.flushInterval ?? "60";
  const s = Number(text);
  if (!Number.isFinite(s) || s <= 0) throw badInput("InvalidArguments", `--flush-interval must be a positive number of seconds (got "${text}")`);
  const r = await runBinlogArchive({ repo: o.repo, master: o.master, once: o.once, flushIntervalMs: s * 1000, log: o.log, signal: o.signal });
  if (!o.json) {
    o.out(`archived ${r.archived.length} binlog object(s) of server ${r.serverId} into ${r.repository}/binlogs/${r.serverId}`);
    for (const a of r.archived) o.out(`  ${a.complete ? "complete" : "partial "} ${a.file} ${formatBytes(a.size)}${a.lastGtid ? ` through ${a.lastGtid}` : ""}`);
    o.out(`  the archive reaches GTID ${r.endState || "(none)"}${r.lastEventTime ? ` at ${r.lastEventTime}` : ""}`);
  }
  return r;
}

/** --until TIME or --until-gtid GTID (exactly one), or undefined when neither is given. */
export function untilTarget(until: string | undefined, untilGtid: string | undefined): Target | undefined {
  if (until !== undefined && untilGtid !== undefined) throw badInput("InvalidArguments", "--until and --until-gtid are mutually exclusive; give a time or a GTID");
  if (until !== undefined) return { kind: "time", time: parseTime(until) };
  if (untilGtid !== undefined) return { kind: "gtid", gtid: parseGtid(untilGtid, "--until-gtid") };
  return undefined;
}

export async function restoreUntilCommand(o: {
  repo: Repository; target: Endpoint | undefined; datadir: string | undefined; until: Target; dryRun: boolean;
  restoreBackup: (name: string, datadirReplay?: DatadirReplay) => Promise<RestoreResult>; json: boolean; out: (l: string) => void; log: Logger; signal: AbortSignal;
}): Promise<PitrResult> {
  const r = await runPointInTimeRestore({ repo: o.repo, target: o.target, datadir: o.datadir, until: o.until, dryRun: o.dryRun, restoreBackup: o.restoreBackup, log: o.log, signal: o.signal });
  if (!o.json) {
    const p = r.plan;
    o.out(`${r.dryRun ? "plan: restore" : "restored"} ${p.backup} (GTID ${p.backupPosition || "(none)"})${r.dryRun ? "" : ` into ${r.restore?.target ?? "?"}`}, then replay${r.dryRun ? "" : `ed ${r.replayed} transaction(s)`} up to ${p.until}`);
    if (p.binlogs.length === 0) o.out("  nothing to replay: the backup is already at the target");
    else {
      // After a switchover, the old master's binlogs then the new one's.
      const runs: { serverId: number; files: string[] }[] = [];
      for (const b of p.binlogs) {
        const last = runs[runs.length - 1];
        const name = `${b.file}${b.complete ? "" : " (partial)"}`;
        if (last?.serverId === b.serverId) last.files.push(name);
        else runs.push({ serverId: b.serverId, files: [name] });
      }
      o.out(`  binlogs ${runs.map((r, i) => `${i > 0 ? "then " : ""}of server ${r.serverId}: ${r.files.join(", ")}`).join("; ")}`);
      o.out(`  from GTID ${p.fromGtid ?? "?"} (${p.fromTime ?? "?"}) to ${p.stopGtid ? `GTID ${p.stopGtid} (${p.stopTime ?? "?"}), not included` : "the end of the archive"}`);
    }
    if (p.kind === "physical") {
      o.out(
        r.dryRun
          ? `  physical: the replay runs through a temporary mariadbd on the restored data directory, which is then left with gtid_slave_pos ${p.endState || "(empty)"}`
          : `  the data directory's gtid_slave_pos is ${p.endState || "(empty)"}; start mariadbd on it`,
      );
    }
  }
  return r;
}
