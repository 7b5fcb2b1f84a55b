// The logical path's byte pipes: mariadb-dump → zstd and zstd -d → mariadb
// run as children connected by OS pipes. What a user relies on: the stored
// object is plain zstd (the stock tool reads it, to the recorded raw size),
// the position is the dump's own, backups of either compressor restore with
// the other, a missing zstd tool falls back to in-process zlib saying so,
// and a failing or killed zstd is reported as such with nothing listed.
import { chmod, mkdir, mkdtemp, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { checksums, startMariaDb, type MariaDb } from "../harness/mariadb.js";
import { seedShop } from "../harness/fixtures.js";

let master: MariaDb;
let work: string;
const servers: MariaDb[] = [];

async function freshServer(): Promise<MariaDb> {
  const s = await startMariaDb();
  servers.push(s);
  return s;
}

/** A PATH directory with the MariaDB client tools and, optionally, a zstd of our own. */
async function toolDir(name: string, zstdScript?: string): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(dir);
  for (const tool of ["mariadb-dump", "mariadb", "sh", "head", "cat", "kill"]) {
    const where = (await execa("sh", ["-c", `command -v ${tool}`])).stdout.trim();
    await symlink(where, path.join(dir, tool));
  }
  if (zstdScript !== undefined) {
    await writeFile(path.join(dir, "zstd"), zstdScript);
    await chmod(path.join(dir, "zstd"), 0o755);
  }
  return dir;
}

async function backup(cluster: string, repo: string, env: Record<string, string> = {}): Promise<Awaited<ReturnType<typeof runCli>>> {
  await mkdir(repo.replace(/^file:\/\//, ""), { recursive: true });
  return runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", cluster, "--json"], env);
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "replicator-zstd-pipe-"));
  master = await startMariaDb({ binlog: true, serverId: 1 });
  await seedShop(master, { rows: 3000 });
});

afterAll(async () => {
  await Promise.all([...servers, master].map((s) => s.destroy()));
});

describe("the zstd tool carries the bytes", () => {
  it("stores plain zstd that the stock tool reads to the recorded raw size, with the dump's own position", async () => {
    const repo = path.join(work, "repo-plain");
    const b = await backup("plain", `file://${repo}`);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stderr).toBe("");
    const name = b.json!.name as string;
    const file = path.join(repo, "plain", name, "data.sql.zst");
    const manifest = JSON.parse(await readFile(path.join(repo, "plain", name, "manifest.json"), "utf8")) as {
      objects: { rawSize: number }[];
      replication: { file: string; position: number; gtid: string };
    };
    const dump = Buffer.from((await execa("zstd", ["-dc", file], { encoding: "buffer", stripFinalNewline: false })).stdout);
    expect(dump.length).toBe(manifest.objects[0]!.rawSize);
    expect(b.json!.rawSize).toBe(dump.length);
    const text = dump.toString("latin1");
    // mariadb-dump prints the coordinates at its head and the GTID at its very end.
    expect(text).toContain(`MASTER_LOG_FILE='${manifest.replication.file}', MASTER_LOG_POS=${manifest.replication.position};`);
    expect(text).toContain(`SET GLOBAL gtid_slave_pos='${manifest.replication.gtid}';`);
  });

  it("backups written by either compressor restore with the other, table checksums equal", async () => {
    const repo = `file://${path.join(work, "repo-cross")}`;
    const noZstd = { PATH: await toolDir("no-zstd") };
    const want = await checksums(master, ["shop", "app"]);

    // Written in-process (no zstd tool: a warning says so), restored through the tool.
    const inProcess = await backup("cross", repo, noZstd);
    expect(inProcess.exitCode, inProcess.stderr).toBe(0);
    expect(inProcess.stderr).toMatch(/zstd tool is not usable.*install zstd/);
    const t1 = await freshServer();
    const r1 = await runCli(["restore", "--target", t1.url, "--repository", repo, "--cluster", "cross", "--backup", inProcess.json!.name as string, "--json"]);
    expect(r1.exitCode, r1.stderr).toBe(0);
    expect(r1.json!.rawSize).toBe(inProcess.json!.rawSize);
    expect(await checksums(t1, ["shop", "app"])).toEqual(want);

    // Written through the tool, restored in-process.
    const piped = await backup("cross", repo);
    expect(piped.exitCode, piped.stderr).toBe(0);
    expect(piped.json!.rawSize).toBe(inProcess.json!.rawSize);
    const t2 = await freshServer();
    const r2 = await runCli(["restore", "--target", t2.url, "--repository", repo, "--cluster", "cross", "--backup", piped.json!.name as string, "--json"], noZstd);
    expect(r2.exitCode, r2.stderr).toBe(0);
    expect(await checksums(t2, ["shop", "app"])).toEqual(want);
  });

  it("a zstd that fails or is killed mid-backup is named, and nothing is listed", async () => {
    const repo = `file://${path.join(work, "repo-bad-zstd")}`;
    const failing = await toolDir(
      "failing-zstd",
      "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nhead -c 4096 >/dev/null\necho 'zstd: error 12 : simulated failure' >&2\nexit 12\n",
    );
    const f = await backup("bad", repo, { PATH: failing });
    expect(f.exitCode).toBe(1);
    expect(f.json!.error).toMatch(/^zstd failed to compress the backup \(exit code 12\): zstd: error 12 : simulated failure/);

    const killed = await toolDir("killed-zstd", "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\nhead -c 4096 >/dev/null\nkill -9 $$\n");
    const k = await backup("bad", repo, { PATH: killed });
    expect(k.exitCode).toBe(1);
    expect(k.json!.error).toMatch(/^zstd failed to compress the backup \(killed by SIGKILL\)/);

    const list = await runCli(["list", "--repository", repo, "--cluster", "bad", "--json"]);
    expect(list.json!.backups).toEqual([]);
  });

  it("into a file:// repository zstd writes the object itself; a full disk under it is StorageFull naming the object, with no file and no backup left", async () => {
    // 3 MB of random bytes: more than the 2 MiB file system can take, compressed or not.
    await master.query("CREATE DATABASE fill");
    try {
      await master.query("CREATE TABLE fill.t (id INT PRIMARY KEY, b BLOB) ENGINE=InnoDB");
      await master.query("INSERT INTO fill.t SELECT seq, RANDOM_BYTES(1000) FROM fill.seq_1_to_3000");
      const mnt = await mkdtemp(path.join(tmpdir(), "replicator-zstd-full-"));
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]);
      try {
        const b = await backup("full", `file://${mnt}`);
        expect(b.exitCode, b.stderr).toBe(1);
        expect(b.json!.reason).toBe("StorageFull");
        expect(b.json!.error).toMatch(new RegExp(`^no space left on the file system of ${mnt} while writing ${mnt}/full/\\S+-mysqldump-\\S+/data\\.sql\\.zst \\(ENOSPC\\); free space or use a larger volume$`));
        // Nothing of the run is left but its name's claim (which prune clears with an abandoned
        // run): no data object, no temp file, no manifest, nothing listed.
        const left = (await execa("find", [mnt, "-type", "f"])).stdout.split("\n").filter(Boolean);
        expect(left.map((f) => path.basename(f))).toEqual(["claim.json"]);
        const list = await runCli(["list", "--repository", `file://${mnt}`, "--cluster", "full", "--json"]);
        expect(list.json!.backups).toEqual([]);
      } finally {
        execFileSync("umount", [mnt]);
      }
    } finally {
      await master.query("DROP DATABASE fill");
    }
  });

  it("a zstd that fails while restoring is named, and the target is left marked partial", async () => {
    const repo = `file://${path.join(work, "repo-bad-unzstd")}`;
    const b = await backup("unz", repo);
    expect(b.exitCode, b.stderr).toBe(0);
    const failing = await toolDir("failing-unzstd", "#!/bin/sh\n[ \"$1\" = --version ] && exit 0\ncat >/dev/null\necho 'zstd: simulated write failure: Broken pipe' >&2\nexit 1\n");
    const t = await freshServer();
    const r = await runCli(["restore", "--target", t.url, "--repository", repo, "--cluster", "unz", "--json"], { PATH: failing });
    expect(r.exitCode).toBe(1);
    expect(r.json!.error).toMatch(/restore failed midway .* zstd failed to decompress the backup \(exit code 1\)/);
  });
});
