// End to end: a ReplicatorRepository's spec.binlogArchives runs the archiver
// as a Deployment against the StatefulSet's master; the master's binlogs land
// in storage, the repository's status and /metrics say how far the archive
// reaches; a gap the archiver finds shows as a condition with its one line;
// removing the entry removes the Deployment. The test kubelet runs the
// archiver as `node dist/cli/main.js binlog-archive` with the host's
// mariadb-binlog; a real node runs the agent image (Dockerfile.agent).
import { readdir } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import type { ControlPlane } from "../harness/kube/controlplane.js";
import { mariadbStatefulSet, realCluster, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";
import type { S3Server } from "../harness/s3.js";

const NS = "pitr";
const BUCKET = "archives";
const PREFIX = "k8s";
const DEPLOYMENT = "default-binlogs-db";

let env: E2eEnv;
let cp: ControlPlane;
let s3: S3Server;

interface Condition { type: string; status: string; reason: string; message: string }
interface ArchiveStatus {
  cluster: string;
  serverId?: number;
  deployment?: string;
  masterPod?: string;
  ready?: boolean;
  firstRecoverableTime?: string;
  lastRecoverableTime?: string;
  lastArchivedFile?: string;
  lagSeconds?: number;
  conditions?: Condition[];
}

const repoPath = `/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorrepositories/default`;
const deploymentPath = `/apis/apps/v1/namespaces/${NS}/deployments/${DEPLOYMENT}`;
const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs?: number): Promise<T> => env.waitFor(what, fn, timeoutMs);
const sql = <T = Record<string, unknown>>(q: string): Promise<T[]> => env.sql<T>(NS, "db-0", q);

async function archiveStatus(): Promise<ArchiveStatus | undefined> {
  const r = await cp.api.get<{ status?: { binlogArchives?: ArchiveStatus[] } }>(repoPath);
  return r.status?.binlogArchives?.find((a) => a.cluster === "db");
}

const condition = (s: ArchiveStatus | undefined, type: string): Condition | undefined => s?.conditions?.find((c) => c.type === type);

async function setArchives(archives: unknown[]): Promise<void> {
  await cp.api.patch(repoPath, { spec: { binlogArchives: archives } });
}

/** The archived objects of a server, from the S3 server's directory (on a real cluster too: versitygw runs on this machine). */
async function archivedObjects(serverId: number): Promise<string[]> {
  return (await readdir(path.join(s3.root, BUCKET, PREFIX, "db", "binlogs", String(serverId))).catch(() => [] as string[])).sort();
}

async function deploymentExists(): Promise<boolean> {
  return cp.api.get(deploymentPath).then(
    () => true,
    (err: unknown) => {
      if ((err as { status?: number }).status === 404) return false;
      throw err;
    },
  );
}

const SOURCE = { statefulSet: "db", credentialsSecret: { name: "db-credentials" } };

beforeAll(async () => {
  env = await startE2eEnv();
  ({ cp, s3 } = env);
  await env.setUpNamespace(NS, BUCKET, { prefix: PREFIX, extraSpec: "  syncIntervalSeconds: 10" });
  await cp.applyYaml(`${mariadbStatefulSet(NS, "db", 1)}\n---\n${mariadbStatefulSet(NS, "fresh", 1)}`, { namespace: NS });
  for (const pod of ["db-0", "fresh-0"]) {
    await waitFor(`${pod} to be ready`, async () => {
      const p = await cp.api.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`/api/v1/namespaces/${NS}/pods/${pod}`);
      return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ? true : undefined;
    });
  }
  await sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB");
  await sql(`INSERT INTO shop.orders VALUES ${Array.from({ length: 50 }, (_, i) => `(${i + 1}, 'order ${i + 1}')`).join(",")}`);
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("spec.binlogArchives", () => {
  let serverId = 0;
  let accident = "";
  let accidentAt = new Date(0);

  it("runs the archiver as a one-replica Recreate Deployment against the master, with credentials only from Secrets", async () => {
    await setArchives([{ source: SOURCE, flushIntervalSeconds: 2 }]);
    const d = await waitFor("the archiver Deployment", async () =>
      (await deploymentExists()) ? cp.api.get<{ spec: { replicas: number; strategy: { type: string }; template: { spec: { containers: { args: string[]; env: { name: string; value?: string }[] }[] } } } }>(deploymentPath) : undefined,
    );
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.strategy.type).toBe("Recreate");
    const c = d.spec.template.spec.containers[0]!;
    expect(c.args.slice(0, 2)).toEqual(["binlog-archive", "--source"]);
    expect(c.args.join(" ")).toContain(`--repository s3://${BUCKET}/${PREFIX} --cluster db`);
    expect(c.env.filter((e) => e.value !== undefined).map((e) => e.name)).not.toContain("REPLICATOR_DB_PASSWORD");
    const [row] = await sql<{ sid: number | string }>("SELECT @@server_id AS sid");
    serverId = Number(row!.sid);
    const s = await waitFor("the archiver to run", async () => {
      const a = await archiveStatus();
      return a?.ready && condition(a, "Archiving")?.status === "True" ? a : undefined;
    });
    expect(s).toMatchObject({ deployment: DEPLOYMENT, masterPod: "db-0" });
  });

  it("archives the master's binlogs as they close (FLUSH BINARY LOGS), and the status says how far they reach", async () => {
    // A base backup: what makes the archive usable for point-in-time recovery (firstRecoverableTime).
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: base, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    await waitFor("the base backup", async () => {
      const b = await cp.api.get<{ status?: { phase?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/base`);
      if (b.status?.phase === "Failed") throw new Error("the base backup failed");
      return b.status?.phase === "Completed" ? true : undefined;
    });
    await sql("INSERT INTO shop.orders VALUES (1001, 'after the backup'), (1002, 'also after')");
    // Binlog event times are whole seconds: the accident comes over two seconds later, so one second before it is after the inserts.
    await new Promise((r) => setTimeout(r, 2200));
    const [t] = await sql<{ t: string | number }>("SELECT UNIX_TIMESTAMP(NOW(6)) AS t");
    accidentAt = new Date(Math.round(Number(t!.t) * 1000));
    // The accident, whose GTID (and time) the point-in-time restores below stop before.
    await sql("DELETE FROM shop.orders WHERE id > 1000");
    const [pos] = await sql<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    accident = pos!.pos;
    const [{ file } = { file: "" }] = await sql<{ file: string }>("SHOW MASTER STATUS").then((rows) => rows.map((r) => ({ file: String((r as { File?: unknown }).File) })));
    await sql("FLUSH BINARY LOGS");
    const objects = await waitFor(`${file} archived as a complete file`, async () => {
      const o = await archivedObjects(serverId);
      return o.includes(file) && o.includes(`${file}.index.json`) ? o : undefined;
    });
    expect(objects).toContain(`${file}.index.json`);
    const s = await waitFor("status.lastRecoverableTime and firstRecoverableTime", async () => {
      const a = await archiveStatus();
      return a?.lastRecoverableTime && a.firstRecoverableTime && a.serverId === serverId && a.lagSeconds === 0 ? a : undefined;
    });
    expect(condition(s, "Recoverable")).toMatchObject({ status: "True", reason: "Recoverable" });
    expect(Date.parse(s.lastRecoverableTime!)).toBeGreaterThanOrEqual(Date.parse(s.firstRecoverableTime!));
    expect(accident).toMatch(/^0-\d+-\d+$/);
    const metrics = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`replicator_binlog_archive_last_recoverable_timestamp_seconds\\{namespace="${NS}",repository="default",cluster="db"\\} ${Math.round(Date.parse(s.lastRecoverableTime!) / 1000)}`));
    expect(metrics).toMatch(new RegExp(`replicator_binlog_archive_lag_seconds\\{namespace="${NS}",repository="default",cluster="db"\\} 0`));
  });

  it("ReplicatorRestore.spec.untilGtid restores the base backup and replays the archive up to, not including, the accident", async () => {
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: before-accident, namespace: ${NS} }
spec:
  cluster: db
  target: { pod: fresh-0, credentialsSecret: { name: db-credentials } }
  untilGtid: "${accident}"
`,
      { namespace: NS },
    );
    const st = await waitFor("the point-in-time restore", async () => {
      const r = await cp.api.get<{ status?: { phase?: string; message?: string; backupName?: string; until?: string; pointInTime?: { replayed?: number; stopGtid?: string } } }>(
        `/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorrestores/before-accident`,
      );
      return r.status?.phase === "Completed" || r.status?.phase === "Failed" ? r.status : undefined;
    }, realCluster ? 300_000 : 180_000);
    expect(st.phase, st.message).toBe("Completed");
    const base = await cp.api.get<{ status?: { backupName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/base`);
    expect(st.backupName).toBe(base.status?.backupName);
    expect(st.until).toBe(`GTID ${accident}`);
    expect(st.pointInTime).toMatchObject({ stopGtid: accident, replayed: 1 });
    const rows = await env.sql<{ id: number | string }>(NS, "fresh-0", "SELECT id FROM shop.orders WHERE id > 1000 ORDER BY id");
    expect(rows.map((r) => Number(r.id))).toEqual([1001, 1002]);
    const [n] = await env.sql<{ n: number | string }>(NS, "fresh-0", "SELECT COUNT(*) AS n FROM shop.orders");
    expect(Number(n!.n)).toBe(52);
  });

  it("ReplicatorRestore.spec.until, one second before the accident, gives the rows as they were before it", async () => {
    // fresh-0 holds the untilGtid restore: empty it as a new server (no tables, no GTID state).
    await env.sql(NS, "fresh-0", "DROP DATABASE shop");
    await env.sql(NS, "fresh-0", "RESET MASTER");
    await env.sql(NS, "fresh-0", "SET GLOBAL gtid_slave_pos = ''");
    const until = new Date(accidentAt.getTime() - 1000).toISOString();
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: second-before-accident, namespace: ${NS} }
spec:
  cluster: db
  target: { pod: fresh-0, credentialsSecret: { name: db-credentials } }
  until: "${until}"
`,
      { namespace: NS },
    );
    const st = await waitFor("the point-in-time restore by time", async () => {
      const r = await cp.api.get<{ status?: { phase?: string; message?: string; backupName?: string; until?: string; pointInTime?: { replayed?: number; stopGtid?: string; stopTime?: string } } }>(
        `/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorrestores/second-before-accident`,
      );
      return r.status?.phase === "Completed" || r.status?.phase === "Failed" ? r.status : undefined;
    }, realCluster ? 300_000 : 180_000);
    expect(st.phase, st.message).toBe("Completed");
    const base = await cp.api.get<{ status?: { backupName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/base`);
    expect(st.backupName).toBe(base.status?.backupName);
    expect(st.until).toBe(until);
    // It stopped at the accident, the first transaction at or after the time, and replayed the one before it.
    expect(st.pointInTime).toMatchObject({ stopGtid: accident, replayed: 1 });
    expect(Date.parse(st.pointInTime!.stopTime!)).toBeGreaterThanOrEqual(Date.parse(until));
    const rows = await env.sql<{ id: number | string }>(NS, "fresh-0", "SELECT id FROM shop.orders WHERE id > 1000 ORDER BY id");
    expect(rows.map((r) => Number(r.id))).toEqual([1001, 1002]);
    const [n] = await env.sql<{ n: number | string }>(NS, "fresh-0", "SELECT COUNT(*) AS n FROM shop.orders");
    expect(Number(n!.n)).toBe(52);
  });

  it("the operator's retention (spec.retention.keep) prunes the oldest backup and the archived binlogs no kept backup needs, keeps the newest complete one, and says so in an event", async () => {
    // More closed binlogs after the base backup.
    for (const id of [3001, 3002]) {
      await sql(`INSERT INTO shop.orders VALUES (${id}, 'before the second backup')`);
      await sql("FLUSH BINARY LOGS");
    }
    const logs = (await sql<{ Log_name: string }>("SHOW BINARY LOGS")).map((x) => x.Log_name);
    const closed = logs.slice(0, -1);
    const complete = (objects: string[]): string[] => objects.filter((o) => /\.\d+$/.test(o));
    const before = await waitFor("every closed binlog archived as a complete file", async () => {
      const o = await archivedObjects(serverId);
      return closed.every((f) => o.includes(f) && o.includes(`${f}.index.json`)) ? o : undefined;
    });
    const archived = complete(before);
    expect(archived.length).toBeGreaterThanOrEqual(3);
    const newest = archived[archived.length - 1]!;
    const base = await cp.api.get<{ status?: { backupName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/base`);

    await cp.api.patch(repoPath, { spec: { retention: { keep: 1 } } });
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: later, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const later = await waitFor("the second backup", async () => {
      const b = await cp.api.get<{ status?: { phase?: string; message?: string; backupName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/later`);
      if (b.status?.phase === "Failed") throw new Error(`the second backup failed: ${b.status.message ?? ""}`);
      return b.status?.phase === "Completed" ? b.status : undefined;
    });
    // Every archived binlog is in the kept backup (it was taken after them all): all go but the newest complete one, which the archiver resumes after.
    const gone = archived.slice(0, -1);
    const event = await waitFor("the ArchiveRetentionApplied event", async () => {
      const events = await cp.api.get<{ items: { reason: string; message: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
      return events.items.find((e) => e.involvedObject.name === "later" && e.reason === "ArchiveRetentionApplied");
    });
    expect(event.message).toBe(`deleted ${gone.length} archived binlog(s) no kept backup needs: ${gone.map((f) => `${serverId}/${f}`).join(", ")}`);
    const after = await archivedObjects(serverId);
    expect(complete(after)).toEqual([newest]);
    expect(after).toContain(`${newest}.index.json`);
    for (const f of gone) expect(after).not.toContain(`${f}.index.json`);
    const list = await runCli(["list", "--repository", `s3://${BUCKET}/${PREFIX}`, "--cluster", "db", "--json"], s3.env);
    expect((list.json!.backups as { name: string }[]).map((b) => b.name)).toEqual([later.backupName]);
    expect(base.status?.backupName).not.toBe(later.backupName);
    await waitFor("the pruned backup's resource to go", async () =>
      cp.api.get(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/base`).then(
        () => undefined,
        (err: unknown) => ((err as { status?: number }).status === 404 ? true : Promise.reject(err as Error)),
      ),
    );
  });

  it("a gap (binlogs purged while no archiver ran) shows as ArchiveGap with the archiver's own line, not only as a crash loop", async () => {
    await setArchives([{ source: SOURCE, flushIntervalSeconds: 2, suspend: true }]);
    await waitFor("the suspended archiver's Deployment to go", async () => ((await deploymentExists()) ? undefined : true));
    await waitFor("the archiver pod to be gone", async () => {
      const l = await cp.api.get<{ items: unknown[] }>(`/api/v1/namespaces/${NS}/pods`, { labelSelector: "replicator.dev/operation=binlog-archive" });
      return l.items.length === 0 ? true : undefined;
    });
    expect(condition(await archiveStatus(), "Archiving")).toMatchObject({ status: "False", reason: "Suspended" });
    await sql("INSERT INTO shop.orders VALUES (2001, 'never archived')");
    // The stopped archiver's dump thread on the master may outlive its connection (blocked waiting
    // for events, it notices a dead peer only when a write to it fails) and would keep PURGE from
    // removing the binlog it was at: end it, as a master's operator would.
    for (const t of await sql<{ id: number | string }>("SELECT ID AS id FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'")) {
      await sql(`KILL ${Number(t.id)}`).catch(() => undefined);
    }
    await sql("FLUSH BINARY LOGS");
    await sql("INSERT INTO shop.orders VALUES (2002, 'never archived either')");
    await sql("FLUSH BINARY LOGS");
    const [{ file } = { file: "" }] = await sql("SHOW MASTER STATUS").then((rows) => rows.map((r) => ({ file: String((r as { File?: unknown }).File) })));
    // MariaDB keeps a binlog until its binlog checkpoint is written (InnoDB has the commits durably) and while a dump thread reads it: retry.
    const logs = await waitFor(`the master to purge its binlogs up to ${file}`, async () => {
      await sql(`PURGE BINARY LOGS TO '${file}'`);
      const l = (await sql<{ Log_name: string }>("SHOW BINARY LOGS")).map((x) => x.Log_name);
      return l.length === 1 ? l : undefined;
    }, 60_000);
    expect(logs).toEqual([file]);
    await setArchives([{ source: SOURCE, flushIntervalSeconds: 2 }]);
    const s = await waitFor("ArchiveGap in the status", async () => {
      const a = await archiveStatus();
      return condition(a, "Archiving")?.reason === "ArchiveGap" ? a : undefined;
    }, realCluster ? 300_000 : 180_000).catch(async (err: unknown) => {
      const pods = await cp.api.get<{ items: { metadata: { name: string }; status?: unknown }[] }>(`/api/v1/namespaces/${NS}/pods`, { labelSelector: "replicator.dev/operation=binlog-archive" });
      throw new Error(`${String(err).slice(0, 300)}\nstatus: ${JSON.stringify(await archiveStatus())}\narchiver pods: ${JSON.stringify(pods.items.map((p) => [p.metadata.name, p.status]))}`);
    });
    const c = condition(s, "Archiving")!;
    expect(c.status).toBe("False");
    expect(c.message).toMatch(new RegExp(`^binlog archive gap: the archive s3://${BUCKET}/${PREFIX}/db/binlogs/${serverId} ends with `));
    expect(c.message).toContain(`its oldest is ${file}`);
    expect(s.ready).toBe(false);
  });

  it("removing the entry removes the Deployment (the archive in storage stays)", async () => {
    await setArchives([]);
    await waitFor("the Deployment to be deleted", async () => ((await deploymentExists()) ? undefined : true));
    await waitFor("status.binlogArchives to empty", async () => ((await cp.api.get<{ status?: { binlogArchives?: unknown[] } }>(repoPath)).status?.binlogArchives?.length === 0 ? true : undefined));
    expect((await archivedObjects(serverId)).length).toBeGreaterThan(0);
  });
});
