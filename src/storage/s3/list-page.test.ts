// list-page.ts reads a ListObjectsV2 page exactly as the AWS SDK's
// deserializer does, or declines. Each page here is served by a local HTTP
// server to a plain S3Client (the SDK's own reading) and read by
// parseListPage; and S3ObjectStore, which uses the reader, lists the same
// as the SDK whether the reader takes a page or declines it.
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseListPage, type ListPage } from "./list-page.js";
import { S3ObjectStore } from "./s3-store.js";

let server: http.Server;
let endpoint: string;
/** What the server answers next, by request order; the last one repeats. */
let replies: { status: number; body: string }[] = [];
let served = 0;

beforeAll(async () => {
  server = http.createServer((req, res) => {
    req.resume();
    const r = replies[Math.min(served, replies.length - 1)] ?? { status: 500, body: "" };
    served++;
    res.writeHead(r.status, { "content-type": "application/xml" });
    res.end(r.body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const credentials = { accessKeyId: "k", secretAccessKey: "s" };

function serve(...bodies: (string | { status: number; body: string })[]): void {
  replies = bodies.map((b) => (typeof b === "string" ? { status: 200, body: b } : b));
  served = 0;
}

/** The page as the SDK reads it, in list-page.ts's shape. */
async function sdkPage(body: string): Promise<ListPage> {
  serve(body);
  const client = new S3Client({ endpoint, region: "us-east-1", forcePathStyle: true, credentials, maxAttempts: 1 });
  try {
    const res = await client.send(new ListObjectsV2Command({ Bucket: "bkt" }));
    return {
      contents: (res.Contents ?? []).map((o) => ({ key: o.Key ?? "", size: o.Size, lastModified: o.LastModified, etag: o.ETag })),
      commonPrefixes: (res.CommonPrefixes ?? []).flatMap((p) => (p.Prefix ? [p.Prefix] : [])),
      isTruncated: res.IsTruncated,
      nextContinuationToken: res.NextContinuationToken,
    };
  } finally {
    client.destroy();
  }
}

const HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n';
const page = (inner: string, attrs = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'): string => `${HEAD}<ListBucketResult${attrs}>${inner}</ListBucketResult>`;
const obj = (key: string, extra = ""): string =>
  `<Contents><Key>${key}</Key><LastModified>2026-11-30T06:45:38.000Z</LastModified><ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>631</Size><StorageClass>STANDARD</StorageClass>${extra}</Contents>`;

const PAGES: Record<string, string> = {
  // What versitygw 1.8 sends (files written into its directory have no ETag).
  versitygw: page(
    "<Name>bench</Name><Prefix>archive/</Prefix><NextContinuationToken>archive/b/manifest.json</NextContinuationToken><KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>" +
      "<Contents><LastModified>2026-11-30T06:45:38Z</LastModified><ChecksumAlgorithm></ChecksumAlgorithm><ChecksumType></ChecksumType><ETag></ETag><Key>archive/a/data.sql.zst</Key><Size>13</Size><StorageClass>STANDARD</StorageClass></Contents>" +
      "<Contents><LastModified>2026-11-30T06:45:38Z</LastModified><ChecksumAlgorithm></ChecksumAlgorithm><ChecksumType></ChecksumType><ETag></ETag><Key>archive/b/manifest.json</Key><Size>631</Size><StorageClass>STANDARD</StorageClass></Contents>" +
      "<EncodingType></EncodingType>",
  ),
  // AWS's shape, pretty-printed, with an owner, checksums and a restore status.
  aws: page(
    `\n  <Name>bkt</Name>\n  <Prefix>c/</Prefix>\n  <KeyCount>2</KeyCount>\n  <MaxKeys>1000</MaxKeys>\n  <IsTruncated>false</IsTruncated>\n  ` +
      obj("c/x/manifest.json", "<Owner><ID>abc</ID><DisplayName>me</DisplayName></Owner><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType>") +
      `\n  ` +
      obj("c/y/manifest.json", "<RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress></RestoreStatus>") +
      "\n",
  ),
  "keys with entities, character references, spaces and non-ASCII": page(
    "<IsTruncated>false</IsTruncated>" +
      obj("c/a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;/manifest.json") +
      obj("c/&#65;&#x42;&#x263A;/x") +
      obj(" c/ leading and trailing /x ") +
      obj("c/ünïcødé/日本/x") +
      obj("c/plus+percent%20/x") +
      obj("&#10;") +
      obj("  "),
  ),
  "times with fractions and offsets": page(
    "<IsTruncated>false</IsTruncated>" +
      ["2026-11-30T06:45:38.7Z", "2026-11-30T06:45:38.123Z", "2026-11-30T06:45:38.999999Z", "2026-11-30T06:45:38.5+02:00", "2024-02-29T23:59:60-05:30", "2026-11-30t06:45:38z", "2026-04-31T00:00:00.000Z", "0099-01-01T00:00:00Z", "2026-11-30T06:45:38.0004Z"]
        .map((t, i) => `<Contents><Key>c/${i}</Key><LastModified>${t}</LastModified><Size>${i}</Size></Contents>`)
        .join(""),
  ),
  "a delimiter listing": page(
    "<Prefix></Prefix><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated><NextContinuationToken>tok&amp;en==</NextContinuationToken>" +
      "<CommonPrefixes><Prefix>a/</Prefix></CommonPrefixes><CommonPrefixes><Prefix>b &amp; c/</Prefix></CommonPrefixes>" +
      obj("top-level-object"),
  ),
  "an empty listing": page("<Name>bkt</Name><Prefix>none/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"),
  "a self-closing page": `${HEAD}<ListBucketResult/>`,
  "fields missing": page("<Contents><Key>k</Key></Contents><Contents><Size>1</Size></Contents><Contents><ETag/><Key/></Contents>"),
};

describe("parseListPage reads a page as the SDK does", () => {
  for (const [name, body] of Object.entries(PAGES)) {
    it(name, async () => {
      const fast = parseListPage(body);
      expect(fast, "the reader declined a page it should read").toBeDefined();
      expect(fast).toEqual(await sdkPage(body));
    });
  }
});

describe("parseListPage declines what it is not sure of", () => {
  const whole = PAGES.aws as string;
  const declined: Record<string, string> = {
    "a body cut short": whole.slice(0, Math.floor(whole.length / 2)),
    "the closing tag missing": whole.replace("</ListBucketResult>", ""),
    "an S3 error in a 200 body": `${HEAD}<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>`,
    "CDATA": page(`<IsTruncated>false</IsTruncated><Contents><Key><![CDATA[c/<x>]]></Key><Size>1</Size></Contents>`),
    "a comment": page(`<!-- hi --><IsTruncated>false</IsTruncated>${obj("c/x")}`),
    "a DOCTYPE": `<!DOCTYPE x>${page("<IsTruncated>false</IsTruncated>")}`,
    "URL-encoded keys": page(`<EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>${obj("c/a%20b")}`),
    "a key twice in one object": page(`<IsTruncated>false</IsTruncated><Contents><Key>a</Key><Key>b</Key><Size>1</Size></Contents>`),
    "a size that is not a whole number": page(`<IsTruncated>false</IsTruncated><Contents><Key>a</Key><Size>1.5</Size></Contents>`),
    "a date that is not RFC 3339": page(`<IsTruncated>false</IsTruncated><Contents><Key>a</Key><LastModified>Mon, 30 Nov 2026 06:45:38 GMT</LastModified></Contents>`),
    "an hour of 24": page(`<IsTruncated>false</IsTruncated><Contents><Key>a</Key><LastModified>2026-04-30T24:00:00Z</LastModified></Contents>`),
    "IsTruncated not a boolean": page(`<IsTruncated>yes</IsTruncated>`),
    "an unknown entity": page(`<IsTruncated>false</IsTruncated>${obj("c/&nbsp;")}`),
    "a bare ampersand": page(`<IsTruncated>false</IsTruncated>${obj("c/a & b")}`),
    "text between elements": page(`<IsTruncated>false</IsTruncated>stray${obj("c/x")}`),
    "another root": `${HEAD}<ListAllMyBucketsResult></ListAllMyBucketsResult>`,
    "two roots": `${page("<IsTruncated>false</IsTruncated>")}${page("<IsTruncated>false</IsTruncated>")}`,
    "CR line ends": page("\r\n<IsTruncated>false</IsTruncated>\r\n"),
    "a byte-order mark": `\uFEFF${page("<IsTruncated>false</IsTruncated>")}`,
  };
  for (const [name, body] of Object.entries(declined)) {
    it(name, () => {
      expect(parseListPage(body)).toBeUndefined();
    });
  }
});

describe("S3ObjectStore.list through the reader", () => {
  function store(): S3ObjectStore {
    return new S3ObjectStore({ bucket: "bkt", prefix: "", endpoint, credentials, maxAttempts: 3 });
  }

  it("follows continuation tokens across pages the reader takes and pages it leaves to the SDK", async () => {
    const declinedPage = page(
      `<IsTruncated>true</IsTruncated><NextContinuationToken>t2</NextContinuationToken><Contents><Key><![CDATA[c/b <cdata>/x]]></Key><Size>2</Size><LastModified>2026-11-30T06:45:38.7Z</LastModified></Contents>`,
    );
    expect(parseListPage(declinedPage)).toBeUndefined();
    serve(
      page(`<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>${obj("c/a &amp; b/x")}`),
      declinedPage,
      page(`<IsTruncated>false</IsTruncated>${obj("c/c/x")}`),
    );
    const s = store();
    try {
      const listed = await s.list("c/");
      expect(listed.map((o) => o.key)).toEqual(["c/a & b/x", "c/b <cdata>/x", "c/c/x"]);
      expect(listed[1]).toEqual({ key: "c/b <cdata>/x", size: 2, lastModified: new Date(Date.UTC(2026, 10, 30, 6, 45, 38, 700)), etag: undefined });
      expect(listed[0]?.etag).toBe('"0123456789abcdef0123456789abcdef"');
      expect(served).toBe(3);
    } finally {
      s.close();
    }
  });

  it("an error in a 200 body is retried by the SDK, then the listing succeeds whole", async () => {
    serve(`${HEAD}<Error><Code>InternalError</Code><Message>try again</Message></Error>`, page(`<IsTruncated>false</IsTruncated>${obj("c/x")}`));
    const s = store();
    try {
      expect((await s.list("c/")).map((o) => o.key)).toEqual(["c/x"]);
      expect(served).toBe(2);
    } finally {
      s.close();
    }
  });

  it("a page cut short is never a shorter listing: the SDK's parse fails and the listing is a StorageError", async () => {
    const whole = page(`<IsTruncated>false</IsTruncated>${obj("c/x")}${obj("c/y")}`);
    serve(whole.slice(0, whole.indexOf("c/y")));
    const s = store();
    try {
      await expect(s.list("c/")).rejects.toMatchObject({ reason: "StorageError" });
    } finally {
      s.close();
    }
  });

  it("listChildren reads common prefixes and top-level objects", async () => {
    serve(PAGES["a delimiter listing"] as string, page(`<IsTruncated>false</IsTruncated><CommonPrefixes><Prefix>d/</Prefix></CommonPrefixes>`));
    const s = store();
    try {
      expect(await s.listChildren("")).toEqual(["a", "b & c", "d", "top-level-object"]);
    } finally {
      s.close();
    }
  });
});
