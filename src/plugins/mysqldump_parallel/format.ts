// The byte format of a `mysqldump_parallel` backup (before compression).
//
// Several mariadb-dump processes run at once, each writing plain SQL; their
// outputs are interleaved into one stream as frames, so that a backup stays
// one object (one sha256, one zstd frame, readable with the stock tools) and
// a restore can feed each part to its own `mariadb` client again.
//
//   stream  = MAGIC header frame*
//   header  = u32be length, JSON (a Plan: the parts, each with its database and tables)
//   frame   = u8 kind, u32be part, u32be unit, u32be length, payload
//     kind 1 DATA:      payload bytes of `part`, belonging to `unit`
//     kind 2 UNIT:      payload is the unit's JSON ({db, name, kind}); `unit` is its number in `part`
//     kind 3 PART_END:  the part's process exited 0; no payload
//     kind 4 END:       every part ended; nothing follows
//
// A unit is a section of one part's SQL: unit 0 is the preamble (the
// session settings mariadb-dump writes first), then one unit per database
// ("-- Current Database"), table ("-- Table structure for table",
// "-- Dumping data for table") or view. Units let a restore load only some
// databases or tables; a full restore loads every unit in order.
//
// Order (the writer guarantees it, the reader relies on it): every schema
// part ends before the first data frame; every data part ends before the
// first post frame (triggers, routines, events).

export const MAGIC = Buffer.from("replicator-parallel-dump 1\n", "latin1");

export const FRAME_DATA = 1;
export const FRAME_UNIT = 2;
export const FRAME_PART_END = 3;
export const FRAME_END = 4;
export const FRAME_HEADER_BYTES = 13;

export type PartKind = "schema" | "data" | "post";

export interface PlanPart {
  id: number;
  kind: PartKind;
  /** The database of a data part; schema and post parts span every database. */
  db?: string;
  /** The tables a data part dumps (one table for a chunk). */
  tables?: string[];
  /** The row range of a chunk, as mariadb-dump's --where. */
  where?: string;
}

export interface Plan {
  version: 1;
  databases: string[];
  parts: PlanPart[];
}

export type UnitKind = "preamble" | "db" | "table" | "view" | "data";

export interface Unit {
  kind: UnitKind;
  db?: string;
  name?: string;
}

export function encodeHeader(plan: Plan): Buffer {
  const json = Buffer.from(JSON.stringify(plan), "utf8");
  const len = Buffer.alloc(4);
  len.writeUInt32BE(json.length);
  return Buffer.concat([MAGIC, len, json]);
}

export function frameHeader(kind: number, part: number, unit: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
  h.writeUInt8(kind, 0);
  h.writeUInt32BE(part, 1);
  h.writeUInt32BE(unit, 5);
  h.writeUInt32BE(length, 9);
  return h;
}

// ---------------------------------------------------------------- units

interface Marker {
  text: Buffer;
  kind: UnitKind;
}

const SCHEMA_MARKERS: Marker[] = [
  { text: Buffer.from("-- Current Database: `"), kind: "db" },
  { text: Buffer.from("-- Table structure for table `"), kind: "table" },
  { text: Buffer.from("-- Temporary table structure for view `"), kind: "view" },
  { text: Buffer.from("-- Final view structure for view `"), kind: "view" },
];
const DATA_MARKERS: Marker[] = [{ text: Buffer.from("-- Dumping data for table `"), kind: "data" }];
const POST_MARKERS: Marker[] = [{ text: Buffer.from("-- Current Database: `"), kind: "db" }];

export function markersFor(kind: PartKind): Marker[] {
  return kind === "schema" ? SCHEMA_MARKERS : kind === "data" ? DATA_MARKERS : POST_MARKERS;
}

const LINE_START = Buffer.from("\n-- ");
const LONGEST_MARKER = Math.max(...[...SCHEMA_MARKERS, ...DATA_MARKERS].map((m) => m.text.length));
/** A marker line longer than this is not one (identifiers are at most 64 characters, doubled backticks and UTF-8 included). */
const MAX_MARKER_LINE = LONGEST_MARKER + 4 * 64 * 2 + 8;

/** Pure: the identifier after a marker, up to its closing backtick (doubled backticks are one); undefined when the line is not a marker's. */
export function parseQuotedName(line: Buffer): string | undefined {
  let out = "";
  let i = 0;
  let start = 0;
  while (i < line.length) {
    if (line[i] === 0x60) {
      if (line[i + 1] === 0x60) {
        out += line.subarray(start, i + 1).toString("utf8");
        i += 2;
        start = i;
        continue;
      }
      return out + line.subarray(start, i).toString("utf8");
    }
    i++;
  }
  return undefined;
}

/**
 * Splits one part's SQL into units as it streams, at mariadb-dump's section
 * comments. Every byte is passed on exactly once, in order: `emit(unit, bytes)`
 * for bytes of the current unit, `start(unit)` when a new unit begins. A
 * section comment is found at the start of a line only: mariadb-dump escapes
 * a newline inside a quoted value, so row data never holds one.
 */
export class UnitSplitter {
  private carry: Buffer | undefined;
  private unit = 0;
  private db: string | undefined;

  constructor(
    private readonly markers: Marker[],
    private readonly fixedDb: string | undefined,
    private readonly start: (index: number, unit: Unit) => void,
    private readonly emit: (index: number, bytes: Buffer) => void,
  ) {
    this.db = fixedDb;
    start(0, { kind: "preamble", ...(fixedDb !== undefined ? { db: fixedDb } : {}) });
  }

  push(chunk: Buffer): void {
    const buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = undefined;
    let emitted = 0;
    let from = 0;
    for (;;) {
      const i = buf.indexOf(LINE_START, from);
      if (i < 0) {
        // Keep what could be the start of a line start ("\n-- ") split across chunks.
        const keep = Math.min(LINE_START.length - 1, buf.length - emitted);
        this.flushTo(buf, emitted, buf.length - keep);
        if (keep > 0) this.carry = Buffer.from(buf.subarray(buf.length - keep));
        return;
      }
      const lineStart = i + 1;
      const end = buf.indexOf(0x0a, lineStart);
      if (end < 0 && buf.length - lineStart < MAX_MARKER_LINE) {
        // A comment line not complete yet: decide when it is (its newline is carried too, so it is found again).
        this.flushTo(buf, emitted, i);
        this.carry = Buffer.from(buf.subarray(i));
        return;
      }
      const line = buf.subarray(lineStart, end < 0 ? lineStart + MAX_MARKER_LINE : end);
      const m = this.markers.find((k) => line.length >= k.text.length && line.subarray(0, k.text.length).equals(k.text));
      const name = m ? parseQuotedName(line.subarray(m.text.length)) : undefined;
      if (m && name !== undefined) {
        this.flushTo(buf, emitted, lineStart);
        emitted = lineStart;
        this.unit++;
        if (m.kind === "db") this.db = name;
        const db = m.kind === "db" ? name : this.db;
        this.start(this.unit, { kind: m.kind, ...(db !== undefined ? { db } : {}), ...(m.kind === "db" ? {} : { name }) });
      }
      from = lineStart;
    }
  }

  /** The end of the part: whatever was held back belongs to the current unit. */
  end(): void {
    if (this.carry) this.emit(this.unit, this.carry);
    this.carry = undefined;
  }

  private flushTo(buf: Buffer, from: number, to: number): void {
    if (to > from) this.emit(this.unit, from === 0 && to === buf.length ? buf : buf.subarray(from, to));
  }
}

// ---------------------------------------------------------------- reading

export interface FrameEvents {
  header(plan: Plan): Promise<void> | void;
  unit(part: number, index: number, unit: Unit): Promise<void> | void;
  data(part: number, unit: number, bytes: Buffer): Promise<void> | void;
  partEnd(part: number): Promise<void> | void;
  end(): Promise<void> | void;
}

export class FormatError extends Error {}

/**
 * Parses the stream as it arrives, calling `events` in order and awaiting
 * each (so a slow consumer slows the reader: backpressure, no buffering
 * beyond one chunk). Throws FormatError on anything that is not this format.
 */
export class FrameReader {
  private pending: Buffer = Buffer.alloc(0);
  private state: "magic" | "header" | "frames" | "done" = "magic";
  private headerLength = 0;

  constructor(private readonly events: FrameEvents) {}

  get ended(): boolean {
    return this.state === "done";
  }

  async push(chunk: Buffer): Promise<void> {
    const buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    for (;;) {
      const left = buf.length - at;
      if (this.state === "magic") {
        if (left < MAGIC.length + 4) break;
        if (!buf.subarray(at, at + MAGIC.length).equals(MAGIC)) {
          throw new FormatError("it does not start as a mysqldump_parallel backup (wrong magic)");
        }
        this.headerLength = buf.readUInt32BE(at + MAGIC.length);
        at += MAGIC.length + 4;
        this.state = "header";
      } else if (this.state === "header") {
        if (left < this.headerLength) break;
        let plan: { version?: unknown; parts?: unknown };
        try {
          plan = JSON.parse(buf.subarray(at, at + this.headerLength).toString("utf8")) as { version?: unknown; parts?: unknown };
        } catch {
          throw new FormatError("its header is not JSON");
        }
        if (plan.version !== 1 || !Array.isArray(plan.parts)) throw new FormatError(`its header has an unknown version (${String(plan.version)})`);
        at += this.headerLength;
        this.state = "frames";
        await this.events.header(plan as Plan);
      } else if (this.state === "frames") {
        if (left < FRAME_HEADER_BYTES) break;
        const kind = buf.readUInt8(at);
        const part = buf.readUInt32BE(at + 1);
        const unit = buf.readUInt32BE(at + 5);
        const length = buf.readUInt32BE(at + 9);
        if (left < FRAME_HEADER_BYTES + length) break;
        const payload = buf.subarray(at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length);
        at += FRAME_HEADER_BYTES + length;
        switch (kind) {
          case FRAME_DATA:
            await this.events.data(part, unit, payload);
            break;
          case FRAME_UNIT: {
            let u: Unit;
            try {
              u = JSON.parse(payload.toString("utf8")) as Unit;
            } catch {
              throw new FormatError(`a unit frame of part ${part} is not JSON`);
            }
            await this.events.unit(part, unit, u);
            break;
          }
          case FRAME_PART_END:
            await this.events.partEnd(part);
            break;
          case FRAME_END:
            this.state = "done";
            await this.events.end();
            break;
          default:
            throw new FormatError(`it holds a frame of unknown kind ${kind}`);
        }
      } else {
        if (left > 0) throw new FormatError("it has bytes after its end frame");
        break;
      }
    }
    this.pending = at >= buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(at));
  }

  /** The input ended: an error unless the end frame was read. */
  finish(): void {
    if (this.state !== "done") throw new FormatError("it ends before its end frame (truncated)");
  }
}
