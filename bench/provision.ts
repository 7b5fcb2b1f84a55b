// `make bench-provision`: the time from `kubectl scale` to a Ready, replicating
// slave, per backup method, on the e2e bench (real apiserver, operator, test
// kubelet, MariaDB, S3). BENCH_SIZE_MB (default 1024) of InnoDB data is
// generated on the master; for each method in BENCH_METHODS (default
// "mysqldump,mariabackup") a ReplicatorBackup is taken, the StatefulSet's
// replicator.dev/provision annotation is pointed at it, and the StatefulSet
// is scaled up by one. The StatefulSet has the `replicator provision` init
// container, so a physical backup is restored before mariadbd starts and a
// logical one by a restore Job once it runs.
import { writeFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { mariadbStatefulSet, startE2eEnv, type E2eEnv } from "../test/harness/e2e-env.js";

const NS = "bench";
const sizeMb = Number(process.env.BENCH_SIZE_MB ?? "1024");
const methods = (process.env.BENCH_METHODS ?? "mysqldump,mariabackup").split(",").map((m) => m.trim()).filter(Boolean);

interface Cond { type: string; status: string; reason?: string }

async function ready(env: E2eEnv, pod: string): Promise<boolean> {
  const p = await env.cp.api.get<{ status?: { conditions?: Cond[] } }>(`/api/v1/namespaces/${NS}/pods/${pod}`);
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

interface Row { method: string; backupS: number; storedMiB: number; readyS: number; rows: string; ok: boolean }

async function provisionWith(env: E2eEnv, method: string, ordinal: number, expectRows: number): Promise<Row> {
  const name = `seed-${method}`;
  const b0 = Date.now();
  await env.cp.applyYaml(
    `apiVersion: replicator.dev/v1alpha1\nkind: ReplicatorBackup\nmetadata: { name: ${name}, namespace: ${NS} }\nspec:\n  method: ${method}\n  source: { statefulSet: db, role: master, credentialsSecret: { name: db-credentials } }\n`,
    { namespace: NS },
  );
  const backup = await env.waitFor(`the ${method} backup`, async () => {
    const o = await env.cp.api.get<{ status?: { phase?: string; size?: number; message?: string; backupName?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/${name}`);
    return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
  }, 3_600_000);
  if (backup.phase !== "Completed") throw new Error(`${method} backup failed: ${backup.message ?? ""}`);
  const backupS = (Date.now() - b0) / 1000;
  await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { metadata: { annotations: { "replicator.dev/provision": backup.backupName ?? "latest" } } }, "merge");
  await env.sql(NS, "db-0", `INSERT INTO big.t VALUES (-${ordinal}, 0, 0, 'written after the ${method} backup')`);

  const t0 = Date.now();
  await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: ordinal + 1 } }, "merge");
  const pod = `db-${ordinal}`;
  await env.waitFor(`${pod} Ready`, async () => ((await ready(env, pod).catch(() => false)) ? true : undefined), 3_600_000);
  const readyS = (Date.now() - t0) / 1000;
  const [c] = await env.sql<{ n: number | string }>(NS, pod, "SELECT COUNT(*) AS n FROM big.t");
  return { method, backupS, storedMiB: (backup.size ?? 0) / 1048576, readyS, rows: String(c?.n), ok: Number(c?.n) === expectRows };
}

async function main(): Promise<void> {
  const env = await startE2eEnv();
  try {
    await env.setUpNamespace(NS, "bench");
    await env.cp.applyYaml(
      mariadbStatefulSet(NS, "db", 1, { provision: true, initContainer: true, args: ["--innodb-buffer-pool-size=512M", "--innodb-log-file-size=256M"] }),
      { namespace: NS },
    );
    await env.waitFor("the master", async () => ((await ready(env, "db-0")) ? true : undefined), 120_000);
    await env.sql(NS, "db-0", "CREATE USER 'repl'@'%' IDENTIFIED BY 'replpass'; GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'repl'@'%'");
    // About 230 bytes of dump per row.
    const rows = Math.round((sizeMb * 1024 * 1024) / 230);
    console.log(`generating ~${sizeMb} MB (${rows} rows) on the master ...`);
    const g0 = Date.now();
    await env.sql(NS, "db-0", "CREATE DATABASE big; CREATE TABLE big.t (id INT PRIMARY KEY, a BIGINT, b DECIMAL(12,2), c VARCHAR(200)) ENGINE=InnoDB");
    for (let done = 0; done < rows; done += 500_000) {
      const n = Math.min(500_000, rows - done);
      await env.sql(NS, "db-0", `INSERT INTO big.t SELECT seq + ${done}, seq * 7919, seq / 7, CONCAT(MD5(seq + ${done}), '-', SHA1(seq), '-', REPEAT(CHAR(65 + seq % 26), 60)) FROM big.seq_1_to_${n}`);
    }
    console.log(`generated in ${((Date.now() - g0) / 1000).toFixed(0)} s`);

    const results: Row[] = [];
    for (const [i, method] of methods.entries()) {
      const r = await provisionWith(env, method, i + 1, rows + i + 1);
      console.log(`${method}: backup ${r.backupS.toFixed(1)} s, scale → Ready ${r.readyS.toFixed(1)} s`);
      results.push(r);
    }
    const report = [
      `# Provisioning a slave: scale → Ready, per method`,
      ``,
      `Data: ${rows} rows, ${sizeMb} MB target raw dump. Each new slave must also replicate a row written after its backup.`,
      ``,
      `| method | ReplicatorBackup (s) | stored (MiB) | kubectl scale → Ready (s) | rows on the slave |`,
      `|---|--:|--:|--:|---|`,
      ...results.map((r) => `| ${r.method} | ${r.backupS.toFixed(1)} | ${r.storedMiB.toFixed(1)} | ${r.readyS.toFixed(1)} | ${r.rows}${r.ok ? "" : " MISMATCH"} |`),
      ``,
      `Logical: a restore Job loads the dump into the running server. Physical: the init container restores before mariadbd starts.`,
    ].join("\n");
    console.log(`\n${report}`);
    await mkdir(path.join(import.meta.dirname, "results"), { recursive: true });
    await writeFile(path.join(import.meta.dirname, "results", "provision.md"), `${report}\n`);
    if (results.some((r) => !r.ok)) process.exitCode = 1;
  } finally {
    await env.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
