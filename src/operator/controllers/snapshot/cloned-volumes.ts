// A pod that starts on a volume cloned from a snapshot: its server is pointed at the master where the clone is.
import type { Conn } from "../../../db/connection.js";
import { queryRows } from "../../../db/connection.js";
import type { Endpoint } from "../../../db/endpoint.js";
import { configureReplica } from "../../../db/replication.js";
import { failed, oneLine } from "../../../lib/errors.js";
import { positionText, type ReplicationPosition } from "../../../storage/catalog.js";
import { PLAN_ANNOTATION, PROVISIONED_ANNOTATION, type ProvisionSettings } from "../provision/decide.js";
import { podPlan, takesPlan } from "../provision/observe.js";
import { isContainersReady, selectServerPod } from "../../observe.js";
import { decideSeeded, seedPosition } from "./decide.js";
import { SEEDED_FROM_ANNOTATION, seedPositionOf, type PvcObj } from "./volumesnapshot.js";
import type { SnapshotHost, SnapshotPod } from "./host.js";

export class ClonedVolumes {
  constructor(private readonly host: SnapshotHost) {}

  /**
   * A provisioned StatefulSet's pod whose data volume was cloned from a
   * snapshot backup and carries no provision marker yet: once its server
   * runs, make it a slave of the master where the clone is, then mark the
   * volume and open the readiness gate. Returns false when the pod is not
   * such a pod (the usual provisioning rules apply).
   */
  async provisionSeeded(pod: SnapshotPod, pvc: PvcObj, s: ProvisionSettings, stsName: string): Promise<boolean> {
    const a = pvc.metadata.annotations ?? {};
    const backup = a[SEEDED_FROM_ANNOTATION];
    if (!backup || a[PROVISIONED_ANNOTATION]) return false;
    const ns = pod.metadata.namespace;
    const key = `provision/${ns}/${pod.metadata.name}`;
    const log = this.host.log.child({ controller: "provision", namespace: ns, name: pod.metadata.name, backup });
    // An init container that waits for a plan is told there is nothing for it to do.
    if (takesPlan(pod) && podPlan(pod) === undefined) {
      await this.host.rest.patch(`/api/v1/namespaces/${ns}/pods/${pod.metadata.name}`, {
        metadata: { annotations: { [PLAN_ANNOTATION]: JSON.stringify({ action: "none", reason: `volume ${pvc.metadata.name} is a clone of snapshot backup ${backup}` }) } },
      });
    }
    const observed = { claimName: pvc.metadata.name, backup, recorded: seedPositionOf(a), podReady: isContainersReady(pod) };
    let plan = decideSeeded(observed);
    if (plan.kind === "configure") {
      const configured = await this.seedFromClone(ns, pod, s, stsName, observed.recorded ?? { role: "master" }).then(
        (r) => ({ ok: true as const, position: positionText(r.position) ?? "-", resumed: r.resumed }),
        (err: unknown) => ({ ok: false as const, message: oneLine(err) }),
      );
      plan = decideSeeded({ ...observed, configured });
    }
    const podRef = { apiVersion: "v1", kind: "Pod", metadata: pod.metadata };
    switch (plan.kind) {
      case "configure":
        return true;
      case "wait":
        await this.host.setGate(pod, "False", plan.reason, plan.message);
        this.host.enqueue(key, plan.requeueMs);
        return true;
      case "retry":
        this.host.metrics.provisionFailed(ns, s.cluster);
        await this.host.event(podRef, "Warning", plan.reason, `${plan.message}; retrying in 30s`);
        await this.host.setGate(pod, "False", plan.reason, plan.message);
        this.host.enqueue(key, 30_000);
        return true;
      case "markProvisioned": {
        // The marker first: once it is written, this volume is never seeded again.
        await this.host.markPvc(ns, pvc.metadata.name, backup);
        await this.host.setGate(pod, "True", "Provisioned", plan.message);
        const created = pod.metadata.creationTimestamp ? Date.parse(pod.metadata.creationTimestamp) : Date.now();
        this.host.metrics.provisioned(ns, s.cluster, (Date.now() - created) / 1000, undefined);
        await this.host.event(podRef, "Normal", "Provisioned", `${plan.message}; volume ${pvc.metadata.name} marked`);
        log.info({ pvc: pvc.metadata.name }, "slave provisioned from a volume snapshot");
        // The next scale-up needs the next spare.
        this.host.enqueue(`snapshot-spare/${ns}/${stsName}`, 1_000);
        return true;
      }
    }
  }

  /** Point the server on a cloned volume at the master, where the clone is (see seedPosition). */
  private async seedFromClone(ns: string, pod: SnapshotPod, s: ProvisionSettings, stsName: string, recorded: ReplicationPosition): Promise<{ position: ReplicationPosition; resumed: boolean }> {
    const address = pod.status?.podIP;
    if (!address) throw failed("ServerNotReady", "the pod has no IP yet");
    const master = selectServerPod({ statefulSet: stsName, role: "master", port: s.port, credentialsSecret: { name: s.replicationSecret, userKey: "username", passwordKey: "password" } }, this.host.pods(ns));
    if (!master.ok) throw failed("MasterNotReady", master.message);
    const repl = await this.host.secret(ns, s.replicationSecret);
    const endpoint: Endpoint = { engine: "mysql", host: this.host.masterAddress(ns, master), port: s.port, user: repl("username") ?? "", password: repl("password") };
    const c = await this.host.connectWith(ns, { name: s.credentialsSecret }, address, s.port, `pod ${pod.metadata.name}`);
    try {
      return await seedClone(c, endpoint, recorded);
    } finally {
      c.destroy();
    }
  }
}

/** Seed a server running on a cloned volume: stop replication, work out where the clone is, CHANGE MASTER there, start. */
export async function seedClone(c: Conn, master: Endpoint, recorded: ReplicationPosition): Promise<{ position: ReplicationPosition; resumed: boolean }> {
  await c.query("STOP SLAVE").catch(() => undefined);
  const [g] = await queryRows<{ b: string | null; s: string | null }>(c, "SELECT @@gtid_binlog_pos AS b, @@gtid_slave_pos AS s");
  const sp = seedPosition(recorded, { gtidBinlogPos: g?.b ?? "", gtidSlavePos: g?.s ?? "" });
  if (!sp.ok) throw failed("CloneBehind", sp.message);
  await configureReplica(c, master, sp.position, { timeoutMs: 30_000 });
  return { position: sp.position, resumed: sp.resumed };
}
