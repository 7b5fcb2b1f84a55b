// End to end: the CRDs from crds/, the operator under the chart's RBAC,
// MariaDB pods and Job pods running the agent, and a real S3 server; on a real
// node (make node-e2e: the operator installed with helm, our images run by its
// kubelet) or on the local bench (a control plane of our own, the operator as
// a process, the test kubelet). See test/harness/e2e-env.ts.
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import type { ControlPlane } from "../harness/kube/controlplane.js";
import { FAILING_PLUGIN_IMAGE, foreignDataFiles, mariadbStatefulSet, realCluster, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";
import type { S3Server } from "../harness/s3.js";

const NS = "db";

let env: E2eEnv;
let cp: ControlPlane;
let s3: S3Server;

interface Status { phase?: string; message?: string; [k: string]: unknown }

const crPath = (plural: string, name?: string): string => `/apis/replicator.dev/v1alpha1/namespaces/${NS}/${plural}${name ? `/${name}` : ""}`;

const waitFor = <T>(what: string, fn: () => Promise<T | undefined>, timeoutMs?: number): Promise<T> => env.waitFor(what, fn, timeoutMs);

async function waitPhase(plural: string, name: string, phases = ["Completed", "Failed"]): Promise<Status> {
  return waitFor(`${plural}/${name} to finish`, async () => {
    const o = await cp.api.get<{ status?: Status }>(crPath(plural, name));
    return o.status?.phase && phases.includes(o.status.phase) ? o.status : undefined;
  });
}

const sql = <T = Record<string, unknown>>(pod: string, q: string, params?: unknown[]): Promise<T[]> => env.sql<T>(NS, pod, q, params);

async function count(pod: string, table: string): Promise<number> {
  const [r] = await sql<{ n: number | string }>(pod, `SELECT COUNT(*) AS n FROM ${table}`);
  return Number(r?.n);
}


async function podsReady(names: string[]): Promise<void> {
  await waitFor(`pods ${names.join(", ")} to be ready`, async () => {
    for (const n of names) {
      const p = await cp.api.get<{ status?: { conditions?: { type: string; status: string }[] } }>(`/api/v1/namespaces/${NS}/pods/${n}`);
      if (!p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True")) return undefined;
    }
    return true;
  });
}

beforeAll(async () => {
  env = await startE2eEnv();
  ({ cp, s3 } = env);
  await env.setUpNamespace(NS, "backups", { prefix: "k8s", extraSpec: "  retention: { keep: 2 }\n  syncIntervalSeconds: 10" });
  await cp.applyYaml(
    `
${mariadbStatefulSet(NS, "db", 2)}
---
${mariadbStatefulSet(NS, "fresh", 1)}
`,
    { namespace: NS },
  );
  await podsReady(["db-0", "db-1", "fresh-0"]);
  // db-0 is the master; db-1 replicates from it.
  await sql("db-0", "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
  await sql("db-0", "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB");
  await sql("db-0", `INSERT INTO shop.items VALUES ${Array.from({ length: 300 }, (_, i) => `(${i + 1}, 'item ${i + 1}')`).join(",")}`);
  await sql("db-1", `CHANGE MASTER TO MASTER_HOST='${await env.podAddress(NS, "db-0")}', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD='replpass', MASTER_USE_GTID=slave_pos; START SLAVE`);
  await waitFor("db-1 to replicate", async () => ((await count("db-1", "shop.items").catch(() => 0)) === 300 ? true : undefined));
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

function backup(name: string, extra = ""): string {
  return `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: ${name}, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
${extra}`;
}

describe("ReplicatorBackup", () => {
  it("backs up the StatefulSet's master through a Job; the resource completes with size and position, and the backup is in S3", async () => {
    await cp.applyYaml(backup("first"), { namespace: NS });
    const s = await waitPhase("replicatorbackups", "first");
    expect(s.phase, s.message).toBe("Completed");
    const [m] = await sql<{ pos: string }>("db-0", "SELECT @@gtid_binlog_pos AS pos");
    expect(s.position).toBe(m!.pos);
    expect(s.size).toBeGreaterThan(100);
    expect(s.sourcePod).toBe("db-0");
    const list = await runCli(["list", "--repository", "s3://backups/k8s", "--cluster", "db", "--json"], s3.env);
    expect((list.json!.backups as { name: string }[]).map((b) => b.name)).toContain(s.backupName);
    const events = await cp.api.get<{ items: { reason: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    const reasons = events.items.filter((e) => e.involvedObject.name === "first").map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(["BackupStarted", "BackupSucceeded"]));
  });

  it("restores the latest backup into a fresh server, and the rows match", async () => {
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: into-fresh, namespace: ${NS} }
spec:
  cluster: db
  target: { pod: fresh-0, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const s = await waitPhase("replicatorrestores", "into-fresh");
    expect(s.phase, s.message).toBe("Completed");
    expect(await count("fresh-0", "shop.items")).toBe(300);
    // On a real node: what the restore made the server write belongs to mysql (999).
    expect(await foreignDataFiles(NS, "fresh-0")).toEqual(realCluster ? [] : undefined);
  });

  it("keeps 2 of 3 backups: 2 resources and 2 stored backups remain, the newest among them", async () => {
    for (const n of ["second", "third"]) {
      await cp.applyYaml(backup(n), { namespace: NS });
      const s = await waitPhase("replicatorbackups", n);
      expect(s.phase, s.message).toBe("Completed");
      await new Promise((r) => setTimeout(r, 1100));
    }
    const third = await cp.api.get<{ status: Status }>(crPath("replicatorbackups", "third"));
    const stored = await waitFor("retention to leave 2 backups", async () => {
      const list = await runCli(["list", "--repository", "s3://backups/k8s", "--cluster", "db", "--json"], s3.env);
      const names = (list.json!.backups as { name: string }[]).map((b) => b.name);
      return names.length === 2 ? names : undefined;
    });
    expect(stored).toContain(third.status.backupName);
    const resources = await waitFor("2 backup resources", async () => {
      const l = await cp.api.get<{ items: { metadata: { name: string }; status?: Status }[] }>(crPath("replicatorbackups"));
      const db = l.items.filter((i) => i.status?.cluster === "db");
      return db.length === 2 ? db.map((i) => i.metadata.name).sort() : undefined;
    });
    expect(resources).toEqual(["second", "third"]);
  });

  it("mirrors backups made by another cluster into the same bucket as resources", async () => {
    const other = await runCli(["backup", "--source", `mysql://root@${await env.podAddress(NS, "fresh-0")}:3306`, "--repository", "s3://backups/k8s", "--cluster", "elsewhere", "--json"], s3.env);
    expect(other.exitCode, other.stderr).toBe(0);
    const found = await waitFor("the imported backup resource", async () => {
      const l = await cp.api.get<{ items: { metadata: { name: string }; status?: Status }[] }>(crPath("replicatorbackups"));
      return l.items.find((i) => i.status?.backupName === other.json!.name);
    });
    expect(found.status).toMatchObject({ phase: "Completed", imported: true, cluster: "elsewhere" });
  });

  it("fails with the plugin's own message and leaves a slave it backed up replicating", async () => {
    // A third-party plugin image that takes the slave offline and crashes without bringing it back.
    await cp.applyYaml(
      backup("slave-fails", `  image: ${FAILING_PLUGIN_IMAGE}\n`).replace("statefulSet: db,", "statefulSet: db, role: slave,"),
      { namespace: NS },
    );
    const s = await waitPhase("replicatorbackups", "slave-fails");
    expect(s.phase).toBe("Failed");
    expect(s.message).toBe("failing-plugin: disk quota exceeded while streaming the backup");
    const events = await cp.api.get<{ items: { reason: string; involvedObject: { name: string } }[] }>(`/api/v1/namespaces/${NS}/events`);
    expect(events.items.filter((e) => e.involvedObject.name === "slave-fails").map((e) => e.reason)).toContain("ReplicationRestarted");
    const [st] = await sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
  });

  it("is rejected by the API server when the spec is invalid, with the rule that failed", async () => {
    const bad = cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: both-sources, namespace: ${NS} }
spec:
  source: { pod: db-0, statefulSet: db, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    await expect(bad).rejects.toThrow(/spec\.source: Invalid value: "object": set exactly one of pod or statefulSet/);
  });

  it("waits, with a condition that names the missing repository", async () => {
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: no-secret, namespace: ${NS} }
spec:
  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }
  repository: missing-repo
`,
      { namespace: NS },
    );
    const s = await waitFor("the Pending condition", async () => {
      const o = await cp.api.get<{ status?: Status & { conditions?: { reason: string }[] } }>(crPath("replicatorbackups", "no-secret"));
      return o.status?.conditions?.find((c) => c.reason === "RepositoryNotFound") ? o.status : undefined;
    });
    expect(s.message).toBe("ReplicatorRepository missing-repo not found; create it");
  });

  it("kubectl replicator backup and list follow the resources and exit non-zero on failure", async () => {
    const kenv = { REPLICATOR_MODE: "cluster", KUBECONFIG: cp.kubeconfigPath };
    const ok = await runCli(["backup", "db", "-n", NS, "--credentials-secret", "db-credentials", "--timeout", "120"], kenv);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/replicatorbackup\/db-\d{8}t\d{6} created in db/);
    expect(ok.stdout).toMatch(/Completed: backup \d{8}T\d{6}Z-mysqldump-db-0 stored/);
    expect(ok.stdout).toMatch(/backup \d{8}T\d{6}Z-mysqldump-db-0: [\d.]+ KiB, position 0-\d+-\d+/);
    const list = await runCli(["list", "db", "-n", NS], kenv);
    expect(list.exitCode).toBe(0);
    expect(list.stdout.split("\n")[0]).toMatch(/^RESOURCE\s+BACKUP\s+PHASE\s+METHOD\s+SIZE\s+POSITION$/);
    expect(list.stdout).toContain("Completed");
    const failing = await runCli(["backup", "db", "-n", NS, "--credentials-secret", "db-credentials", "--repository", "nope", "--timeout", "3"], kenv);
    expect(failing.exitCode).toBe(1);
    expect(failing.stderr).toContain("still Pending after 3s");
    const metrics = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
    expect(metrics).toMatch(/replicator_backups_total\{namespace="db",cluster="db",result="succeeded"\} \d+/);
    expect(metrics).toMatch(/replicator_backups_total\{namespace="db",cluster="db",result="failed"\} 1/);
  });

  it("takes backups on a repository's cron schedule", async () => {
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: scheduled, namespace: ${NS} }
spec:
  s3: { bucket: backups, prefix: scheduled, endpoint: "${s3.endpoint}", credentialsSecret: { name: s3-credentials } }
  schedules:
    - name: every-minute
      cron: "* * * * *"
      source: { statefulSet: db, role: slave, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const made = await waitFor("a scheduled backup to complete", async () => {
      const l = await cp.api.get<{ items: { metadata: { name: string; labels?: Record<string, string> }; status?: Status }[] }>(crPath("replicatorbackups"));
      return l.items.find((i) => i.metadata.labels?.["replicator.dev/schedule"] === "every-minute" && i.status?.phase === "Completed");
    }, 150_000);
    expect(made.metadata.name).toMatch(/^scheduled-every-minute-\d{8}t\d{4}$/);
    expect(made.status?.sourcePod).toBe("db-1");
    const repo = await cp.api.get<{ status?: { schedules?: { name: string; lastBackup?: string; nextScheduleTime?: string }[] } }>(crPath("replicatorrepositories", "scheduled"));
    expect(repo.status?.schedules?.[0]).toMatchObject({ name: "every-minute" });
    expect(repo.status?.schedules?.[0]?.nextScheduleTime).toMatch(/:00\.000Z$/);
    // Suspend it so it does not run on through the other tests.
    await cp.api.patch(crPath("replicatorrepositories", "scheduled"), { spec: { schedules: [{ name: "every-minute", cron: "* * * * *", suspend: true, source: { statefulSet: "db", role: "slave", credentialsSecret: { name: "db-credentials" } } }] } }, "merge");
  }, 200_000);

  it("runs ten backups of one slave applied at once one after another, and the slave replicates at the end", async () => {
    // Its own repository without retention: retention would delete resources (and their Jobs) before the check.
    await cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRepository
metadata: { name: ten, namespace: ${NS} }
spec:
  s3: { bucket: backups, prefix: ten, endpoint: "${s3.endpoint}", credentialsSecret: { name: s3-credentials } }
`,
      { namespace: NS },
    );
    const names = Array.from({ length: 10 }, (_, i) => `ten-${i}`);
    const yaml = names.map((n) => backup(n, "  repository: ten\n").replace("statefulSet: db,", "statefulSet: db, role: slave,")).join("\n---\n");
    await cp.applyYaml(yaml, { namespace: NS });
    for (const n of names) {
      const s = await waitPhase("replicatorbackups", n);
      expect(s.phase, `${n}: ${s.message ?? ""}`).toBe("Completed");
      expect(s.sourcePod).toBe("db-1");
    }
    interface JobObj { metadata: { name: string; creationTimestamp: string }; status?: { startTime?: string; completionTime?: string } }
    const jobs = (await cp.api.get<{ items: JobObj[] }>(`/apis/batch/v1/namespaces/${NS}/jobs?labelSelector=replicator.dev%2Foperation%3Dbackup`)).items
      .filter((j) => names.some((n) => j.metadata.name === `${n}-backup`))
      .sort((a, b) => Date.parse(a.metadata.creationTimestamp) - Date.parse(b.metadata.creationTimestamp));
    // One Job per backup, never a second one.
    expect(jobs.map((j) => j.metadata.name).sort()).toEqual(names.map((n) => `${n}-backup`).sort());
    const timeline = jobs.map((j) => `${j.metadata.name} created ${j.metadata.creationTimestamp} started ${j.status?.startTime ?? "?"} completed ${j.status?.completionTime ?? "?"}`);
    console.log(`ten backups of db-1:\n${timeline.join("\n")}`);
    // No two active at once: each Job is created (and started) no earlier than the previous one completed.
    for (let i = 1; i < jobs.length; i++) {
      const prev = jobs[i - 1]!;
      const cur = jobs[i]!;
      expect(prev.status?.completionTime, timeline.join("\n")).toBeDefined();
      expect(Date.parse(cur.metadata.creationTimestamp), timeline.join("\n")).toBeGreaterThanOrEqual(Date.parse(prev.status!.completionTime!));
      expect(Date.parse(cur.status?.startTime ?? ""), timeline.join("\n")).toBeGreaterThanOrEqual(Date.parse(prev.status!.completionTime!));
    }
    const [st] = await sql<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("db-1", "SHOW SLAVE STATUS");
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    await sql("db-0", "INSERT INTO shop.items VALUES (9001, 'after ten backups')");
    await waitFor("db-1 to replicate the new row", async () => ((await sql<{ n: number }>("db-1", "SELECT COUNT(*) AS n FROM shop.items WHERE id = 9001"))[0]?.n === 1 ? true : undefined));
  }, 600_000);

  it("adopts its running Job after being killed mid-backup instead of starting a second one", async () => {
    // Lock the master so the dump waits, and the Job stays running while the operator dies.
    const lock = await mysql.createConnection({ host: await env.podAddress(NS, "db-0"), port: 3306, user: "root", password: "" });
    await lock.query("FLUSH TABLES WITH READ LOCK");
    try {
      await cp.applyYaml(backup("adopted"), { namespace: NS });
      await waitFor("the backup Job", async () => {
        const o = await cp.api.get<{ status?: Status }>(crPath("replicatorbackups", "adopted"));
        return o.status?.phase === "Running" ? true : undefined;
      });
      await env.restartOperator({ kill: true });
    } finally {
      await lock.query("UNLOCK TABLES");
      await lock.end();
    }
    const s = await waitPhase("replicatorbackups", "adopted");
    expect(s.phase, s.message).toBe("Completed");
    const jobs = await cp.api.get<{ items: { metadata: { name: string } }[] }>(`/apis/batch/v1/namespaces/${NS}/jobs?labelSelector=app.kubernetes.io/instance%3Dadopted`);
    expect(jobs.items.map((j) => j.metadata.name)).toEqual(["adopted-backup"]);
    const pods = await cp.api.get<{ items: unknown[] }>(`/api/v1/namespaces/${NS}/pods?labelSelector=job-name%3Dadopted-backup`);
    expect(pods.items).toHaveLength(1);
  });
});

describe("an idle operator", () => {
  it("makes no relist and lists storage at most once per sync interval", async () => {
    const read = async (): Promise<Map<string, number>> => {
      const text = await (await fetch(`${env.operator.healthUrl}/metrics`)).text();
      const m = new Map<string, number>();
      for (const line of text.split("\n")) {
        const hit = /^(replicator_(?:informer_\w+|storage_listings)_total\{[^}]*\}) (\d+)$/.exec(line);
        if (hit) m.set(hit[1]!, Number(hit[2]));
      }
      return m;
    };
    const before = await read();
    await new Promise((r) => setTimeout(r, 60_000));
    const after = await read();
    const delta = (k: string): number => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    const lists = [...after.keys()].filter((k) => k.startsWith("replicator_informer_lists_total")).map((k) => [k, delta(k)] as const);
    const listings = [...after.keys()].filter((k) => k.startsWith("replicator_storage_listings_total")).map((k) => [k, delta(k)] as const);
    console.log(`idle 60 s: informer LISTs ${JSON.stringify(lists)}; storage listings ${JSON.stringify(listings)}`);
    expect(lists.length).toBe(8); // one per informer: pods, jobs, the three kinds, statefulsets, PVCs, the archivers' Deployments
    for (const [k, d] of lists) expect(d, k).toBe(0);
    // Repository "default" syncs every 10 s: at most 7 listings in 60 s; the others every 60 s.
    for (const [k, d] of listings) expect(d, k).toBeLessThanOrEqual(k.includes('repository="default"') ? 7 : 2);
  }, 120_000);
});
