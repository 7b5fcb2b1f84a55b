// The in-process plugin interface. A method turns a server into a byte
// stream (backup) and a byte stream back into a server (restore). The agent
// owns compression, checksums, storage and the manifest.
//
// Two restore shapes:
// - "server": the stream is loaded into a running, empty server (logical
//   dumps: mysqldump, pg_dump).
// - "datadir": the stream becomes the data directory of a stopped server
//   (physical copies: mariabackup, pg_basebackup). `configureReplica` then
//   writes into that directory what makes the server start as a replica of
//   its master (the recovery.conf step), before the server is started.
//
// The process-level contract for third-party plugins (run spec, result
// line, exit codes) is in docs/plugins.md.
import type { Readable, Writable } from "node:stream";
import type { Logger } from "../lib/log.js";
import type { Endpoint, Engine } from "../db/endpoint.js";
import type { Manifest, ReplicationPosition } from "../storage/catalog.js";

export type MethodKind = "logical" | "physical" | "snapshot";
export type { Engine };

/**
 * What a method tells the agent when it stops a slave's replication for a
 * backup, so that a killed run leaves a trace (the agent writes a marker
 * object, and removes it on `restarted`). A method stops only threads that
 * were running, and restarts exactly those it stopped, on success, failure
 * and abort alike; replication an admin had stopped stays stopped.
 */
export interface ReplicationHooks {
  /** After the method stopped replication threads on a slave source, before copying. */
  stopped(info: { threads: ("io" | "sql")[]; at: string }): Promise<void>;
  /** After the method restarted exactly the threads it stopped. */
  restarted(): Promise<void>;
}

export interface BackupContext {
  source: Endpoint;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
  replication?: ReplicationHooks;
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

/**
 * Where a piped backup writes: the write end of an OS pipe into the agent's
 * compressor (the zstd tool), so the raw bytes never pass through the agent.
 */
export interface PipedSink {
  /** Give this to the tool child as its stdout (spawn's stdio); the agent closes its own copy afterwards. */
  stdout: Writable;
  /**
   * The first raw bytes of the stream (1 MiB, or all of a shorter one), read
   * back from the compressor's output: for a method that reads a header,
   * such as mariadb-dump's replication coordinates.
   */
  head(): Promise<Buffer>;
}

export interface PipedBackupRun {
  /** Settles after the tool has exited (its bytes are then all in the pipe). */
  outcome: Promise<BackupOutcome>;
}

/** A loader started with its stdin an OS pipe: the agent's decompressor writes into it directly. */
export interface PipedLoader {
  /** The write end of the loader's stdin: the agent gives it to the decompressor as its stdout, then closes its own copy. */
  stdin: Writable;
  /** Resolves when the loader exits 0 (and the method has cleaned up); rejects with the loader's error otherwise. */
  done: Promise<void>;
  kill(): void;
  /** `stdin` is a stream of this process (a method that reads the bytes itself), not a pipe's write end: the agent pipes the decompressor's output into it. */
  inProcess?: true;
}

export interface RestoreContext {
  target: Endpoint;
  manifest: Manifest;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

export interface DatadirRestoreContext {
  /** An empty directory (the agent checked) that becomes the server's data directory. */
  datadir: string;
  manifest: Manifest;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

export interface DatadirRestoreOutcome {
  /** The position found in the restored data itself (e.g. mariadb_backup_binlog_info); it wins over the manifest's. */
  replication?: ReplicationPosition | undefined;
  warnings: string[];
}

export interface TemporaryServerContext {
  /** The restored data directory; its own server is stopped. */
  datadir: string;
  /** What the server is for, in messages ("to replay the archived binlogs"). */
  purpose: string;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

/** A temporary server on a restored data directory (see DatadirRestoreMethod.withTemporaryServer). */
export interface TemporaryServer {
  /** A local socket endpoint with every privilege, for clients such as `mariadb`. */
  endpoint: Endpoint;
  /** A statement on the control connection, opened before anything else (it keeps every privilege). */
  query(sql: string, values?: unknown[]): Promise<void>;
  /** A value quoted for that connection. */
  escape(value: string): string;
}

export interface SeedContext {
  /** The restored data directory; the server is stopped. */
  datadir: string;
  manifest: Manifest;
  /** Where the position to start from came from: the restored data, or the manifest. */
  position: ReplicationPosition;
  /** The master/primary to replicate from, with the replication user's credentials. */
  replicateFrom: Endpoint;
  options: Record<string, unknown>;
  log: Logger;
  signal: AbortSignal;
}

interface MethodBase {
  readonly name: string;
  readonly kind: MethodKind;
  /** The database engine the method backs up. Endpoints of another engine are refused. */
  readonly engine: Engine;
  /** File extension of the raw stream, e.g. "sql" or "xbstream". */
  readonly extension: string;
  /** Check options before anything runs; throw BadInput with the option's name. */
  validateOptions(options: Record<string, unknown>): void;
  backup(ctx: BackupContext): Promise<BackupRun>;
  /**
   * Optional, the same backup written straight into `sink` (an OS pipe into
   * the compressor) instead of returned as a stream. The agent uses it when
   * it compresses with the zstd tool; everything else about the backup
   * (position, cleanup, errors) is as in backup().
   */
  backupPiped?(ctx: BackupContext, sink: PipedSink): Promise<PipedBackupRun>;
}

export interface ServerRestoreMethod extends MethodBase {
  readonly restoreInto: "server";
  /** The method restores some databases or tables only (options restoreDatabases, restoreTables); the agent refuses those options otherwise. */
  readonly partialRestore?: true;
  /** Load `input` (raw, already decompressed and checksummed) into the running target. */
  restore(ctx: RestoreContext, input: Readable): Promise<void>;
  /** Optional, restore() with the loader reading an OS pipe the agent's decompressor writes into (no bytes through the agent). */
  startLoader?(ctx: RestoreContext): Promise<PipedLoader>;
}

export interface DatadirRestoreMethod extends MethodBase {
  readonly restoreInto: "datadir";
  /** Turn `input` into a ready-to-start data directory at ctx.datadir (extract, prepare, move). */
  restore(ctx: DatadirRestoreContext, input: Readable): Promise<DatadirRestoreOutcome>;
  /** Make the restored, stopped server start as a replica of ctx.replicateFrom at ctx.position. */
  configureReplica(ctx: SeedContext): Promise<void>;
  /**
   * Optional: run `fn` against a temporary server on the restored, stopped
   * data directory (ctx.datadir; no networking, reachable only as
   * `server.endpoint`, a private socket), then shut it down cleanly; when
   * `fn` fails the server is stopped and the error thrown as it is. A
   * point-in-time restore into a data directory, and a seed that bridges
   * purged binlogs, replay the archived binlogs through it.
   */
  withTemporaryServer?<T>(ctx: TemporaryServerContext, fn: (server: TemporaryServer) => Promise<T>): Promise<T>;
  /** Optional: fail with one line, before anything is written, when the temporary server cannot run here (its binary is not installed). */
  checkTemporaryServer?(options: Record<string, unknown>, signal: AbortSignal): Promise<void>;
  /**
   * Optional, restore() with the extractor reading an OS pipe that the agent's decompressor
   * writes into (no byte through the agent): `loader.done` settles when the stream is extracted,
   * then `finish()` does the rest (prepare, move into place) and returns what restore() returns.
   */
  startRestore?(ctx: DatadirRestoreContext): Promise<{ loader: PipedLoader; finish(): Promise<DatadirRestoreOutcome> }>;
}

export type BackupMethod = ServerRestoreMethod | DatadirRestoreMethod;
