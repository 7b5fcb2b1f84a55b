// `make bench-provision`: the time from `kubectl scale` to a Ready, replicating
// slave, on the e2e bench (real apiserver, operator, test kubelet, MariaDB, S3).
// BENCH_SIZE_MB (default 1024) of InnoDB data is generated on the master,
// backed up through a ReplicatorBackup, then the StatefulSet is scaled 1 → 2.
import { writeFile, mkdir } from "node:fs/promises";
import path from "node:path";
import { mariadbStatefulSet, startE2eEnv, type E2eEnv } from "../test/harness/e2e-env.js";

const NS = "bench";
const sizeMb = Number(process.env.BENCH_SIZE_MB ?? "1024");

interface Cond { type: string; status: string; reason?: string }

async function ready(env: E2eEnv, pod: string): Promise<boolean> {
  const p = await env.cp.api.get<{ status?: { conditions?: Cond[] } }>(`/api/v1/namespaces/${NS}/pods/${pod}`);
  return p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}

async function main(): Promise<void> {
  const env = await startE2eEnv();
  try {
    await env.setUpNamespace(NS, "bench");
    await env.cp.applyYaml(
      mariadbStatefulSet(NS, "db", 1, { provision: true, args: ["--innodb-buffer-pool-size=512M", "--innodb-log-file-size=256M"] }),
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

    const b0 = Date.now();
    await env.cp.applyYaml(`apiVersion: replicator.dev/v1alpha1\nkind: ReplicatorBackup\nmetadata: { name: seed, namespace: ${NS} }\nspec:\n  source: { statefulSet: db, credentialsSecret: { name: db-credentials } }\n`, { namespace: NS });
    const backup = await env.waitFor("the backup", async () => {
      const o = await env.cp.api.get<{ status?: { phase?: string; size?: number; message?: string } }>(`/apis/replicator.dev/v1alpha1/namespaces/${NS}/replicatorbackups/seed`);
      return o.status?.phase === "Completed" || o.status?.phase === "Failed" ? o.status : undefined;
    }, 3_600_000);
    if (backup.phase !== "Completed") throw new Error(`backup failed: ${backup.message ?? ""}`);
    const backupS = (Date.now() - b0) / 1000;
    await env.sql(NS, "db-0", "INSERT INTO big.t VALUES (0, 0, 0, 'written after the backup')");

    const t0 = Date.now();
    await env.cp.api.patch(`/apis/apps/v1/namespaces/${NS}/statefulsets/db`, { spec: { replicas: 2 } }, "merge");
    await env.waitFor("db-1 Ready", async () => ((await ready(env, "db-1").catch(() => false)) ? true : undefined), 3_600_000);
    const readyS = (Date.now() - t0) / 1000;
    const [c] = await env.sql<{ n: number | string }>(NS, "db-1", "SELECT COUNT(*) AS n FROM big.t");
    const ok = Number(c?.n) === rows + 1;
    const report = [
      `# Provisioning a slave: scale → Ready`,
      ``,
      `Data: ${rows} rows, ${sizeMb} MB target raw dump; stored backup ${((backup.size ?? 0) / 1048576).toFixed(1)} MiB (zstd).`,
      ``,
      `| step | seconds |`,
      `|---|--:|`,
      `| ReplicatorBackup of the master (Job start to Completed) | ${backupS.toFixed(1)} |`,
      `| kubectl scale 1 → 2 until the new pod is Ready (restore + replicate + mark) | ${readyS.toFixed(1)} |`,
      ``,
      `Rows on the new slave: ${String(c?.n)} (${ok ? "all, including the write made after the backup" : "MISMATCH"}).`,
    ].join("\n");
    console.log(`\n${report}`);
    await mkdir(path.join(import.meta.dirname, "results"), { recursive: true });
    await writeFile(path.join(import.meta.dirname, "results", "provision.md"), `${report}\n`);
    if (!ok) process.exitCode = 1;
  } finally {
    await env.stop();
  }
}

main().catch((err: unknown) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
