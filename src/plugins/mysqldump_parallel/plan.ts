// Pure: which mariadb-dump processes a parallel backup runs.
//
// Every process starts its consistent snapshot under one brief lock, so one
// process can dump only what it was given when it started: the tables are
// divided up front. A table larger than a process's fair share (its total
// divided by the threads) is cut into row ranges of its integer primary key,
// one process per range; the other tables of a database are packed into
// bins, largest first, onto the least loaded bin. mariadb-dump takes one
// database per invocation, so a bin never spans two databases.
import type { Plan, PlanPart } from "./format.js";

export interface TableInfo {
  db: string;
  name: string;
  /** data_length + index_length, as information_schema estimates it. */
  bytes: number;
  /** A single-column integer primary key and its current bounds, when the table has one and rows. */
  pk?: { column: string; min: bigint; max: bigint };
}

/** The most dump processes one backup starts (each is a connection to the source). */
export const MAX_PROCESSES = 64;

/** Pure: `name` quoted as a MariaDB identifier. */
export function quoteIdent(name: string): string {
  return "`" + name.replace(/`/g, "``") + "`";
}

/** Pure: `db`.`table`, quoted. */
export function qualified(t: { db: string; table: string }): string {
  return `${quoteIdent(t.db)}.${quoteIdent(t.table)}`;
}

/** Pure: the --where ranges that cut [min, max] into `n` pieces; the first and last are open, so rows outside the bounds read earlier are not lost. */
export function chunkWheres(column: string, min: bigint, max: bigint, n: number): string[] {
  const col = quoteIdent(column);
  if (n <= 1 || max <= min) return [];
  const span = max - min + 1n;
  const step = span / BigInt(n) || 1n;
  const cuts: bigint[] = [];
  for (let i = 1; i < n; i++) {
    const c = min + step * BigInt(i);
    if (c > max) break;
    if (cuts.length === 0 || c > (cuts[cuts.length - 1] ?? c)) cuts.push(c);
  }
  if (cuts.length === 0) return [];
  const out = [`${col} < ${String(cuts[0])}`];
  for (let i = 1; i < cuts.length; i++) out.push(`${col} >= ${String(cuts[i - 1])} AND ${col} < ${String(cuts[i])}`);
  out.push(`${col} >= ${String(cuts[cuts.length - 1])}`);
  return out;
}

export function planParts(databases: string[], tables: TableInfo[], threads: number): Plan {
  const parts: PlanPart[] = [];
  let id = 0;
  parts.push({ id: id++, kind: "schema" });
  const total = tables.reduce((s, t) => s + Math.max(t.bytes, 1), 0);
  const share = total / Math.max(threads, 1);
  for (const db of databases) {
    const mine = tables.filter((t) => t.db === db).sort((a, b) => b.bytes - a.bytes || a.name.localeCompare(b.name));
    if (mine.length === 0) continue;
    const rest: TableInfo[] = [];
    for (const t of mine) {
      const pieces = t.pk && threads > 1 && t.bytes > share ? Math.min(threads, Math.ceil(t.bytes / share)) : 1;
      const wheres = t.pk && pieces > 1 ? chunkWheres(t.pk.column, t.pk.min, t.pk.max, pieces) : [];
      if (wheres.length > 1) {
        for (const where of wheres) parts.push({ id: id++, kind: "data", db, tables: [t.name], where });
      } else {
        rest.push(t);
      }
    }
    if (rest.length === 0) continue;
    const dbBytes = rest.reduce((s, t) => s + Math.max(t.bytes, 1), 0);
    const binCount = Math.max(1, Math.min(rest.length, Math.round((threads * dbBytes) / Math.max(total, 1))));
    const bins: { bytes: number; tables: string[] }[] = Array.from({ length: binCount }, () => ({ bytes: 0, tables: [] }));
    for (const t of rest) {
      const bin = bins.reduce((a, b) => (b.bytes < a.bytes ? b : a));
      bin.tables.push(t.name);
      bin.bytes += Math.max(t.bytes, 1);
    }
    for (const bin of bins) parts.push({ id: id++, kind: "data", db, tables: bin.tables });
  }
  parts.push({ id, kind: "post" });
  return { version: 1, databases, parts };
}
