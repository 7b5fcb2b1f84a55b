// Leader election with a coordination.k8s.io Lease: one replica reconciles,
// the others wait. The leader renews every `renewMs`; if it cannot renew
// within the lease duration it steps down (the process exits, and restarts).
import type { Logger } from "../lib/log.js";
import { isConflict, isNotFound, type KubeRest } from "./kube/rest.js";

interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: string; acquireTime?: string; leaseTransitions?: number };
}

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds: number;
  renewMs: number;
}

const microTime = (d: Date): string => d.toISOString().replace(/Z$/, "000Z");

/** Resolves once this process holds the lease; then keeps renewing until `signal` aborts. `onLost` is called if renewal fails. */
export async function acquireLeadership(rest: KubeRest, o: LeaderOptions, log: Logger, signal: AbortSignal, onLost: () => void): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/${o.namespace}/leases`;
  const tryAcquire = async (): Promise<boolean> => {
    const now = new Date();
    let lease: Lease | undefined;
    try {
      lease = await rest.get<Lease>(`${path}/${o.name}`);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (!lease) {
      try {
        await rest.create(path, {
          metadata: { name: o.name, namespace: o.namespace },
          spec: { holderIdentity: o.identity, leaseDurationSeconds: o.leaseDurationSeconds, acquireTime: microTime(now), renewTime: microTime(now), leaseTransitions: 0 },
        });
        return true;
      } catch (err) {
        if (isConflict(err)) return false;
        throw err;
      }
    }
    const renew = lease.spec.renewTime ? Date.parse(lease.spec.renewTime) : 0;
    const expired = renew + (lease.spec.leaseDurationSeconds ?? o.leaseDurationSeconds) * 1000 < now.getTime();
    const mine = lease.spec.holderIdentity === o.identity;
    if (!mine && !expired && lease.spec.holderIdentity) return false;
    const spec = { ...lease.spec, holderIdentity: o.identity, leaseDurationSeconds: o.leaseDurationSeconds, renewTime: microTime(now) };
    if (!mine) {
      spec.acquireTime = microTime(now);
      spec.leaseTransitions = (lease.spec.leaseTransitions ?? 0) + 1;
    }
    try {
      await rest.put(`${path}/${o.name}`, { ...lease, spec });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  };

  for (;;) {
    if (signal.aborted) return;
    if (await tryAcquire().catch((err: unknown) => { log.warn({ err: String(err) }, "leader election attempt failed"); return false; })) break;
    await new Promise((r) => setTimeout(r, o.renewMs));
  }
  log.info({ lease: `${o.namespace}/${o.name}`, identity: o.identity }, "became leader");
  let lastRenew = Date.now();
  const timer = setInterval(() => {
    tryAcquire().then(
      (ok) => {
        if (ok) lastRenew = Date.now();
        else if (Date.now() - lastRenew > o.leaseDurationSeconds * 1000) {
          clearInterval(timer);
          onLost();
        }
      },
      () => {
        if (Date.now() - lastRenew > o.leaseDurationSeconds * 1000) {
          clearInterval(timer);
          onLost();
        }
      },
    );
  }, o.renewMs);
  signal.addEventListener("abort", () => {
    clearInterval(timer);
    // Release: let another replica take over at once.
    rest.get<Lease>(`${path}/${o.name}`).then(
      (l) => (l.spec.holderIdentity === o.identity ? rest.put(`${path}/${o.name}`, { ...l, spec: { ...l.spec, holderIdentity: "", renewTime: microTime(new Date(0)) } }) : undefined),
      () => undefined,
    ).catch(() => undefined);
  }, { once: true });
}
