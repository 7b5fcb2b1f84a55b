// Pure helpers for WAL locations (LSNs) and WAL segment file names.
import { badInput } from "../../lib/errors.js";

const LSN_RE = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function isLsn(s: string): boolean {
  return LSN_RE.test(s);
}

/** "0/3000028" → 50331688n. */
export function parseLsn(lsn: string): bigint {
  const m = LSN_RE.exec(lsn.trim());
  if (!m?.[1] || !m[2]) throw badInput("InvalidPosition", `"${lsn}" is not a WAL location (expected e.g. 0/3000028)`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(v: bigint): string {
  return `${(v >> 32n).toString(16).toUpperCase()}/${(v & 0xffffffffn).toString(16).toUpperCase()}`;
}

const hex8 = (v: bigint | number): string => v.toString(16).toUpperCase().padStart(8, "0");

/**
 * The name of the WAL segment file that holds the byte at `lsn` on
 * `timeline` (what pg_walfile_name(lsn + 1) returns: pg_walfile_name itself
 * names the previous segment for an LSN exactly on a segment boundary).
 */
export function walFileName(timeline: number, lsn: string, segmentSize: number): string {
  if (!Number.isInteger(segmentSize) || segmentSize <= 0 || (segmentSize & (segmentSize - 1)) !== 0) {
    throw new Error(`invalid WAL segment size ${segmentSize}`);
  }
  const seg = BigInt(segmentSize);
  const segNo = parseLsn(lsn) / seg;
  const perId = 0x100000000n / seg;
  return `${hex8(timeline)}${hex8(segNo / perId)}${hex8(segNo % perId)}`;
}

/** The timeline a WAL segment file name is on ("000000020000000000000003" → 2). */
export function timelineOfWalFile(name: string): number {
  if (!/^[0-9A-F]{24}$/.test(name)) throw new Error(`"${name}" is not a WAL segment file name`);
  return parseInt(name.slice(0, 8), 16);
}
