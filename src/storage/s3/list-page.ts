// A fast reader of one ListObjectsV2 response page (`<ListBucketResult>`).
//
// The AWS SDK's generic XML deserializer costs about as much CPU as the S3
// server spends producing the page (for 10,000 backups, 20 pages: ~0.6 s of a
// 1.5 s listing). This reads the one shape a listing has, and nothing else:
// anything it does not expect (CDATA, comments, a DOCTYPE, URL-encoded keys,
// a cut-off body, an <Error>, a value it cannot read exactly) makes it return
// undefined, and the SDK parses the page as before. So it can make a listing
// faster, never different: every value it returns is what the SDK's
// deserializer returns for the same bytes (test: list-page.test.ts compares
// both on real and crafted pages).

export interface ListedObject {
  key: string;
  size: number | undefined;
  lastModified: Date | undefined;
  etag: string | undefined;
}

export interface ListPage {
  contents: ListedObject[];
  /** CommonPrefixes' Prefix values (a delimiter listing). */
  commonPrefixes: string[];
  isTruncated: boolean | undefined;
  nextContinuationToken: string | undefined;
}

const ROOT = "ListBucketResult";
/** One element: `<Tag attrs>text or children</Tag>` or `<Tag attrs/>`. Sticky, from lastIndex. */
const ELEMENT = /<([A-Za-z][\w.:-]*)(\s[^<>]*?)?(?:\/>|>([\s\S]*?)<\/\1\s*>)/y;
const SPACE = /[ \t\r\n]*/y;
const ENTITY = /&(?:#x([0-9a-fA-F]{1,6})|#(\d{1,7})|([a-zA-Z][a-zA-Z0-9]{0,30}));/g;
const NAMED: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };
const RFC3339 = /^(\d{4})-(\d\d)-(\d\d)[tT](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(([-+]\d\d:\d\d)|[zZ])$/;

class Unexpected extends Error {}

function bail(): never {
  throw new Unexpected();
}

/** Text content as the SDK reads it: entities decoded; whitespace with a newline, and nothing else, is "". */
function text(raw: string | undefined): string {
  if (raw === undefined || raw === "") return "";
  if (raw.includes("<")) bail();
  const decoded = raw.includes("&")
    ? raw.replace(ENTITY, (_m, hex: string | undefined, dec: string | undefined, named: string | undefined) => {
        if (hex) return String.fromCharCode(parseInt(hex, 16));
        if (dec) return String.fromCharCode(parseInt(dec, 10));
        const v = NAMED[named ?? ""];
        if (v === undefined) bail();
        return v;
      })
    : raw;
  if (decoded.includes("&") && /&(?!amp;|lt;|gt;|quot;|apos;|#)/.test(raw)) bail();
  return decoded.trim() === "" && decoded.includes("\n") ? "" : decoded;
}

/** The children of an element's content: [tag, attributes, inner text] each; anything between them but whitespace is unexpected. */
function children(inner: string): [string, string | undefined, string | undefined][] {
  const out: [string, string | undefined, string | undefined][] = [];
  let i = 0;
  for (;;) {
    SPACE.lastIndex = i;
    SPACE.exec(inner);
    i = SPACE.lastIndex;
    if (i >= inner.length) return out;
    ELEMENT.lastIndex = i;
    const m = ELEMENT.exec(inner);
    if (!m) bail();
    out.push([m[1] as string, m[2], m[3]]);
    i = ELEMENT.lastIndex;
  }
}

function leaf(raw: string | undefined): string {
  return text(raw);
}

function long(raw: string | undefined): number {
  const t = leaf(raw);
  if (!/^-?\d{1,15}$/.test(t)) bail();
  return Number(t);
}

/** An RFC 3339 time exactly as the SDK's schema deserializer reads it (@smithy/core serde's _parseRfc3339DateTimeWithOffset). */
function time(raw: string | undefined): Date {
  const m = RFC3339.exec(leaf(raw));
  if (!m) bail();
  const [, y, mo, d, h, mi, s, frac, offset] = m as unknown as string[];
  const inRange = (v: string | undefined, min: number, max: number): number => {
    const n = Number(v);
    if (!(n >= min && n <= max)) bail();
    return n;
  };
  // The same checks (the SDK throws where this declines) and the same arithmetic: Date.UTC rolls a 31st of April over, as it does there.
  const month = inRange(mo, 1, 12);
  const day = inRange(d, 1, 31);
  const hour = inRange(h, 0, 23);
  const minute = inRange(mi, 0, 59);
  const second = inRange(s, 0, 60);
  const ms = frac !== undefined && Number(frac) ? Math.round(parseFloat(`0.${frac}`) * 1000) : 0;
  const date = new Date(Date.UTC(Number(y), month - 1, day, hour, minute, second, ms));
  date.setUTCFullYear(Number(y));
  if (offset && offset.toUpperCase() !== "Z") {
    const sign = offset[0] === "-" ? 1 : -1;
    date.setTime(date.getTime() + sign * (Number(offset.slice(1, 3)) * 3_600_000 + Number(offset.slice(4, 6)) * 60_000));
  }
  return date;
}

function bool(raw: string | undefined): boolean {
  const t = leaf(raw);
  if (t === "true") return true;
  if (t === "false") return false;
  return bail();
}

/**
 * The page in `xml`, or undefined when it is anything but a plain, whole
 * `<ListBucketResult>` this reader is sure of (the caller then lets the SDK
 * parse it).
 */
export function parseListPage(xml: string): ListPage | undefined {
  try {
    return parse(xml);
  } catch (err) {
    if (err instanceof Unexpected) return undefined;
    throw err;
  }
}

function parse(input: string): ListPage {
  // CDATA, comments, a DOCTYPE, CR line ends, a byte-order mark: the SDK's reader handles (or refuses) them its own way.
  if (input.includes("<!") || input.includes("\r") || input.startsWith("\uFEFF")) bail();
  let xml = input.trim();
  if (xml.startsWith("<?")) {
    const end = xml.indexOf("?>");
    if (end < 0) bail();
    xml = xml.slice(end + 2).trim();
  }
  if (xml.includes("<?")) bail();
  const root = children(xml);
  if (root.length !== 1) bail();
  const [tag, , inner] = root[0] as [string, string | undefined, string | undefined];
  if (tag !== ROOT) bail();
  const page: ListPage = { contents: [], commonPrefixes: [], isTruncated: undefined, nextContinuationToken: undefined };
  for (const [name, , value] of children(inner ?? "")) {
    switch (name) {
      case "Contents": {
        const o: ListedObject = { key: "", size: undefined, lastModified: undefined, etag: undefined };
        let key: string | undefined;
        const seen = new Set<string>();
        for (const [field, , v] of children(value ?? "")) {
          if (field === "Key" || field === "Size" || field === "LastModified" || field === "ETag") {
            // A field twice would be a list to the SDK: not a shape this reader knows.
            if (seen.has(field)) bail();
            seen.add(field);
          }
          if (field === "Key") key = leaf(v);
          else if (field === "Size") o.size = long(v);
          else if (field === "LastModified") o.lastModified = time(v);
          else if (field === "ETag") o.etag = leaf(v);
        }
        o.key = key ?? "";
        page.contents.push(o);
        break;
      }
      case "CommonPrefixes": {
        let prefix: string | undefined;
        for (const [field, , v] of children(value ?? "")) {
          if (field === "Prefix") {
            if (prefix !== undefined) bail();
            prefix = leaf(v);
          }
        }
        if (prefix !== undefined) page.commonPrefixes.push(prefix);
        break;
      }
      case "IsTruncated":
        if (page.isTruncated !== undefined) bail();
        page.isTruncated = bool(value);
        break;
      case "NextContinuationToken":
        if (page.nextContinuationToken !== undefined) bail();
        page.nextContinuationToken = leaf(value);
        break;
      case "EncodingType":
        // URL-encoded keys (we never ask for them): leave such a page to the SDK. versitygw sends it empty.
        if (leaf(value) !== "") bail();
        break;
      default:
        // Name, Prefix, Delimiter, MaxKeys, KeyCount, ContinuationToken, StartAfter: not used.
        leafOrElement(value);
    }
  }
  return page;
}

/** An element this reader does not use: any well-formed content will do. */
function leafOrElement(value: string | undefined): void {
  if (value === undefined || !value.includes("<")) return;
  children(value);
}
