// The conformance kit's seams: a throw-away database server the kit starts
// and controls (so that it can stop it and restore a data directory), and a
// fixture that fills a source with data worth checking and compares a copy.
import type { Endpoint, Engine } from "../db/endpoint.js";

export interface SandboxOptions {
  /** Binary logging / WAL for replicas, with a server id (MySQL). */
  primary?: boolean;
  serverId?: number;
  /**
   * Create the data directory but do not initialise it: the target of a
   * physical restore. `start()` is called after the restore.
   */
  empty?: boolean;
  /** A user the replicas connect as (created on primaries). */
  replicationUser?: { user: string; password: string };
  /**
   * The superuser's password. The kit passes one password to every server of
   * a run, so that the accounts inside a physically restored data directory
   * (copied from the source) still match `endpoint`. Default: random.
   */
  password?: string;
}

export interface SandboxServer {
  engine: Engine;
  /** A superuser endpoint on 127.0.0.1, with its password set. */
  endpoint: Endpoint;
  datadir: string;
  /** Start (again) on `datadir`, and wait until it accepts connections. */
  start(): Promise<void>;
  /** Clean shutdown; the data directory stays. */
  stop(): Promise<void>;
  /** Stop and remove everything. */
  destroy(): Promise<void>;
  /** Run one statement; rows as text. */
  query(sql: string): Promise<string[][]>;
  /** Why a failed start failed: the tail of the server's error log. */
  logTail(): Promise<string>;
}

export type StartSandbox = (opts: SandboxOptions) => Promise<SandboxServer>;

export interface Fixture {
  /** Create the kit's schema and rows on a fresh source. */
  seed(server: SandboxServer): Promise<void>;
  /** One checksum per table (name → digest) over every fixture table. */
  checksums(server: SandboxServer): Promise<Record<string, string>>;
  /** A write made after the backup, that a replica must receive. */
  writeAfter(server: SandboxServer): Promise<void>;
  /** True once `writeAfter`'s row is visible on `server`. */
  sawWriteAfter(server: SandboxServer): Promise<boolean>;
  /** Is `server` replicating (MySQL: both threads running; PostgreSQL: in recovery with a streaming WAL receiver)? */
  replicating(server: SandboxServer): Promise<boolean>;
  /** Optional: why `server` is not replicating (MySQL: Last_IO_Error / Last_SQL_Error), for the kit's message. */
  replicationError?(server: SandboxServer): Promise<string | undefined>;
}
