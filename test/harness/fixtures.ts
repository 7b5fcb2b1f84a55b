// Test data: InnoDB tables with rows, a view, a trigger, routines and an
// event, so that a round trip proves every object type survives.
import type { Manifest } from "../../src/storage/catalog.js";
import type { MariaDb } from "./mariadb.js";

/** A valid manifest of a (pretend) mysqldump backup `name` of `cluster` started at `at`, GTID 0-1-(i+1): for listings and caches. */
export function testManifest(name: string, cluster: string, at: Date, i: number): Manifest {
  return {
    formatVersion: 1,
    name,
    cluster,
    method: "mysqldump",
    kind: "logical",
    source: { host: "db-0", port: 3306, role: "master" },
    startedAt: at.toISOString(),
    finishedAt: new Date(at.getTime() + 5000).toISOString(),
    compression: "zstd",
    objects: [{ name: "data.sql.zst", size: 4, sha256: "b".repeat(64) }],
    replication: { role: "master", gtid: `0-1-${i + 1}` },
    details: {},
    tool: { name: "replicator", version: "test" },
  };
}

export async function seedShop(server: MariaDb, opts: { rows?: number; myisam?: boolean } = {}): Promise<void> {
  const rows = opts.rows ?? 500;
  await server.query("CREATE DATABASE IF NOT EXISTS shop");
  await server.query(
    "CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(64) NOT NULL, balance DECIMAL(10,2), note BLOB) ENGINE=InnoDB",
  );
  await server.query("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, customer_id INT, total DECIMAL(10,2)) ENGINE=InnoDB");
  await server.query("CREATE TABLE shop.audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(64)) ENGINE=InnoDB");
  const values: string[] = [];
  for (let i = 1; i <= rows; i++) values.push(`(${i}, 'customer ${i} ☃', ${(i * 1.5).toFixed(2)}, UNHEX('00FF${(i % 256).toString(16).padStart(2, "0")}'))`);
  await server.query(`INSERT INTO shop.customers VALUES ${values.join(",")}`);
  await server.query("CREATE VIEW shop.rich AS SELECT id, name FROM shop.customers WHERE balance > 100");
  await server.query(
    "CREATE TRIGGER shop.orders_ai AFTER INSERT ON shop.orders FOR EACH ROW INSERT INTO shop.audit (what) VALUES (CONCAT('order ', NEW.id))",
  );
  await server.query("CREATE FUNCTION shop.double_it(x INT) RETURNS INT DETERMINISTIC RETURN x * 2");
  await server.query(
    "CREATE PROCEDURE shop.add_order(IN c INT, IN t DECIMAL(10,2)) BEGIN INSERT INTO shop.orders (customer_id, total) VALUES (c, t); END",
  );
  await server.query("CREATE EVENT shop.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.audit WHERE id < 0");
  for (let i = 1; i <= 20; i++) await server.query("CALL shop.add_order(?, ?)", [i, i * 10]);
  if (opts.myisam) {
    await server.query("CREATE TABLE shop.legacy (id INT PRIMARY KEY, v VARCHAR(10)) ENGINE=MyISAM");
    await server.query("INSERT INTO shop.legacy VALUES (1,'a'),(2,'b')");
  }
  await server.query("CREATE DATABASE IF NOT EXISTS app");
  await server.query("CREATE TABLE app.settings (k VARCHAR(32) PRIMARY KEY, v TEXT) ENGINE=InnoDB");
  await server.query("INSERT INTO app.settings VALUES ('mode', 'production'), ('quote', 'it''s \"quoted\"\\n')");
}

export async function count(server: MariaDb, table: string): Promise<number> {
  const [r] = await server.query<{ n: number | string }>(`SELECT COUNT(*) AS n FROM ${table}`);
  return Number(r?.n);
}

export async function routines(server: MariaDb, schema: string): Promise<string[]> {
  const r = await server.query<{ n: string }>(
    `SELECT CONCAT(routine_type, ' ', routine_name) AS n FROM information_schema.routines WHERE routine_schema = ?
     UNION ALL SELECT CONCAT('TRIGGER ', trigger_name) FROM information_schema.triggers WHERE trigger_schema = ?
     UNION ALL SELECT CONCAT('EVENT ', event_name) FROM information_schema.events WHERE event_schema = ?
     UNION ALL SELECT CONCAT('VIEW ', table_name) FROM information_schema.views WHERE table_schema = ?
     ORDER BY 1`,
    [schema, schema, schema, schema],
  );
  return r.map((x) => x.n);
}
