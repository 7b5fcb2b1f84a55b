// The parallel logical method through the operator: a mysqldump_parallel
// backup taken by a Job (two mariadb-dump processes from one snapshot, in the
// agent's image), restored by a Job into another server's pod over two
// connections, the rows of the tables that qualify by LOAD DATA LOCAL from the
// agent (its own mysql2 connection, the server's default local_infile), the
// others (a BIT column) by the mariadb client. On a real node (make node-e2e)
// or on the local bench (see test/harness/e2e-env.ts).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mariadbStatefulSet, podReady, resourceFinished, startE2eEnv, type E2eEnv } from "../harness/e2e-env.js";

const NS = "parallel";
let env: E2eEnv;

interface Status { phase?: string; message?: string; backupName?: string; method?: string }
const sql = <T = Record<string, unknown>>(pod: string, q: string): Promise<T[]> => env.sql<T>(NS, pod, q);
const finished = (plural: string, name: string): Promise<Status> => resourceFinished<Status>(env, NS, plural, name);

/** CHECKSUM TABLE of each table, as `db.table=sum`. */
async function checksums(pod: string): Promise<string[]> {
  const rows = await sql<{ Table: string; Checksum: string | number | null }>(pod, "CHECKSUM TABLE shop.items, shop.flags");
  return rows.map((r) => `${r.Table}=${String(r.Checksum)}`);
}

async function loads(pod: string): Promise<number> {
  const [r] = await sql<{ Value: string }>(pod, "SHOW GLOBAL STATUS LIKE 'Com_load'");
  return Number(r?.Value);
}

beforeAll(async () => {
  env = await startE2eEnv();
  await env.setUpNamespace(NS, "parallel", { prefix: "k8s" });
  await env.cp.applyYaml(`${mariadbStatefulSet(NS, "src", 1)}\n---\n${mariadbStatefulSet(NS, "dst", 1)}`, { namespace: NS });
  await Promise.all([podReady(env, NS, "src-0"), podReady(env, NS, "dst-0")]);
  await sql(
    "src-0",
    "CREATE DATABASE shop; " +
      "CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(60), price DECIMAL(10,2), note TEXT, img BLOB, made DATETIME(3), KEY by_name (name)) ENGINE=InnoDB; " +
      "CREATE TABLE shop.flags (id INT PRIMARY KEY, b BIT(8)) ENGINE=InnoDB",
  );
  // Quotes, backslashes, a newline, a tab, NULLs and binary bytes: what a row line must carry through LOAD DATA.
  const rows = Array.from({ length: 4000 }, (_, i) => {
    const n = i + 1;
    const note = n % 7 === 0 ? "NULL" : `'it''s \\\\ a line\\nand a\\ttab ${n}'`;
    return `(${n}, 'item ${n}', ${n}.25, ${note}, ${n % 5 === 0 ? "NULL" : `UNHEX('00FF0A27${(n % 256).toString(16).padStart(2, "0")}')`}, '2026-01-01 00:00:00.123' + INTERVAL ${n} MINUTE)`;
  });
  await sql("src-0", `INSERT INTO shop.items VALUES ${rows.join(",")}`);
  await sql("src-0", `INSERT INTO shop.flags VALUES ${Array.from({ length: 50 }, (_, i) => `(${i + 1}, b'${(i % 256).toString(2)}')`).join(",")}`);
}, 600_000);

afterAll(async () => {
  await (env as E2eEnv | undefined)?.stop();
}, 120_000);

describe("mysqldump_parallel through the operator", () => {
  it("backs up with two dump processes and restores into another pod: every table's CHECKSUM TABLE equal, the loadable rows by LOAD DATA", async () => {
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorBackup
metadata: { name: par, namespace: ${NS} }
spec:
  source: { statefulSet: src, credentialsSecret: { name: db-credentials } }
  method: mysqldump_parallel
  options: { threads: "2" }
`,
      { namespace: NS },
    );
    const b = await finished("replicatorbackups", "par");
    expect(b.phase, b.message).toBe("Completed");
    expect(b.method).toBe("mysqldump_parallel");

    const before = await loads("dst-0");
    await env.cp.applyYaml(
      `
apiVersion: replicator.dev/v1alpha1
kind: ReplicatorRestore
metadata: { name: par-into-dst, namespace: ${NS} }
spec:
  cluster: src
  backup: ${b.backupName ?? "latest"}
  target: { pod: dst-0, credentialsSecret: { name: db-credentials } }
`,
      { namespace: NS },
    );
    const r = await finished("replicatorrestores", "par-into-dst");
    expect(r.phase, r.message).toBe("Completed");
    expect(await checksums("dst-0")).toEqual(await checksums("src-0"));
    const [n] = await sql<{ n: number | string }>("dst-0", "SELECT COUNT(*) AS n FROM shop.items WHERE note LIKE 'it''s \\\\\\\\ a line\\nand a\\ttab %'");
    expect(Number(n?.n)).toBe(4000 - Math.floor(4000 / 7));
    // shop.items qualifies (one LOAD DATA per part; the restore splits it with two threads); shop.flags (BIT) does not.
    expect((await loads("dst-0")) - before).toBeGreaterThanOrEqual(1);
  });
});
