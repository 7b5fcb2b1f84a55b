// A small reader of the binlog v4 event stream (the files `mariadb-binlog
// --raw` writes): only the 19-byte event headers are decoded, plus the
// bodies of the few events PITR needs (MariaDB's GTID and GTID_LIST events,
// ROTATE and STOP). It runs in one streaming pass that also hashes the
// bytes, so a growing file (the binlog the master still writes) is read up
// to its last whole event, never past it.
//
// Why not parse `mariadb-binlog` text output: its format is meant for people
// and changes between versions; the header layout is fixed by the protocol.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { failed } from "../lib/errors.js";
import { advance, formatGtidState, type Gtid, type GtidState } from "./gtid.js";

export const BINLOG_MAGIC = Buffer.from([0xfe, 0x62, 0x69, 0x6e]);
const HEADER = 19;
const STOP_EVENT = 3;
const ROTATE_EVENT = 4;
const FORMAT_DESCRIPTION_EVENT = 15;
const GTID_EVENT = 162;
const GTID_LIST_EVENT = 163;

export interface GtidEvent {
  gtid: Gtid;
  /** The event's start offset in the file (what --start-position/--stop-position take). */
  offset: number;
  /** The event's timestamp (seconds since the epoch). */
  time: number;
}

export interface BinlogScan {
  /** Bytes of whole events (with the 4-byte magic): the prefix that is safe to store. */
  size: number;
  sha256: string;
  /** The server id in the format description event. */
  serverId: number | undefined;
  /** The GTID state at the start of the file (its GTID_LIST event). */
  startState: GtidState;
  /** The start state advanced by every GTID in the file. */
  endState: GtidState;
  gtids: GtidEvent[];
  firstEventTime: number | undefined;
  lastEventTime: number | undefined;
  /** The file ends with ROTATE or STOP: the server closed it. */
  closed: boolean;
}

/** Scan a binlog file up to its last whole event. */
export async function scanBinlogFile(file: string): Promise<BinlogScan> {
  const hash = createHash("sha256");
  const out: BinlogScan = {
    size: 0, sha256: "", serverId: undefined, startState: new Map(), endState: new Map(),
    gtids: [], firstEventTime: undefined, lastEventTime: undefined, closed: false,
  };
  let pending: Buffer = Buffer.alloc(0);
  let offset = 0;
  let magicSeen = false;
  let lastType = -1;
  for await (const chunk of createReadStream(file, { highWaterMark: 1024 * 1024 })) {
    pending = pending.length === 0 ? (chunk as Buffer) : Buffer.concat([pending, chunk as Buffer]);
    if (!magicSeen) {
      if (pending.length < 4) continue;
      if (!pending.subarray(0, 4).equals(BINLOG_MAGIC)) throw failed("NotABinlog", `${file} is not a binlog file (no binlog magic header)`);
      hash.update(pending.subarray(0, 4));
      pending = pending.subarray(4);
      offset = 4;
      magicSeen = true;
    }
    let at = 0;
    while (pending.length - at >= HEADER) {
      const size = pending.readUInt32LE(at + 9);
      if (size < HEADER) throw failed("NotABinlog", `${file}: event at offset ${offset} claims ${size} bytes; the file is damaged`);
      if (pending.length - at < size) break;
      const ev = pending.subarray(at, at + size);
      hash.update(ev);
      const type = ev.readUInt8(4);
      const time = ev.readUInt32LE(0);
      if (type === FORMAT_DESCRIPTION_EVENT) out.serverId ??= ev.readUInt32LE(5);
      else if (type === GTID_LIST_EVENT && out.gtids.length === 0) {
        const count = ev.readUInt32LE(HEADER) & 0x0fffffff;
        for (let i = 0; i < count; i++) {
          const p = HEADER + 4 + i * 16;
          const g = { domain: ev.readUInt32LE(p), server: ev.readUInt32LE(p + 4), seq: Number(ev.readBigUInt64LE(p + 8)) };
          advance(out.startState, g);
          advance(out.endState, g);
        }
      } else if (type === GTID_EVENT) {
        const g = { domain: ev.readUInt32LE(HEADER + 8), server: ev.readUInt32LE(5), seq: Number(ev.readBigUInt64LE(HEADER)) };
        advance(out.endState, g);
        out.gtids.push({ gtid: g, offset: offset + at, time });
      }
      if (time > 0 && type !== FORMAT_DESCRIPTION_EVENT) {
        out.firstEventTime ??= time;
        out.lastEventTime = Math.max(out.lastEventTime ?? 0, time);
      }
      lastType = type;
      at += size;
    }
    offset += at;
    pending = pending.subarray(at);
  }
  out.size = magicSeen ? offset : 0;
  out.sha256 = hash.digest("hex");
  out.closed = lastType === ROTATE_EVENT || lastType === STOP_EVENT;
  return out;
}

export function firstGtid(s: BinlogScan): Gtid | undefined {
  return s.gtids[0]?.gtid;
}

export function lastGtid(s: BinlogScan): Gtid | undefined {
  return s.gtids[s.gtids.length - 1]?.gtid;
}

export function describeState(s: GtidState): string {
  return formatGtidState(s) || "(none)";
}
