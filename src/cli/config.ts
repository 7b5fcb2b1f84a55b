// Settings: flags override the environment, which overrides replicator.yaml
// (from --config, $REPLICATOR_CONFIG, then ./replicator.yaml), which
// overrides the defaults. Passwords come from the environment, a file, or
// the config file; never from a URL or a flag.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { badInput } from "../lib/errors.js";
import { parseEndpoint, readSecretFile, type Endpoint } from "../db/endpoint.js";

const endpointUrl = z.string().min(1);

export const configSchema = z
  .object({
    cluster: z.string().optional(),
    repository: z.string().optional(),
    s3: z
      .object({
        endpoint: z.string().optional(),
        region: z.string().optional(),
        forcePathStyle: z.boolean().optional(),
      })
      .strict()
      .optional(),
    source: endpointUrl.optional(),
    target: endpointUrl.optional(),
    /** Password of the source/target database user. Prefer passwordFile. */
    password: z.string().optional(),
    passwordFile: z.string().optional(),
    method: z.string().optional(),
    methodOptions: z.record(z.string(), z.unknown()).optional(),
    compression: z.enum(["zstd", "gzip", "none"]).optional(),
    retain: z.number().int().min(1).optional(),
    replicateFrom: endpointUrl.optional(),
    replicationPassword: z.string().optional(),
    replicationPasswordFile: z.string().optional(),
  })
  .strict();
export type ConfigFile = z.infer<typeof configSchema>;

export function findConfigPath(flag: string | undefined, env: NodeJS.ProcessEnv, cwd: string): string | undefined {
  if (flag) return path.resolve(cwd, flag);
  if (env.REPLICATOR_CONFIG) return path.resolve(cwd, env.REPLICATOR_CONFIG);
  const local = path.join(cwd, "replicator.yaml");
  return existsSync(local) ? local : undefined;
}

export function loadConfigFile(file: string | undefined, explicit: boolean): ConfigFile {
  if (!file) return {};
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if (!explicit && (err as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw badInput("ConfigUnreadable", `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseConfig(text, file);
}

export function parseConfig(text: string, file: string): ConfigFile {
  let data: unknown;
  try {
    data = parseYaml(text) ?? {};
  } catch (err) {
    throw badInput("InvalidConfig", `${file} is not valid YAML: ${(err as Error).message.split("\n")[0] ?? ""}`);
  }
  const res = configSchema.safeParse(data);
  if (!res.success) {
    const issue = res.error.issues[0];
    const at = issue?.path.join(".") ?? "";
    const msg = issue?.code === "unrecognized_keys" ? `unknown key(s) ${issue.keys.join(", ")}` : (issue?.message ?? "invalid");
    throw badInput("InvalidConfig", `${file}: ${at ? `${at}: ` : ""}${msg}`);
  }
  return res.data;
}

export interface Settings {
  cluster: string;
  repository: string | undefined;
  s3: { endpoint?: string | undefined; region?: string | undefined; forcePathStyle?: boolean | undefined };
  source: string | undefined;
  target: string | undefined;
  /** The method named by flag, env or config; undefined means the engine's default. */
  method: string | undefined;
  methodOptions: Record<string, unknown>;
  compression: "zstd" | "gzip" | "none";
  retain: number | undefined;
  replicateFrom: string | undefined;
  /** Resolved lazily so a command that needs no database never reads secrets. */
  dbPassword: () => string | undefined;
  replicationPassword: () => string | undefined;
  configPath: string | undefined;
}

export interface FlagValues {
  cluster?: string | undefined;
  repository?: string | undefined;
  source?: string | undefined;
  target?: string | undefined;
  method?: string | undefined;
  compression?: string | undefined;
  retain?: string | undefined;
  replicateFrom?: string | undefined;
  s3Endpoint?: string | undefined;
  s3Region?: string | undefined;
  passwordFile?: string | undefined;
  replicationPasswordFile?: string | undefined;
}

function secret(
  label: string,
  envValue: string | undefined,
  envFile: string | undefined,
  flagFile: string | undefined,
  cfgValue: string | undefined,
  cfgFile: string | undefined,
): () => string | undefined {
  return () => {
    if (flagFile) return readSecretFile(flagFile, label);
    if (envValue !== undefined) return envValue;
    if (envFile) return readSecretFile(envFile, label);
    if (cfgFile) return readSecretFile(cfgFile, label);
    return cfgValue;
  };
}

export function resolveSettings(flags: FlagValues, cfg: ConfigFile, env: NodeJS.ProcessEnv, configPath?: string): Settings {
  const retainText = flags.retain ?? env.REPLICATOR_RETAIN;
  let retain = cfg.retain;
  if (retainText !== undefined) {
    if (!/^\d+$/.test(retainText) || Number(retainText) < 1) {
      throw badInput("InvalidRetention", `--retain must be a whole number >= 1 (got "${retainText}"); the newest backup is never deleted`);
    }
    retain = Number(retainText);
  }
  const compression = flags.compression ?? env.REPLICATOR_COMPRESSION ?? cfg.compression ?? "zstd";
  if (compression !== "zstd" && compression !== "gzip" && compression !== "none") {
    throw badInput("InvalidOption", `--compression must be zstd, gzip or none (got "${compression}")`);
  }
  const baseDir = configPath ? path.dirname(configPath) : process.cwd();
  const cfgPath = (p: string | undefined): string | undefined => (p ? path.resolve(baseDir, p) : undefined);
  return {
    cluster: flags.cluster ?? env.REPLICATOR_CLUSTER ?? cfg.cluster ?? "default",
    repository: flags.repository ?? env.REPLICATOR_REPOSITORY ?? cfg.repository,
    s3: {
      endpoint: flags.s3Endpoint ?? cfg.s3?.endpoint,
      region: flags.s3Region ?? cfg.s3?.region,
      forcePathStyle: cfg.s3?.forcePathStyle,
    },
    source: flags.source ?? env.REPLICATOR_SOURCE ?? cfg.source,
    target: flags.target ?? env.REPLICATOR_TARGET ?? cfg.target,
    method: flags.method ?? env.REPLICATOR_METHOD ?? cfg.method,
    methodOptions: { ...(cfg.methodOptions ?? {}) },
    compression,
    retain,
    replicateFrom: flags.replicateFrom ?? env.REPLICATOR_REPLICATE_FROM ?? cfg.replicateFrom,
    dbPassword: secret("password", env.REPLICATOR_DB_PASSWORD, env.REPLICATOR_DB_PASSWORD_FILE, flags.passwordFile, cfg.password, cfgPath(cfg.passwordFile)),
    replicationPassword: secret(
      "replication password",
      env.REPLICATOR_REPLICATION_PASSWORD,
      env.REPLICATOR_REPLICATION_PASSWORD_FILE,
      flags.replicationPasswordFile,
      cfg.replicationPassword,
      cfgPath(cfg.replicationPasswordFile),
    ),
    configPath,
  };
}

export function requireSetting<T>(value: T | undefined, flag: string, key: string): T {
  if (value === undefined || value === "") {
    throw badInput("MissingSetting", `no ${key} given; pass ${flag}, or set ${key} in replicator.yaml`);
  }
  return value;
}

/** Where the password of each endpoint flag comes from, for messages. */
function passwordSourceOf(what: string): string {
  return what === "--replicate-from" || what === "the plan's master"
    ? "REPLICATOR_REPLICATION_PASSWORD (or --replication-password-file, or replicationPasswordFile in replicator.yaml)"
    : "REPLICATOR_DB_PASSWORD (or --password-file, or passwordFile in replicator.yaml)";
}

export function endpointFrom(url: string, what: string, password: string | undefined, user?: string): Endpoint {
  let hasPassword = false;
  try {
    hasPassword = new URL(url).password !== "";
  } catch {
    // parseEndpoint reports the malformed URL.
  }
  if (hasPassword) {
    throw badInput("SecretInUrl", `${what} URL contains a password; remove it and set ${passwordSourceOf(what)} instead`);
  }
  const e = { ...parseEndpoint(url, what), password };
  if (user) e.user = user;
  return e;
}
