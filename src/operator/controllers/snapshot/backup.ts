// One `volumesnapshot` backup, run by the operator itself (it needs the
// Kubernetes API and one database session, no Job):
//
//   1. on a slave, STOP SLAVE SQL_THREAD (its applied position stops moving);
//   2. FLUSH TABLES WITH READ LOCK in one session; a watchdog kills that
//      session (which releases the lock) if anything after it hangs;
//   3. read the replication position under the lock;
//   4. create a CSI VolumeSnapshot of the source's data PVC and wait until it
//      is cut (status.creationTime); then UNLOCK TABLES (and START SLAVE);
//   5. wait until it is readyToUse; then store snapshot.json and the
//      manifest (written last, the commit point) in the repository, so that
//      listing, `replicator list`, catalog sync and retention treat it like
//      every other backup.
//
// On any failure the VolumeSnapshot is deleted and a slave replicates again.
import { setTimeout as delay } from "node:timers/promises";
import { TOOL_VERSION } from "../../../version.js";
import type { Conn } from "../../../db/connection.js";
import { queryRows } from "../../../db/connection.js";
import { getServerInfo, getSlaveStatus } from "../../../db/replication.js";
import { failed, oneLine } from "../../../lib/errors.js";
import type { Logger } from "../../../lib/log.js";
import { FORMAT_VERSION, MANIFEST, type Manifest, type ReplicationPosition } from "../../../storage/catalog.js";
import type { Repository } from "../../../storage/repository.js";
import { isNotFound, type KubeRest } from "../../../kube/rest.js";
import {
  SNAPSHOT_API_VERSION,
  SNAPSHOT_METHOD,
  SNAPSHOT_OBJECT,
  buildVolumeSnapshot,
  encodeRecord,
  pvcPath,
  snapshotState,
  vsPath,
  type PvcObj,
  type SnapshotRecord,
  type VolumeSnapshotObj,
} from "./volumesnapshot.js";

export interface SnapshotBackupInput {
  rest: KubeRest;
  repo: Repository;
  /** Open a session to the source as the backup's credentials (called for the lock and for clean-up). */
  connect: () => Promise<Conn>;
  namespace: string;
  cluster: string;
  backupName: string;
  sourcePod: string;
  sourceAddress: string;
  sourcePort: number;
  claimName: string;
  className?: string | undefined;
  /** The watchdog: the lock is never held longer than this. */
  lockTimeoutMs: number;
  /** How long the snapshot may take to become readyToUse after it is cut. */
  readyTimeoutMs: number;
  pollMs?: number;
  startedAt: Date;
  now?: () => Date;
  log: Logger;
}

export interface SnapshotBackupResult {
  name: string;
  size: number;
  sha256: string;
  replication: ReplicationPosition;
  role: "master" | "slave";
  startedAt: string;
  finishedAt: string;
  /** How long writes were blocked. */
  lockHeldMs: number;
  volumeSnapshot: SnapshotRecord;
}

const errorCode = (err: unknown): string => (err as { code?: string }).code ?? "";
const str = (v: unknown): string => (typeof v === "string" ? v : typeof v === "number" || typeof v === "bigint" ? v.toString() : "");

export async function runSnapshotBackup(i: SnapshotBackupInput): Promise<SnapshotBackupResult> {
  const now = i.now ?? (() => new Date());
  const pollMs = i.pollMs ?? 250;
  const log = i.log.child({ backup: i.backupName, pod: i.sourcePod });
  const vsName = buildVolumeSnapshot({ namespace: i.namespace, backupName: i.backupName, cluster: i.cluster, claimName: i.claimName, sourcePod: i.sourcePod }).metadata.name;
  const pvc = await i.rest.get<PvcObj>(pvcPath(i.namespace, i.claimName)).catch((err: unknown) => {
    throw isNotFound(err) ? failed("NoDataVolume", `the data volume claim ${i.claimName} of ${i.sourcePod} does not exist`) : err;
  });

  const c = await i.connect();
  // Where the backup got to: read by the clean-up (and set by the watchdog, from its timer).
  const st = {
    sqlThreadStopped: false,
    locked: false,
    vsCreated: false,
    cut: false,
    watchdogFired: false,
    /** What the snapshot controller reported while the snapshot was not cut yet. */
    pendingError: undefined as string | undefined,
    watchdog: undefined as NodeJS.Timeout | undefined,
  };
  const abort = new AbortController();
  const lockSeconds = Math.max(1, Math.ceil(i.lockTimeoutMs / 1000));
  try {
    const info = await getServerInfo(c);
    const role: "master" | "slave" = info.isSlave ? "slave" : "master";
    // The server's own safety net, should this process vanish without closing the
    // socket: an idle session holding the lock ends after wait_timeout.
    await c.query(`SET SESSION wait_timeout = ${lockSeconds + 30}, lock_wait_timeout = ${lockSeconds}`);
    if (role === "slave") {
      await c.query("STOP SLAVE SQL_THREAD");
      st.sqlThreadStopped = true;
    }

    // ---- the lock, with its watchdog
    st.watchdog = setTimeout(() => {
      st.watchdogFired = true;
      abort.abort();
      log.warn({ lockTimeoutMs: i.lockTimeoutMs }, "watchdog: killing the locking session");
      c.destroy();
      void killSession(i.connect, c.threadId).catch(() => undefined);
    }, i.lockTimeoutMs);
    const lockedAt = Date.now();
    await c.query("FLUSH TABLES WITH READ LOCK");
    st.locked = true;
    log.info({ role }, "FLUSH TABLES WITH READ LOCK held");

    const replication = role === "master" ? await masterPosition(c, info.serverId, info.gtidBinlogPos) : await slavePosition(c);

    // ---- the snapshot
    const vs = buildVolumeSnapshot({ namespace: i.namespace, backupName: i.backupName, cluster: i.cluster, claimName: i.claimName, className: i.className, sourcePod: i.sourcePod });
    await i.rest.create(vsPath(i.namespace), vs);
    st.vsCreated = true;
    log.info({ volumeSnapshot: vsName, pvc: i.claimName }, "VolumeSnapshot created; waiting for it to be cut");
    let current: VolumeSnapshotObj | undefined;
    for (;;) {
      current = await i.rest.get<VolumeSnapshotObj>(vsPath(i.namespace, vsName));
      const state = snapshotState(current);
      if (state.state !== "pending") break;
      st.pendingError = state.error;
      await delay(pollMs, undefined, { signal: abort.signal });
    }

    // ---- cut: release the lock at once
    st.cut = true;
    await c.query("UNLOCK TABLES");
    st.locked = false;
    const lockHeldMs = Date.now() - lockedAt;
    clearTimeout(st.watchdog);
    st.watchdog = undefined;
    if (st.sqlThreadStopped) {
      await c.query("START SLAVE");
      st.sqlThreadStopped = false;
    }
    log.info({ lockHeldMs, creationTime: current.status?.creationTime, pendingError: st.pendingError }, "snapshot cut; lock released");

    // ---- ready
    const readyBy = Date.now() + i.readyTimeoutMs;
    let ready = snapshotState(current);
    while (ready.state !== "ready") {
      if (Date.now() > readyBy) {
        throw failed(
          "SnapshotNotReady",
          `VolumeSnapshot ${vsName} was cut but did not become readyToUse within ${Math.round(i.readyTimeoutMs / 1000)}s${current.status?.error?.message ? `: ${current.status.error.message}` : ""}`,
        );
      }
      await delay(pollMs * 2);
      current = await i.rest.get<VolumeSnapshotObj>(vsPath(i.namespace, vsName));
      ready = snapshotState(current);
    }

    // ---- the record and the manifest (last)
    const record: SnapshotRecord = {
      apiVersion: SNAPSHOT_API_VERSION,
      kind: "VolumeSnapshot",
      namespace: i.namespace,
      name: vsName,
      uid: current.metadata.uid ?? "",
      ...(current.spec.volumeSnapshotClassName ? { volumeSnapshotClassName: current.spec.volumeSnapshotClassName } : {}),
      ...(ready.content ? { volumeSnapshotContentName: ready.content } : {}),
      creationTime: ready.creationTime,
      ...(ready.restoreSize ? { restoreSize: ready.restoreSize } : {}),
      source: {
        persistentVolumeClaimName: i.claimName,
        ...(pvc.spec?.storageClassName ? { storageClassName: pvc.spec.storageClassName } : {}),
        ...(pvc.spec?.resources?.requests?.storage ? { size: pvc.spec.resources.requests.storage } : {}),
      },
    };
    const enc = encodeRecord(record);
    await i.repo.store.put(i.repo.key(i.backupName, SNAPSHOT_OBJECT), enc.body);
    const finishedAt = now().toISOString();
    const manifest: Manifest = {
      formatVersion: FORMAT_VERSION,
      name: i.backupName,
      cluster: i.cluster,
      method: SNAPSHOT_METHOD,
      kind: "snapshot",
      source: { host: i.sourceAddress, port: i.sourcePort, role, serverId: info.serverId, version: info.version },
      startedAt: i.startedAt.toISOString(),
      finishedAt,
      compression: "none",
      objects: [{ name: SNAPSHOT_OBJECT, size: enc.size, sha256: enc.sha256 }],
      replication,
      details: { volumeSnapshot: record, lockHeldMs, sourcePod: i.sourcePod, lock: "ftwrl" },
      tool: { name: "replicator-operator", version: TOOL_VERSION },
    };
    await i.repo.writeManifest(manifest);
    log.info({ manifest: i.repo.key(i.backupName, MANIFEST), lockHeldMs }, "snapshot backup stored");
    return { name: i.backupName, size: enc.size, sha256: enc.sha256, replication, role, startedAt: manifest.startedAt, finishedAt, lockHeldMs, volumeSnapshot: record };
  } catch (err) {
    clearTimeout(st.watchdog);
    const why = st.watchdogFired
      ? failed(
          "LockWatchdog",
          `the watchdog released FLUSH TABLES WITH READ LOCK on ${i.sourcePod} after ${lockSeconds}s: ${
            st.cut
              ? `VolumeSnapshot ${vsName} was cut, but UNLOCK TABLES did not run in time`
              : st.vsCreated
                ? `VolumeSnapshot ${vsName} of ${i.claimName} was not cut (no status.creationTime)${st.pendingError ? `; the snapshot reports: ${st.pendingError}` : ""}; is a CSI snapshotter running for its storage class${i.className ? ` and VolumeSnapshotClass ${i.className}` : ""}? It is deleted, but until a snapshotter handles it, it and its VolumeSnapshotContent stay Terminating (an admin can remove their finalizers)`
                : `the lock or the position read did not finish (${oneLine(err)}); long-running queries block FLUSH TABLES WITH READ LOCK`
          }`,
          { cause: err },
        )
      : err;
    if (st.locked && !st.watchdogFired) await c.query("UNLOCK TABLES").catch(() => undefined);
    if (st.vsCreated) {
      await i.rest.delete(vsPath(i.namespace, vsName)).catch((e: unknown) => {
        if (!isNotFound(e)) log.warn({ err: oneLine(e), volumeSnapshot: vsName }, "could not delete the VolumeSnapshot of the failed backup");
      });
    }
    throw why;
  } finally {
    clearTimeout(st.watchdog);
    if (st.sqlThreadStopped) await restartSlave(c, i.connect, log);
    c.destroy();
  }
}

async function masterPosition(c: Conn, serverId: number, gtidBinlogPos: string): Promise<ReplicationPosition> {
  const [ms] = await queryRows<Record<string, unknown>>(c, "SHOW MASTER STATUS");
  if (!ms) throw failed("NoBinlog", "the source has binary logging off (SHOW MASTER STATUS is empty): a snapshot of it cannot seed a slave; start it with --log-bin");
  // Read again under the lock: nothing commits now.
  const [g] = await queryRows<Record<string, unknown>>(c, "SELECT @@gtid_binlog_pos AS pos");
  const gtid = str(g?.pos) || gtidBinlogPos;
  return {
    role: "master",
    file: str(ms.File) || undefined,
    position: Number(str(ms.Position)) || undefined,
    ...(gtid ? { gtid } : {}),
    sourceServerId: serverId,
  };
}

async function slavePosition(c: Conn): Promise<ReplicationPosition> {
  const s = await getSlaveStatus(c);
  if (!s) throw failed("NotASlave", "replication is not configured on the source any more");
  const [g] = await queryRows<Record<string, unknown>>(c, "SELECT @@gtid_slave_pos AS pos");
  const gtid = str(g?.pos);
  return {
    role: "slave",
    file: s.relayMasterLogFile || undefined,
    position: s.execMasterLogPos || undefined,
    masterHost: s.masterHost || undefined,
    masterPort: s.masterPort || undefined,
    ...(gtid ? { gtid } : {}),
    ...(s.masterServerId ? { sourceServerId: s.masterServerId } : {}),
  };
}

/** KILL the locking session from a second session: the lock goes even if our socket is wedged. */
async function killSession(connect: () => Promise<Conn>, threadId: number | null): Promise<void> {
  if (threadId === null) return;
  const k = await connect();
  try {
    await k.query(`KILL CONNECTION ${threadId}`).catch((err: unknown) => {
      if (errorCode(err) !== "ER_NO_SUCH_THREAD") throw err;
    });
  } finally {
    k.destroy();
  }
}

/** A slave whose SQL thread was stopped for the backup replicates again, whatever happened. */
async function restartSlave(c: Conn, connect: () => Promise<Conn>, log: Logger): Promise<void> {
  try {
    const sameSession = await c.query("START SLAVE").then(
      () => true,
      () => false,
    );
    if (sameSession) return;
    // The locking session is gone (the watchdog killed it): use another.
    const k = await connect();
    try {
      await k.query("START SLAVE");
    } finally {
      k.destroy();
    }
  } catch (err) {
    log.warn({ err: oneLine(err) }, "could not restart replication after the snapshot backup");
  }
}
