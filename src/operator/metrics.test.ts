import { describe, expect, it } from "vitest";
import { Metrics } from "./metrics.js";

describe("Metrics.clear", () => {
  it("drops the gauge series of a gone archive and keeps every other", () => {
    const m = new Metrics();
    m.set("replicator_binlog_archive_lag_seconds", { namespace: "a", repository: "r", cluster: "db" }, 5);
    m.set("replicator_binlog_archive_lag_seconds", { namespace: "a", repository: "r", cluster: "db2" }, 7);
    m.set("replicator_binlog_archive_ready", { namespace: "a", repository: "r2", cluster: "db" }, 1);
    m.clear({ namespace: "a", repository: "r", cluster: "db" });
    const text = m.render();
    expect(text).not.toContain('replicator_binlog_archive_lag_seconds{namespace="a",repository="r",cluster="db"}');
    expect(text).toContain('replicator_binlog_archive_lag_seconds{namespace="a",repository="r",cluster="db2"} 7');
    m.clear({ namespace: "a", repository: "r" });
    expect(m.render()).not.toContain('repository="r",');
    expect(m.render()).toContain('replicator_binlog_archive_ready{namespace="a",repository="r2",cluster="db"} 1');
  });
});
