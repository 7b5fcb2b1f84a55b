// Offline/online: a pod's replicator.dev/replication annotation becomes
// STOP SLAVE / START SLAVE (db/replication.ts), reported as a pod condition.
import { oneLine } from "../../../lib/errors.js";
import { setOffline, setOnline } from "../../../db/replication.js";
import { serverPortOf } from "../../observe.js";
import { ownerSts, type OperatorHost } from "../../host.js";

/** On a pod: `offline` or `online`; the operator runs STOP SLAVE / START SLAVE. */
export const REPLICATION_ANNOTATION = "replicator.dev/replication";
/** The pod condition that reports it: True when replicating (online), False when stopped (offline). */
export const REPLICATION_CONDITION = "replicator.dev/replicating";

/** What this controller uses of the operator: its caches, its queue and the I/O helpers. */
export type ReplicationHost = Pick<OperatorHost, "connectWith" | "event" | "log" | "pods" | "queue" | "setCondition" | "statefulSets">;

export class ReplicationController {
  constructor(
    private readonly host: ReplicationHost,
  ) {}

  /** Reconcile a pod's replicator.dev/replication annotation into STOP/START SLAVE. */
  async reconcileReplication(ns: string, podName: string): Promise<void> {
    const pod = this.host.pods.get(`${ns}/${podName}`);
    const want = pod?.metadata.annotations?.[REPLICATION_ANNOTATION];
    if (!pod || !want || pod.metadata.deletionTimestamp) return;
    const log = this.host.log.child({ controller: "replication", namespace: ns, name: podName });
    const cond = pod.status?.conditions?.find((c) => c.type === REPLICATION_CONDITION) as { status?: string; reason?: string } | undefined;
    const desired = want === "online" ? "True" : "False";
    if (want !== "online" && want !== "offline") {
      await this.host.setCondition(pod, REPLICATION_CONDITION, "Unknown", "InvalidAnnotation", `${REPLICATION_ANNOTATION} must be offline or online, not "${want}"`);
      return;
    }
    if (cond?.status === desired && cond.reason !== "Error") return;
    const sts = ownerSts(pod);
    const secretName = pod.metadata.annotations?.["replicator.dev/credentials-secret"] ??
      (sts ? this.host.statefulSets.get(`${ns}/${sts}`)?.metadata.annotations?.["replicator.dev/credentials-secret"] ?? `${sts}-credentials` : undefined);
    const address = pod.status?.podIP;
    if (!secretName || !address) {
      this.host.queue.addAfter(`replication/${ns}/${podName}`, 5_000);
      return;
    }
    const port = serverPortOf(pod as Parameters<typeof serverPortOf>[0], sts ? this.host.statefulSets.get(`${ns}/${sts}`) : undefined);
    if ("error" in port) {
      await this.host.setCondition(pod, REPLICATION_CONDITION, "Unknown", "InvalidAnnotation", port.error);
      return;
    }
    try {
      const c = await this.host.connectWith(ns, { name: secretName }, address, port.port, podName);
      try {
        const r = want === "online" ? await setOnline(c) : await setOffline(c);
        await this.host.setCondition(pod, REPLICATION_CONDITION, desired, want === "online" ? "Online" : "Offline", `${r.role}: ${r.action}`);
        await this.host.event({ apiVersion: "v1", kind: "Pod", metadata: pod.metadata }, "Normal", want === "online" ? "Online" : "Offline", `${r.role}: ${r.action}`);
        log.info({ want, role: r.role }, "replication state changed");
      } finally {
        await c.end().catch(() => undefined);
      }
    } catch (err) {
      await this.host.setCondition(pod, REPLICATION_CONDITION, "Unknown", "Error", `could not go ${want}: ${oneLine(err)}`);
      this.host.queue.addAfter(`replication/${ns}/${podName}`, 10_000);
    }
  }
}
