import { describe, expect, it } from "vitest";
import { podPlan, provisionInitResult, takesPlan } from "./observe.js";

const planVolume = { downwardAPI: { items: [{ path: "plan", fieldRef: { fieldPath: "metadata.annotations['replicator.dev/provision-plan']" } }] } };
const init = { name: "provision", args: ["provision", "--datadir", "/var/lib/mysql"] };

describe("provision pod observation", () => {
  it("sees a pod that takes a plan through its downward-API volume", () => {
    expect(takesPlan({ metadata: {}, spec: { volumes: [{}, planVolume] } })).toBe(true);
    expect(takesPlan({ metadata: {}, spec: { volumes: [{ downwardAPI: { items: [{ fieldRef: { fieldPath: "metadata.labels" } }] } }] } })).toBe(false);
  });

  it("reads the plan annotation, ignoring one that is not a plan", () => {
    const a = (v: string) => ({ metadata: { annotations: { "replicator.dev/provision-plan": v } } });
    expect(podPlan(a(JSON.stringify({ action: "restore", backup: "b", repository: "s3://x", cluster: "c", master: "mysql://m:3306" })))).toEqual({ action: "restore", backup: "b" });
    expect(podPlan(a(JSON.stringify({ action: "none", reason: "master" })))).toEqual({ action: "none" });
    expect(podPlan(a("{garbage"))).toBeUndefined();
    expect(podPlan({ metadata: {} })).toBeUndefined();
  });

  it("reads the init container's termination message, also from the last failed run", () => {
    const pod = (st: object) => ({ metadata: {}, spec: { initContainers: [init] }, status: { initContainerStatuses: [{ name: "provision", ...st }] } });
    expect(provisionInitResult(pod({ state: { terminated: { exitCode: 0, message: '{"ok":true,"action":"restored"}' } } }))).toEqual({ ok: true, action: "restored" });
    expect(provisionInitResult(pod({ state: { waiting: {} }, lastState: { terminated: { exitCode: 1, message: '{"ok":false,"error":"corrupt"}' } } }))).toEqual({ ok: false, error: "corrupt" });
    expect(provisionInitResult(pod({ state: { running: {} } }))).toBeUndefined();
    expect(provisionInitResult({ metadata: {}, spec: { initContainers: [{ name: "other" }] } })).toBeUndefined();
  });
});
