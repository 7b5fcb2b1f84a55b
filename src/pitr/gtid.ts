// MariaDB GTIDs (domain-server-seq) and GTID positions ("0-1-42,1-2-7"),
// pure. A position is compared per domain by sequence number: in
// gtid_strict_mode a domain's sequence numbers only grow.
import { badInput } from "../lib/errors.js";

export interface Gtid {
  domain: number;
  server: number;
  seq: number;
}

/** The last GTID of each domain. */
export type GtidState = Map<number, Gtid>;

export function parseGtid(text: string, what = "GTID"): Gtid {
  const m = /^\s*(\d+)-(\d+)-(\d+)\s*$/.exec(text);
  if (!m?.[1] || !m[2] || !m[3]) throw badInput("InvalidGtid", `invalid ${what} "${text}"; use DOMAIN-SERVER-SEQUENCE, e.g. 0-1-42`);
  return { domain: Number(m[1]), server: Number(m[2]), seq: Number(m[3]) };
}

export function formatGtid(g: Gtid): string {
  return `${g.domain}-${g.server}-${g.seq}`;
}

export function parseGtidState(text: string | undefined, what = "GTID position"): GtidState {
  const state: GtidState = new Map();
  for (const part of (text ?? "").split(",")) {
    if (part.trim() === "") continue;
    advance(state, parseGtid(part, what));
  }
  return state;
}

export function formatGtidState(state: GtidState): string {
  return [...state.values()].sort((a, b) => a.domain - b.domain).map(formatGtid).join(",");
}

/** Record `g` as its domain's newest GTID (the higher sequence number wins). */
export function advance(state: GtidState, g: Gtid): void {
  const cur = state.get(g.domain);
  if (!cur || cur.seq <= g.seq) state.set(g.domain, g);
}

/** `g` is already applied by a server at `state`. */
export function includes(state: GtidState, g: Gtid): boolean {
  return (state.get(g.domain)?.seq ?? 0) >= g.seq;
}

/** Every domain of `a` is at or behind `b`. */
export function notAfter(a: GtidState, b: GtidState): boolean {
  for (const g of a.values()) if (!includes(b, g)) return false;
  return true;
}

/** Both states hold the same sequence number in every domain. */
export function sameState(a: GtidState, b: GtidState): boolean {
  return notAfter(a, b) && notAfter(b, a);
}
