// The PostgreSQL fixture of the conformance kit: a schema `kit` in the
// sandbox's database with varied types (numeric, bytea, json and jsonb,
// arrays, timestamps, text with non-ASCII characters), a sequence, a foreign
// key, a view and a trigger; checksums per table over every row in key
// order (md5 of the rows' text forms).
import type { Fixture, SandboxServer } from "./types.js";

/** Tables compared by `checksums`, each with its key. */
const TABLES = ["kit.customers", "kit.orders", "kit.blobs", "kit.events"];

const AFTER_ID = 1_000_001;

const SEED = `
CREATE SCHEMA kit;
CREATE SEQUENCE kit.order_seq START 5000 INCREMENT 3;
CREATE TABLE kit.customers (
  id integer PRIMARY KEY,
  name text NOT NULL,
  email text UNIQUE,
  balance numeric(14,4),
  created timestamptz NOT NULL,
  active boolean NOT NULL DEFAULT true,
  meta jsonb
);
CREATE TABLE kit.orders (
  id bigint PRIMARY KEY DEFAULT nextval('kit.order_seq'),
  customer_id integer NOT NULL REFERENCES kit.customers (id),
  amount numeric(12,2) NOT NULL,
  placed date NOT NULL,
  tags text[],
  doc json
);
CREATE TABLE kit.blobs (
  id integer PRIMARY KEY,
  data bytea NOT NULL,
  note text
);
CREATE TABLE kit.events (
  id integer PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT '2001-02-03 04:05:06+00',
  payload text NOT NULL
);
CREATE VIEW kit.customer_totals AS
  SELECT c.id, c.name, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS total
    FROM kit.customers c LEFT JOIN kit.orders o ON o.customer_id = c.id
   GROUP BY c.id, c.name;
CREATE FUNCTION kit.log_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO kit.events (id, payload) VALUES (NEW.id, 'order ' || NEW.id || ' for ' || NEW.amount);
  RETURN NEW;
END $$;
CREATE TRIGGER orders_log AFTER INSERT ON kit.orders FOR EACH ROW EXECUTE FUNCTION kit.log_order();

INSERT INTO kit.customers (id, name, email, balance, created, active, meta)
SELECT i,
       (ARRAY['Zoë', 'Jürgen', '日本語', 'O''Brien', 'naïve café ✓', 'back\\slash', 'tab	and "quote"'])[1 + i % 7] || ' #' || i,
       CASE WHEN i % 10 = 0 THEN NULL ELSE 'user' || i || '@example.org' END,
       round((i * 12.3456)::numeric, 4) - 1000,
       timestamptz '2020-01-01 00:00:00+00' + i * interval '7 hours 3 minutes',
       i % 3 <> 0,
       jsonb_build_object('tier', i % 4, 'tags', jsonb_build_array('a', i), 'note', 'ünïcødé 🎉')
  FROM generate_series(1, 300) AS i;
INSERT INTO kit.orders (customer_id, amount, placed, tags, doc)
SELECT 1 + i % 300, round((i * 3.17)::numeric % 1000, 2), date '2021-01-01' + i % 700,
       ARRAY['t' || i % 5, 'x,y', NULL], json_build_object('line', i, 'qty', i % 9)
  FROM generate_series(1, 1200) AS i;
INSERT INTO kit.blobs (id, data, note)
SELECT i, decode(repeat(md5(i::text), 1 + i % 20), 'hex') || '\\x00ff00'::bytea, CASE WHEN i % 2 = 0 THEN 'even' END
  FROM generate_series(1, 80) AS i;
`;

async function value(server: SandboxServer, sql: string): Promise<string> {
  const rows = await server.query(sql);
  return rows[0]?.[0] ?? "";
}

export const postgresFixture: Fixture = {
  async seed(server) {
    await server.query(SEED);
  },

  async checksums(server) {
    const out: Record<string, string> = {};
    for (const t of TABLES) {
      out[t] = await value(server, `SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t.id), '')) FROM ${t} t`);
    }
    out["kit.customer_totals (view)"] = await value(
      server,
      "SELECT count(*) || ':' || md5(coalesce(string_agg(v::text, E'\\n' ORDER BY v.id), '')) FROM kit.customer_totals v",
    );
    // The definition, not the value: a physical copy's sequence runs up to 32
    // values ahead (sequences are WAL-logged in advance), which is correct.
    out["kit.order_seq (sequence)"] = await value(
      server,
      "SELECT seqstart || '/' || seqincrement || '/' || seqmax FROM pg_sequence WHERE seqrelid = 'kit.order_seq'::regclass",
    );
    return out;
  },

  async writeAfter(server) {
    await server.query(`INSERT INTO kit.events (id, payload) VALUES (${AFTER_ID}, 'written after the backup ✓')`);
  },

  async sawWriteAfter(server) {
    try {
      return (await value(server, `SELECT count(*) FROM kit.events WHERE id = ${AFTER_ID}`)) === "1";
    } catch {
      return false;
    }
  },

  async replicating(server) {
    const [row] = await server.query("SELECT pg_is_in_recovery(), (SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming')");
    return row?.[0] === "t" && Number(row[1]) > 0;
  },
};
