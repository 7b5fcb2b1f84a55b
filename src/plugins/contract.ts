// The in-process plugin interface. A method turns a server into a byte
// stream (backup) and a byte stream back into a server (restore). The agent
// owns compression, checksums, storage and the manifest.
// The container-level contract (run spec, result line, exit codes) is in
// docs/plugins.md.
import type { Readable } from "node:stream";
import type { Logger } from "../lib/log.js";
import type { Endpoint } from "../db/endpoint.js";
import type { Manifest, ReplicationPosition } from "../storage/catalog.js";

export type MethodKind = "logical" | "physical" | "snapshot";

export interface BackupContext {
  source: Endpoint;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

export interface BackupOutcome {
  role: "master" | "slave" | "standalone";
  serverId: number;
  version: string;
  replication: ReplicationPosition | undefined;
  /** Method-specific facts recorded in the manifest (lock mode, databases...). */
  details: Record<string, unknown>;
  warnings: string[];
}

export interface BackupRun {
  /** The raw (uncompressed) backup bytes. */
  stream: Readable;
  /** Settles after the stream has ended and the tool has exited. */
  outcome: Promise<BackupOutcome>;
}

export interface RestoreContext {
  target: Endpoint;
  manifest: Manifest;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

export interface BackupMethod {
  readonly name: string;
  readonly kind: MethodKind;
  /** File extension of the raw stream, e.g. "sql" or "xbstream". */
  readonly extension: string;
  /** Check options before anything runs; throw BadInput with the option's name. */
  validateOptions(options: Record<string, unknown>): void;
  backup(ctx: BackupContext): Promise<BackupRun>;
  /** Load `input` (raw, already decompressed and checksummed) into the target. */
  restore(ctx: RestoreContext, input: Readable): Promise<void>;
}
