// Replication: backups of a master and of a slave record the right
// coordinates; a slave backup always leaves the slave replicating; a restore
// with --replicate-from seeds a slave that catches up; purged binlogs are
// refused before anything is loaded. Real MariaDB master + slaves.
import { chmod, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { count, seedShop } from "../harness/fixtures.js";
import { checksums, startMariaDb, startReplication, waitCaughtUp, waitFor, type MariaDb } from "../harness/mariadb.js";

let master: MariaDb;
let slave: MariaDb;
let repoDir: string;
let repo: string;
const servers: MariaDb[] = [];
const replEnv = { REPLICATOR_REPLICATION_PASSWORD: "replpass" };

interface Status { Slave_IO_Running: string; Slave_SQL_Running: string; Last_SQL_Error: string }

async function slaveStatus(s: MariaDb): Promise<Status | undefined> {
  const [r] = await s.query<Status>("SHOW SLAVE STATUS");
  return r;
}

async function newServer(opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb(opts);
  servers.push(s);
  return s;
}

beforeAll(async () => {
  [master, slave] = await Promise.all([
    newServer({ binlog: true, serverId: 1 }),
    newServer({ binlog: true, serverId: 2, args: ["--log-slave-updates", "--read-only"] }),
  ]);
  await seedShop(master, { rows: 1000 });
  await startReplication(master, slave);
  await waitCaughtUp(master, slave);
  repoDir = await mkdtemp(path.join(tmpdir(), "replicator-repl-"));
  repo = `file://${repoDir}`;
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
});

describe("seeding a slave from a master backup", () => {
  it("restores, replicates from the recorded GTID position, and catches up on newer writes", async () => {
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "m", "--json"], {});
    expect(b.exitCode).toBe(0);
    // Writes after the backup must arrive through replication.
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9001, 'after backup 1'), (9002, 'after backup 2')");

    const fresh = await newServer({ binlog: true, serverId: 3 });
    const r = await runCli(
      ["restore", "--target", fresh.url, "--repository", repo, "--cluster", "m", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"],
      replEnv,
    );
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(r.json!.replicating).toBe(true);
    const st = await slaveStatus(fresh);
    expect(st?.Slave_IO_Running).toBe("Yes");
    expect(st?.Slave_SQL_Running).toBe("Yes");
    await waitCaughtUp(master, fresh);
    expect(await count(fresh, "shop.customers")).toBe(1002);
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9003, 'later')");
    await waitCaughtUp(master, fresh);
    expect(await count(fresh, "shop.customers WHERE id = 9003")).toBe(1);
    expect(await checksums(fresh, ["shop", "app"])).toEqual(await checksums(master, ["shop", "app"]));
    // The load was not written to the new slave's own binlog under its own server id.
    const [g] = await fresh.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(g!.pos.split(",").filter((x) => x.split("-")[1] === "3")).toEqual([]);
  });
});

describe("backing up a slave", () => {
  it("records the master's coordinates, takes the slave offline meanwhile, and leaves it replicating", async () => {
    await waitCaughtUp(master, slave);
    const [mpos] = await master.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    const b = await runCli(["backup", "--source", slave.url, "--repository", repo, "--cluster", "s", "--json"], {});
    expect(b.exitCode).toBe(0);
    expect(b.json!.role).toBe("slave");
    const rep = b.json!.replication as { role: string; gtid: string; file: string; masterPort: number };
    expect(rep.role).toBe("slave");
    expect(rep.gtid).toBe(mpos!.pos);
    expect(rep.masterPort).toBe(master.port);
    expect(rep.file).toMatch(/^mysql-bin\.\d+$/);
    const st = await slaveStatus(slave);
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);

    // And a slave seeded from the slave's backup replicates from the master.
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9100, 'after slave backup')");
    const fresh = await newServer({ binlog: true, serverId: 4 });
    const r = await runCli(
      ["restore", "--target", fresh.url, "--repository", repo, "--cluster", "s", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"],
      replEnv,
    );
    expect(r.exitCode).toBe(0);
    await waitCaughtUp(master, fresh);
    expect(await count(fresh, "shop.customers WHERE id = 9100")).toBe(1);
  });

  it("brings the slave back online when the dump fails half way", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "replicator-fail-"));
    const failing = path.join(dir, "failing-dump.sh");
    // Records the slave's SQL thread state while "dumping" (it gets the same
    // credentials file and connection args as mariadb-dump), writes some SQL,
    // then dies the way a real dump does when a table is corrupt.
    const seen = path.join(dir, "sql-thread.txt");
    await writeFile(
      failing,
      `#!/bin/sh\nmariadb "$1" "$2" "$3" "$4" -e 'SHOW SLAVE STATUS\\G' | grep 'Slave_SQL_Running:' > ${seen}\necho '-- partial dump'\necho 'mariadb-dump: Error 1194: Table crashed' >&2\nexit 3\n`,
    );
    await chmod(failing, 0o755);
    await writeFile(path.join(dir, "replicator.yaml"), `methodOptions:\n  dumpCommand: ${failing}\n`);
    const b = await runCli(["backup", "--source", slave.url, "--repository", repo, "--cluster", "f"], {}, { cwd: dir });
    expect(b.exitCode).toBe(1);
    expect(b.stderr).toContain("failed to dump the source (exit code 3): mariadb-dump: Error 1194: Table crashed");
    expect((await readFile(seen, "utf8")).trim()).toBe("Slave_SQL_Running: No");
    await waitFor(async () => {
      const st = await slaveStatus(slave);
      return st?.Slave_IO_Running === "Yes" && st.Slave_SQL_Running === "Yes";
    }, "the slave to replicate again", 10_000);
    // Nothing half-written is listed.
    const list = await runCli(["list", "--repository", repo, "--cluster", "f", "--json"], {});
    expect(list.json!.backups).toEqual([]);
  });
});

describe("the seed check", () => {
  it("refuses a backup whose binlogs the master has purged, before touching the target", async () => {
    const b = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "p", "--json"], {});
    expect(b.exitCode).toBe(0);
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9200, 'will be purged')");
    await master.query("FLUSH BINARY LOGS");
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9201, 'in the new binlog')");
    // Wait until the slaves have read everything, then purge all but the newest
    // binlog. MariaDB keeps a binlog until InnoDB has checkpointed it, so retry.
    await waitCaughtUp(master, slave);
    await waitFor(async () => {
      const logs = await master.query<{ Log_name: string }>("SHOW BINARY LOGS");
      if (logs.length === 1) return true;
      await master.query(`PURGE BINARY LOGS TO '${logs[logs.length - 1]!.Log_name}'`);
      return false;
    }, "the master to purge its old binlogs");

    const fresh = await newServer({ binlog: true, serverId: 5 });
    const r = await runCli(
      ["restore", "--target", fresh.url, "--repository", repo, "--cluster", "p", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`],
      replEnv,
    );
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("the master has purged binlogs the backup needs");
    expect(r.stderr).toContain("take a new backup, or raise the master's binlog retention");
    expect(await count(fresh, "information_schema.schemata WHERE schema_name = 'shop'")).toBe(0);

    // A new backup seeds fine.
    const b2 = await runCli(["backup", "--source", master.url, "--repository", repo, "--cluster", "p", "--json"], {});
    expect(b2.exitCode).toBe(0);
    const r2 = await runCli(
      ["restore", "--target", fresh.url, "--repository", repo, "--cluster", "p", "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`, "--json"],
      replEnv,
    );
    expect(r2.exitCode).toBe(0);
    expect(r2.json!.name).toBe(b2.json!.name);
  });
});

describe("offline and online", () => {
  it("stops and starts replication on a slave", async () => {
    const off = await runCli(["offline", "--target", slave.url, "--json"], {});
    expect(off.exitCode).toBe(0);
    expect(off.json!.role).toBe("slave");
    let st = await slaveStatus(slave);
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["No", "No"]);
    await master.query("INSERT INTO shop.customers (id, name) VALUES (9300, 'while offline')");
    await new Promise((r) => setTimeout(r, 300));
    expect(await count(slave, "shop.customers WHERE id = 9300")).toBe(0);
    const on = await runCli(["online", "--target", slave.url, "--json"], {});
    expect(on.exitCode).toBe(0);
    st = await slaveStatus(slave);
    expect([st?.Slave_IO_Running, st?.Slave_SQL_Running]).toEqual(["Yes", "Yes"]);
    await waitCaughtUp(master, slave);
    expect(await count(slave, "shop.customers WHERE id = 9300")).toBe(1);
  });

  it("makes a master read-only and writable again", async () => {
    await master.query("CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'apppw'");
    await master.query("GRANT INSERT, SELECT ON shop.* TO 'app'@'127.0.0.1'");
    const off = await runCli(["offline", "--target", master.url, "--json"], {});
    expect(off.exitCode).toBe(0);
    expect(off.json!.role).toBe("master");
    const [ro] = await master.query<{ ro: number | string }>("SELECT @@read_only AS ro");
    expect(Number(ro!.ro)).toBe(1);
    const on = await runCli(["online", "--target", master.url], {});
    expect(on.exitCode).toBe(0);
    const [rw] = await master.query<{ ro: number | string }>("SELECT @@read_only AS ro");
    expect(Number(rw!.ro)).toBe(0);
  });
});
