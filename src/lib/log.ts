import { pino, type Logger } from "pino";

export type { Logger };

/** Paths redacted from every log line: passwords, S3 secrets, auth headers. */
export const redactPaths = [
  "password",
  "*.password",
  "*.*.password",
  "secretAccessKey",
  "*.secretAccessKey",
  "*.*.secretAccessKey",
  "sessionToken",
  "*.sessionToken",
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "token",
  "*.token",
];

/** The one root logger; JSON lines to stderr so stdout stays for results. */
export function createLogger(opts: { level?: string; name?: string } = {}): Logger {
  return pino(
    {
      name: opts.name ?? "replicator",
      level: opts.level ?? process.env.REPLICATOR_LOG_LEVEL ?? "warn",
      redact: { paths: redactPaths, censor: "[redacted]" },
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination(2),
  );
}

/** A logger that discards everything, for tests and library callers. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
