// The process-level plugin contract, version 1: what a plugin executable
// prints for `info`, what it writes to REPLICATOR_RESULT_FILE, and the
// environment it receives. Pure: schemas, validators with one-line errors,
// and the names of the variables. docs/plugins.md is the prose version.
import { z } from "zod";
import { replicationPositionSchema, sanitizeMethod } from "../../storage/catalog.js";
import type { Engine } from "../../db/endpoint.js";

/** The contract versions this agent speaks. A plugin's `info.contract` must be one of them. */
export const CONTRACT_VERSIONS = [1] as const;
export const CONTRACT_VERSION = 1;

/** The subcommands: argv[1] of the plugin. */
export type Subcommand = "info" | "backup" | "restore" | "configure-replica";

/** Environment variables the agent sets for a plugin (values are never secrets: credentials are in files). */
export const ENV = {
  contract: "REPLICATOR_CONTRACT",
  options: "REPLICATOR_OPTIONS",
  resultFile: "REPLICATOR_RESULT_FILE",
  manifestFile: "REPLICATOR_MANIFEST_FILE",
  tmpdir: "REPLICATOR_TMPDIR",
  datadir: "REPLICATOR_DATADIR",
  position: "REPLICATOR_POSITION",
  method: "REPLICATOR_METHOD",
} as const;

/** Connection variables: `${prefix}_ENGINE`, `_HOST`, `_PORT`, `_USER`, `_DATABASE`, `_SOCKET`, `_DEFAULTS_FILE` | `_PASSFILE`. */
export type ConnectionPrefix = "REPLICATOR_DB" | "REPLICATOR_MASTER";

/** Method names no plugin may take besides the built-ins': the operator's own method, and sanitizeMethod's fallback. */
export const RESERVED_METHOD_NAMES = ["volumesnapshot", "custom"];

/** Exit code a plugin uses for bad input (wrong option, wrong password): the agent does not retry. */
export const EXIT_BAD_INPUT = 2;

const METHOD_NAME_RE = /^[a-z0-9]+(?:_[a-z0-9]+)*$/;

/** True when `name` survives catalog.sanitizeMethod unchanged (it goes into backup names). */
export function isValidMethodName(name: string): boolean {
  return METHOD_NAME_RE.test(name) && sanitizeMethod(name) === name && name.length <= 40;
}

export const pluginInfoSchema = z
  .object({
    contract: z.number().int(),
    name: z.string(),
    kind: z.enum(["logical", "physical"]),
    engine: z.enum(["mysql", "postgresql"]),
    restoreInto: z.enum(["server", "datadir"]),
    extension: z.string().regex(/^[a-z0-9]+(?:\.[a-z0-9]+)*$/, "must be lower-case letters and digits, e.g. tar or xbstream (no leading dot)"),
    /** The plugin's own version, recorded in the manifest's details. */
    version: z.string().max(100).optional(),
    description: z.string().max(500).optional(),
  })
  .strict();
export type PluginInfo = z.infer<typeof pluginInfoSchema>;

const strictPosition = replicationPositionSchema.strict();

export const backupResultSchema = z
  .object({
    role: z.enum(["master", "slave", "standalone"]),
    serverId: z.number().int().nonnegative(),
    version: z.string(),
    replication: strictPosition.optional(),
    details: z.record(z.string(), z.unknown()).optional(),
    warnings: z.array(z.string()).optional(),
  })
  .strict();
export type BackupResult = z.infer<typeof backupResultSchema>;

/** What a datadir plugin may write after `restore`: the position found in the restored data. All optional. */
export const datadirRestoreResultSchema = z
  .object({
    replication: strictPosition.optional(),
    warnings: z.array(z.string()).optional(),
  })
  .strict();
export type DatadirRestoreResult = z.infer<typeof datadirRestoreResultSchema>;

function typeOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "number" && !Number.isInteger(v)) return "a fraction";
  if (typeof v === "string") return `a string (${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)})`;
  if (typeof v === "object") return "an object";
  return typeof v === "undefined" ? "missing" : `a ${typeof v}`;
}

function at(input: unknown, path: PropertyKey[]): unknown {
  let v: unknown = input;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[p];
  }
  return v;
}

const ARTICLE: Record<string, string> = { number: "a number", string: "a string", object: "an object", array: "an array", boolean: "true or false", int: "a whole number" };

/** One zod issue as "replication.position must be a number (got a string ("42"))". */
export function describeIssue(issue: z.core.$ZodIssue, input: unknown): string {
  const where = issue.path.length > 0 ? issue.path.map(String).join(".") : "the object";
  const got = at(input, issue.path);
  switch (issue.code) {
    case "invalid_type":
      if (got === undefined) return `${where} is missing`;
      return `${where} must be ${ARTICLE[issue.expected] ?? issue.expected} (got ${typeOf(got)})`;
    case "invalid_value":
      if (got === undefined) return `${where} is missing (one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")})`;
      return `${where} must be ${issue.values.length === 1 ? JSON.stringify(issue.values[0]) : `one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`} (got ${typeOf(got)})`;
    case "unrecognized_keys":
      return `${where === "the object" ? "the object" : where} has unknown field${issue.keys.length > 1 ? "s" : ""} ${issue.keys.join(", ")} (contract 1 has no such field; check the spelling)`;
    case "too_small":
      return `${where} must be ${issue.origin === "number" ? `>= ${String(issue.minimum)}` : `at least ${String(issue.minimum)} long`} (got ${typeOf(got)})`;
    case "too_big":
      return `${where} must be ${issue.origin === "number" ? `<= ${String(issue.maximum)}` : `at most ${String(issue.maximum)} long`}`;
    case "invalid_format":
      return `${where} ${issue.message.startsWith("must") ? issue.message : `is not valid (${issue.message})`} (got ${typeOf(got)})`;
    case "custom":
    case "invalid_element":
    case "invalid_key":
    case "invalid_union":
    case "not_multiple_of":
      return `${where}: ${issue.message}`;
  }
}

export type Validation<T> = { ok: true; value: T } | { ok: false; error: string };

function firstIssue<T>(schema: z.ZodType<T>, input: unknown): Validation<T> {
  const r = schema.safeParse(input);
  if (r.success) return { ok: true, value: r.data };
  const issue = r.error.issues[0];
  return { ok: false, error: issue ? describeIssue(issue, input) : "invalid" };
}

function parseJsonText(text: string): { ok: true; value: unknown } | { ok: false; error: string } {
  const t = text.trim();
  if (t === "") return { ok: false, error: "it is empty" };
  try {
    return { ok: true, value: JSON.parse(t) };
  } catch (err) {
    return { ok: false, error: `it is not JSON (${(err as Error).message})` };
  }
}

/**
 * Validate `PLUGIN info`'s stdout. `builtins` are names the plugin may not take.
 * The error is the part after "plugin X printed invalid info: ".
 */
export function validateInfo(stdout: string, builtins: readonly string[] = []): Validation<PluginInfo> {
  const lines = stdout.trim().split("\n").filter((l) => l.trim() !== "");
  if (lines.length > 1) return { ok: false, error: `expected one JSON object on one line, got ${lines.length} lines (logs go to stderr)` };
  const j = parseJsonText(stdout);
  if (!j.ok) return j;
  const c = at(j.value, ["contract"]);
  if (typeof c === "number" && Number.isInteger(c) && !(CONTRACT_VERSIONS as readonly number[]).includes(c)) {
    return { ok: false, error: `contract ${c} is not supported by this agent (it speaks contract ${CONTRACT_VERSIONS.join(", ")})` };
  }
  const r = firstIssue(pluginInfoSchema, j.value);
  if (!r.ok) return r;
  const info = r.value;
  if (!isValidMethodName(info.name)) {
    return {
      ok: false,
      error: `name ${JSON.stringify(info.name)} is not a valid method name: use lower-case letters and digits with single "_" between words, at most 40 characters (e.g. ${JSON.stringify(sanitizeMethod(info.name).slice(0, 40))})`,
    };
  }
  if (builtins.includes(info.name)) {
    return { ok: false, error: `name ${JSON.stringify(info.name)} is taken by a built-in method; choose another, so backups say which made them` };
  }
  return r;
}

/** Checks zod cannot express: a position is a GTID, file+position, or an LSN, of the plugin's engine. */
function checkPosition(p: z.infer<typeof strictPosition> | undefined, engine: Engine): string | undefined {
  if (!p) return undefined;
  if (engine === "mysql") {
    if (p.lsn !== undefined || p.timeline !== undefined) return "replication.lsn and replication.timeline are for postgresql; a mysql plugin reports gtid and/or file + position";
    if (p.file !== undefined && p.position === undefined) return "replication.file needs replication.position (the binlog offset)";
    if (p.position !== undefined && p.file === undefined) return "replication.position needs replication.file (the binlog file name)";
    if (!p.gtid && !p.file) return "replication must hold gtid, or file and position (leave replication out when the source has no binary log)";
  } else {
    if (p.gtid !== undefined || p.file !== undefined || p.position !== undefined) return "replication.gtid, .file and .position are for mysql; a postgresql plugin reports lsn (and timeline)";
    if (!p.lsn) return "replication.lsn is missing (e.g. \"0/3000028\")";
    if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(p.lsn)) return `replication.lsn must look like "0/3000028" (got ${JSON.stringify(p.lsn)})`;
  }
  return undefined;
}

/** Validate the backup result file. The error is the part after "plugin X wrote an invalid result: ". */
export function validateBackupResult(text: string, engine: Engine): Validation<BackupResult> {
  const j = parseJsonText(text);
  if (!j.ok) return j;
  const r = firstIssue(backupResultSchema, j.value);
  if (!r.ok) return r;
  const perr = checkPosition(r.value.replication, engine);
  if (perr) return { ok: false, error: perr };
  const rep = r.value.replication;
  if (rep && r.value.role !== "standalone" && rep.role !== r.value.role) {
    return {
      ok: false,
      error: `role is ${r.value.role} but replication.role is ${rep.role}; a master reports its own binlog/WAL position (replication.role "master"), a slave the position of its master it has applied ("slave")`,
    };
  }
  return r;
}

/** Validate a datadir restore's optional result file. */
export function validateDatadirRestoreResult(text: string, engine: Engine): Validation<DatadirRestoreResult> {
  const j = parseJsonText(text);
  if (!j.ok) return j;
  const r = firstIssue(datadirRestoreResultSchema, j.value);
  if (!r.ok) return r;
  const perr = checkPosition(r.value.replication, engine);
  return perr ? { ok: false, error: perr } : r;
}

/** The last non-empty line of a plugin's stderr, shortened: what a failure message quotes. */
export function lastLine(stderr: string, max = 400): string {
  const line = stderr.split("\n").map((l) => l.trim()).filter(Boolean).pop() ?? "";
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

const SECRET_NAME = /(PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|_PWD$|^PGPASSFILE$)/i;

/**
 * The environment a plugin inherits from the agent: everything (so an image's
 * own ENV reaches it) except the agent's own settings (REPLICATOR_*), the
 * storage credentials (AWS_*), and anything named like a secret.
 */
export function inheritedEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith("REPLICATOR_") || k.startsWith("AWS_") || SECRET_NAME.test(k)) continue;
    out[k] = v;
  }
  return out;
}
