import { describe, expect, it } from "vitest";
import { provisionSettings } from "./controllers/provision/decide.js";
import { serverPortOf } from "./observe.js";

describe("serverPortOf: the server's port, from one place", () => {
  const pod = (annotations: Record<string, string> = {}, ports?: { name?: string; containerPort?: number }[]) => ({ metadata: { annotations }, spec: { containers: [{ ports }] } });
  it("reads the pod's annotation, then its StatefulSet's, then a container port named mysql, then 3306", () => {
    expect(serverPortOf(pod({ "replicator.dev/port": "3307" }), { metadata: { annotations: { "replicator.dev/port": "3308" } } })).toEqual({ port: 3307 });
    expect(serverPortOf(pod(), { metadata: { annotations: { "replicator.dev/port": "3308" } } })).toEqual({ port: 3308 });
    expect(serverPortOf(pod({}, [{ name: "metrics", containerPort: 9104 }, { name: "mysql", containerPort: 3310 }]), undefined)).toEqual({ port: 3310 });
    expect(serverPortOf(pod(), undefined)).toEqual({ port: 3306 });
  });
  it("an annotation that is not a port is an error, never 3306", () => {
    expect(serverPortOf(pod({ "replicator.dev/port": "x" }), undefined)).toEqual({ error: 'annotation replicator.dev/port: invalid port "x"' });
  });
  it("provisioning reads the same rule", () => {
    const sts = { metadata: { name: "db", annotations: { "replicator.dev/provision": "latest", "replicator.dev/port": "3307" } }, spec: { volumeClaimTemplates: [{ metadata: { name: "data" } }] } };
    expect(provisionSettings(sts)).toMatchObject({ port: 3307 });
  });
});
