// The database side of "never wrong on the data path", against real MariaDB:
// a restore proves the target user can recreate what it drops before it
// drops anything; a backup that lacks a privilege says which, and the GRANT;
// a slave backup restarts only the replication threads it stopped itself and
// says when it found replication already stopped.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Endpoint } from "../../src/db/endpoint.js";
import { restoreTargetFor } from "../../src/db/target.js";
import { count, seedShop } from "../harness/fixtures.js";
import { startMariaDb, type MariaDb } from "../harness/mariadb.js";

const servers: MariaDb[] = [];

async function newServer(opts: Parameters<typeof startMariaDb>[0] = {}): Promise<MariaDb> {
  const s = await startMariaDb(opts);
  servers.push(s);
  return s;
}

function endpoint(s: MariaDb, user: string, password: string): Endpoint {
  return { engine: "mysql", host: s.host, port: s.port, user, password };
}

async function createUser(s: MariaDb, user: string, password: string, grants: string[]): Promise<void> {
  await s.query(`CREATE USER '${user}'@'127.0.0.1' IDENTIFIED BY '${password}'`);
  for (const g of grants) await s.query(`GRANT ${g} TO '${user}'@'127.0.0.1'`);
}

async function probes(s: MariaDb): Promise<string[]> {
  const rows = await s.query<{ s: string }>("SELECT schema_name AS s FROM information_schema.schemata WHERE schema_name LIKE '\\_\\_replicator\\_probe%'");
  return rows.map((r) => r.s);
}

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
});

describe("restore preflight (checkCanRestore)", () => {
  let target: MariaDb;
  beforeAll(async () => {
    target = await newServer({ binlog: true });
    await seedShop(target, { rows: 200 });
  });

  it("passes for a user that can do what the load does, and leaves nothing behind", async () => {
    await createUser(target, "full", "pw", ["ALL ON *.*"]);
    const [before] = await target.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    await (await restoreTargetFor(endpoint(target, "full", "pw"))).checkCanRestore();
    expect(await probes(target)).toEqual([]);
    // The probe ran with sql_log_bin=0: nothing of it reached the binlog.
    const [after] = await target.query<{ pos: string }>("SELECT @@gtid_binlog_pos AS pos");
    expect(after?.pos).toBe(before?.pos);
  });

  it("refuses a user with SELECT and DROP but no CREATE, and the target's data is untouched", async () => {
    await createUser(target, "nocreate", "pw", ["SELECT, DROP, INSERT, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nocreate", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege", kind: "BadInput" });
    const msg = (err as Error).message;
    expect(msg).toMatch(/^target user 'nocreate'@'127\.0\.0\.1' cannot create a database on 127\.0\.0\.1:\d+ \(.*\); the restore would drop databases it cannot recreate: GRANT CREATE ON \*\.\* TO 'nocreate'@'127\.0\.0\.1', or restore as a user that has it$/);
    expect(await count(target, "shop.customers")).toBe(200);
    expect(await probes(target)).toEqual([]);
  });

  it("refuses a user with CREATE but no DROP before creating anything it could not drop", async () => {
    await createUser(target, "nodrop", "pw", ["SELECT, CREATE, INSERT, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nodrop", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot drop a database");
    expect((err as Error).message).toContain("GRANT DROP ON *.*");
    expect(await probes(target)).toEqual([]);
  });

  it("refuses a user that cannot set sql_log_bin, naming it", async () => {
    await createUser(target, "nobinlog", "pw", ["SELECT, CREATE, DROP, INSERT, LOCK TABLES ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "nobinlog", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot set sql_log_bin");
    expect((err as Error).message).toContain("GRANT BINLOG ADMIN ON *.*");
    expect(await probes(target)).toEqual([]);
  });

  it("removes the probe when a step after CREATE DATABASE fails", async () => {
    // CREATE and DROP, but no INSERT: the probe database exists when the
    // check fails, and must be gone afterwards.
    await createUser(target, "noinsert", "pw", ["SELECT, CREATE, DROP, LOCK TABLES, BINLOG ADMIN ON *.*"]);
    const err = await (await restoreTargetFor(endpoint(target, "noinsert", "pw"))).checkCanRestore().then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ reason: "MissingPrivilege" });
    expect((err as Error).message).toContain("cannot insert rows");
    expect((err as Error).message).toContain("GRANT INSERT ON *.*");
    expect(await probes(target)).toEqual([]);
  });
});
