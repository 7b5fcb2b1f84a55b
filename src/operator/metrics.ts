// Prometheus metrics in the text exposition format, without a dependency.
import type { AgentResult } from "./observe.js";

type Labels = Record<string, string>;

const fmt = (l: Labels): string => {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};

export class Metrics {
  private counters = new Map<string, Map<string, number>>();
  private gauges = new Map<string, Map<string, number>>();
  private help: Record<string, [string, "counter" | "gauge"]> = {
    replicator_backups_total: ["Backups finished, by result.", "counter"],
    replicator_restores_total: ["Restores finished, by result.", "counter"],
    replicator_backup_last_success_timestamp_seconds: ["Finish time of the last successful backup.", "gauge"],
    replicator_backup_last_duration_seconds: ["Duration of the last successful backup.", "gauge"],
    replicator_backup_last_size_bytes: ["Stored size of the last successful backup.", "gauge"],
    replicator_leader: ["1 when this replica holds the leader lease.", "gauge"],
    replicator_slaves_provisioned_total: ["Slaves provisioned from a stored backup.", "counter"],
    replicator_provision_failures_total: ["Failed provisioning attempts (each is retried).", "counter"],
    replicator_provision_last_seconds: ["Time from pod creation to provisioned, for the last slave.", "gauge"],
    replicator_provision_last_lag_seconds: ["Seconds behind master when the last provisioned slave started replicating.", "gauge"],
    replicator_informer_lists_total: ["LIST requests an informer made (the first, and one per 410 Gone or failed watch).", "counter"],
    replicator_informer_watches_total: ["WATCH requests an informer made.", "counter"],
    replicator_informer_watchdog_restarts_total: ["Watches restarted because they were silent for twice their timeout.", "counter"],
    replicator_informer_resyncs_total: ["Resyncs from the informer's cache (no API request).", "counter"],
    replicator_storage_listings_total: ["Catalog syncs that listed a repository's storage.", "counter"],
    replicator_binlog_archive_ready: ["1 when a binlog archiver's pod runs and is ready.", "gauge"],
    replicator_binlog_archive_last_recoverable_timestamp_seconds: ["Time of the newest archived transaction (the last recoverable time), at the last catalog sync.", "gauge"],
    replicator_binlog_archive_lag_seconds: ["0 when the archive holds the master's whole GTID position, else now minus the newest archived event, at the last catalog sync.", "gauge"],
    process_resident_memory_bytes: ["Resident memory size in bytes.", "gauge"],
    nodejs_heap_size_used_bytes: ["V8 heap in use (JavaScript objects), in bytes.", "gauge"],
    nodejs_heap_size_total_bytes: ["V8 heap reserved, in bytes.", "gauge"],
    nodejs_external_memory_bytes: ["Memory of C++ objects bound to JavaScript objects (Buffers included), in bytes.", "gauge"],
  };

  /** Set a counter that is kept elsewhere (an informer's own totals). */
  setTotal(name: string, labels: Labels, value: number): void {
    const m = this.counters.get(name) ?? new Map<string, number>();
    m.set(fmt(labels), value);
    this.counters.set(name, m);
  }

  inc(name: string, labels: Labels, by = 1): void {
    const m = this.counters.get(name) ?? new Map<string, number>();
    const k = fmt(labels);
    m.set(k, (m.get(k) ?? 0) + by);
    this.counters.set(name, m);
  }

  set(name: string, labels: Labels, value: number): void {
    const m = this.gauges.get(name) ?? new Map<string, number>();
    m.set(fmt(labels), value);
    this.gauges.set(name, m);
  }

  /** Drop every gauge series whose labels include all of `match` (an archive that is gone). */
  clear(match: Labels): void {
    const parts = Object.entries(match).map(([k, v]) => fmt({ [k]: v }).slice(1, -1));
    for (const m of this.gauges.values()) {
      for (const key of [...m.keys()]) if (parts.every((p) => key.slice(1, -1).split(",").includes(p))) m.delete(key);
    }
  }

  backupFinished(namespace: string, cluster: string, result: "succeeded" | "failed", r: AgentResult | undefined): void {
    this.inc("replicator_backups_total", { namespace, cluster, result });
    if (result === "succeeded" && r) {
      const l = { namespace, cluster };
      const finished = r.finishedAt ? Date.parse(r.finishedAt) : Date.now();
      this.set("replicator_backup_last_success_timestamp_seconds", l, Math.round(finished / 1000));
      if (r.startedAt) this.set("replicator_backup_last_duration_seconds", l, (finished - Date.parse(r.startedAt)) / 1000);
      if (typeof r.size === "number") this.set("replicator_backup_last_size_bytes", l, r.size);
    }
  }

  provisioned(namespace: string, cluster: string, seconds: number, lag: number | undefined): void {
    this.inc("replicator_slaves_provisioned_total", { namespace, cluster });
    this.set("replicator_provision_last_seconds", { namespace, cluster }, Math.round(seconds * 10) / 10);
    if (typeof lag === "number") this.set("replicator_provision_last_lag_seconds", { namespace, cluster }, lag);
  }

  provisionFailed(namespace: string, cluster: string): void {
    this.inc("replicator_provision_failures_total", { namespace, cluster });
  }

  restoreFinished(namespace: string, result: "succeeded" | "failed"): void {
    this.inc("replicator_restores_total", { namespace, result });
  }

  /** The process's memory, as prom-client names it: RSS against the JavaScript heap tells code and native memory from objects. */
  processMemory(m: NodeJS.MemoryUsage = process.memoryUsage()): void {
    this.set("process_resident_memory_bytes", {}, m.rss);
    this.set("nodejs_heap_size_used_bytes", {}, m.heapUsed);
    this.set("nodejs_heap_size_total_bytes", {}, m.heapTotal);
    this.set("nodejs_external_memory_bytes", {}, m.external);
  }

  render(): string {
    const out: string[] = [];
    for (const [name, [help, type]] of Object.entries(this.help)) {
      const series = (type === "counter" ? this.counters : this.gauges).get(name);
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of series ?? []) out.push(`${name}${labels} ${v}`);
    }
    return `${out.join("\n")}\n`;
  }
}
