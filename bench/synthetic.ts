// What the operator and list benches share: synthetic backups (a name and a
// manifest, one a minute from 2025-01-01) written straight into versitygw's
// posix directory, and the median.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

/**
 * Backup i of a synthetic archive: named one a minute from 2025-01-01, and
 * finished one a minute from `finishedFrom` (a day ahead for backups that are
 * listed but never imported).
 */
export function syntheticBackup(i: number, cluster: string, finishedFrom = Date.UTC(2025, 0, 1)): { name: string; manifest: string } {
  const finished = new Date(finishedFrom + i * 60_000);
  const started = new Date(finished.getTime() - 5_000);
  const stamp = new Date(Date.UTC(2025, 0, 1) + i * 60_000).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}Z$/, "Z");
  const name = `${stamp}-mysqldump-archive-0`;
  const manifest = {
    formatVersion: 1,
    name,
    cluster,
    method: "mysqldump",
    kind: "logical",
    source: { host: "archive-0.archive", port: 3306, role: "master", serverId: 1, version: "10.11.0-MariaDB" },
    startedAt: started.toISOString(),
    finishedAt: finished.toISOString(),
    compression: "zstd",
    objects: [{ name: "data.sql.zst", size: 13, sha256: "0".repeat(64), rawSize: 20 }],
    replication: { role: "master", gtid: `0-1-${i + 1}`, file: "mysql-bin.000001", position: 4 + i },
    details: { synthetic: true },
    tool: { name: "replicator", version: "bench" },
  };
  return { name, manifest: JSON.stringify(manifest) };
}

/**
 * Backups [from, to) as files in versitygw's posix directory (`bucketDir` is
 * its root joined with the bucket; versitygw serves such files as objects,
 * without the ETag xattr it keeps for its own PUTs), each manifest last, as a
 * backup writes it. 10,000 through the SDK take minutes on 2 busy cores.
 */
export async function writeSyntheticFiles(bucketDir: string, cluster: string, from: number, to: number, finishedFrom?: number): Promise<void> {
  let next = from;
  const worker = async (): Promise<void> => {
    while (next < to) {
      const { name, manifest } = syntheticBackup(next++, cluster, finishedFrom);
      const dir = path.join(bucketDir, cluster, name);
      await mkdir(dir, { recursive: true });
      await writeFile(path.join(dir, "data.sql.zst"), "not-real-data");
      await writeFile(path.join(dir, "manifest.json"), manifest);
    }
  };
  await Promise.all(Array.from({ length: 4 }, worker));
}
