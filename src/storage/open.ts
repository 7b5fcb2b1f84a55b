// Open a repository URL: `file:///abs/path` or `s3://bucket/prefix`.
// S3 options may come from the URL's query (`?endpoint=…&region=…&pathStyle=true`),
// from explicit options (config), or from AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
import { badInput } from "../lib/errors.js";
import { FsObjectStore } from "./fs/fs-store.js";
import type { ObjectStore } from "./object-store.js";

export interface S3Settings {
  endpoint?: string | undefined;
  region?: string | undefined;
  forcePathStyle?: boolean | undefined;
  credentials?: { accessKeyId: string; secretAccessKey: string } | undefined;
  /** PEM CA certificates trusted beside the process's own, for an https endpoint. */
  ca?: string | undefined;
  /** What an untrusted certificate's error tells the user to do. */
  untrustedHint?: string | undefined;
}

/**
 * Open a repository. Async because the S3 backend (and the AWS SDK, about a
 * second of module loading) is imported only when an s3:// URL needs it.
 */
export async function openRepository(url: string, s3: S3Settings = {}): Promise<ObjectStore> {
  checkPathSegments(url);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw badInput("InvalidRepository", `invalid repository URL "${url}"; use s3://bucket/prefix or file:///abs/path`);
  }
  if (u.username || u.password) {
    throw badInput("SecretInUrl", "credentials in the repository URL are not allowed; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file");
  }
  switch (u.protocol) {
    case "file:":
      return new FsObjectStore(decodeURIComponent(u.pathname).replace(/\/+$/, "") || "/");
    case "s3:": {
      const q = u.searchParams;
      const endpoint = q.get("endpoint") ?? s3.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL;
      const pathStyle = q.get("pathStyle") ?? q.get("forcePathStyle");
      const { S3ObjectStore } = await import("./s3/s3-store.js");
      return new S3ObjectStore({
        bucket: u.hostname,
        prefix: decodeURIComponent(u.pathname).replace(/^\/+|\/+$/g, ""),
        endpoint: endpoint ?? undefined,
        region: q.get("region") ?? s3.region,
        forcePathStyle: pathStyle !== null ? pathStyle === "true" : s3.forcePathStyle,
        credentials: s3.credentials,
        ca: s3.ca,
        untrustedHint: s3.untrustedHint,
      });
    }
    default:
      throw badInput("InvalidRepository", `unsupported repository scheme "${u.protocol}" in ${url}; use s3:// or file://`);
  }
}

/**
 * Refuse `.`/`..` and empty segments in the path of a repository URL, before
 * URL parsing silently resolves them (`s3://bkt/../bkt2/x` would become a
 * prefix inside `bkt`).
 */
function checkPathSegments(url: string): void {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)([^?#]*)/i.exec(url);
  if (!m) return;
  const scheme = (m[1] ?? "").toLowerCase();
  const rawPath = m[3] ?? "";
  let decoded: string;
  try {
    decoded = decodeURIComponent(rawPath);
  } catch {
    throw badInput("InvalidRepository", `invalid percent-encoding in repository URL "${url}"`);
  }
  const trimmed = decoded.replace(/^\//, "").replace(/\/+$/, "");
  const segments = trimmed.split("/");
  if (segments.some((s) => s === "." || s === "..")) {
    const fix = scheme === "s3" ? "write the bucket and prefix plainly, e.g. s3://bucket/prefix" : "use the absolute path without . or .., e.g. file:///backups/prod";
    throw badInput("InvalidRepository", `repository URL "${url}" has a "." or ".." path segment; ${fix}`);
  }
  if (scheme === "s3" && trimmed.length > 0 && segments.some((s) => s === "")) {
    throw badInput("InvalidRepository", `repository URL "${url}" has an empty path segment ("//"); write the prefix without empty segments, e.g. s3://bucket/a/b`);
  }
}

/** The repository URL without query or credentials, for messages and manifests. */
export function displayRepository(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    u.search = "";
    return u.toString();
  } catch {
    return url;
  }
}
