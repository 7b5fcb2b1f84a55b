// The `pg_dump` method: a logical dump of one PostgreSQL database.
//
// What a backup holds: the database named in the source URL
// (postgresql://USER@HOST:PORT/DB; default "postgres"), one database per
// backup: every schema in it with tables, data, sequences (and their
// positions), views, functions, triggers, extensions (as CREATE EXTENSION),
// comments, ownership and grants. Not included: roles and tablespaces (they
// are cluster-wide: create the owners on the target first, or set
// `noOwner: true`), other databases, server configuration, the WAL.
//
// Consistency: pg_dump's own snapshot (one REPEATABLE READ transaction), so
// the dump is consistent without blocking writers. A dump of a standby is
// consistent too, but a long one can be cancelled by recovery conflicts
// (hot_standby_feedback / max_standby_streaming_delay).
//
// The dump is plain SQL with DROP ... IF EXISTS before each object, so that
// `restore --force` replaces what the backup holds. A logical dump records
// no replication position: it cannot seed a standby (use pg_basebackup).
// pg_dump writes into an OS pipe to the agent's zstd (backupPiped): the agent
// sees only the compressed bytes (sha256, upload).
//
// Restore: psql, in one transaction that is committed only after the whole
// stream has arrived, verified, and ends with pg_dump's completion line. A
// cut-short or corrupt stream therefore never leaves half a database behind.
import { booleanOption } from "../options.js";
import type { Readable } from "node:stream";
import { badInput, failed } from "../../lib/errors.js";
import { spawnTool } from "../../lib/exec.js";
import { feedChild, outputOf } from "../../lib/child-streams.js";
import { settleOutcome, undoOnFailure, type CleanupStack } from "../../lib/cleanup.js";
import { RESTORE_SENTINEL } from "../../db/schemas.js";
import { mapChildError, pgEnv, serverFacts } from "../../db/postgres/client.js";
import { betterLoaderError, PG_TOOLS_HINT, pgToolErrorLine } from "../../db/postgres/stream.js";
import type { BackupContext, BackupMethod, BackupOutcome, PipedSink, RestoreContext } from "../contract.js";
import { streamedOrPiped } from "../piped.js";

export interface PgDumpOptions {
  /** Leave out ownership and grants (--no-owner --no-privileges): restore as the target user. */
  noOwner: boolean;
  dumpCommand: string;
  clientCommand: string;
}

/** Options that belong to the MySQL methods, refused with a pointer to what to do instead. */
const MYSQL_ONLY: Record<string, string> = {
  databases: "pg_dump backs up one database: the one in the source URL (postgresql://USER@HOST:PORT/DB); run one backup per database",
  lock: "pg_dump takes a consistent snapshot by itself; there is no lock mode",
  users: "roles are cluster-wide and not in a pg_dump backup; create them on the target first (pg_dumpall --roles-only)",
};

export function parsePgDumpOptions(o: Record<string, unknown>): PgDumpOptions {
  for (const [k, why] of Object.entries(MYSQL_ONLY)) {
    if (o[k] !== undefined && o[k] !== false) throw badInput("InvalidOption", `option ${k} does not apply to pg_dump: ${why}`);
  }
  for (const k of ["dumpCommand", "clientCommand"]) {
    if (o[k] !== undefined && (typeof o[k] !== "string" || o[k] === "")) throw badInput("InvalidOption", `${k} must be a command name`);
  }
  return {
    noOwner: booleanOption(o, "noOwner", false),
    dumpCommand: typeof o.dumpCommand === "string" ? o.dumpCommand : "pg_dump",
    clientCommand: typeof o.clientCommand === "string" ? o.clientCommand : "psql",
  };
}

/** Pure: the pg_dump arguments (where to connect and the password are in the environment). */
export function buildPgDumpArgs(opts: Pick<PgDumpOptions, "noOwner">): string[] {
  return [
    "--format=plain",
    "--clean",
    "--if-exists",
    "--no-password",
    // An interrupted restore's sentinel is never data.
    `--exclude-schema=${RESTORE_SENTINEL}`,
    ...(opts.noOwner ? ["--no-owner", "--no-privileges"] : []),
  ];
}

/** Pure: the psql arguments of a restore (the script is read from stdin). */
export function buildLoadArgs(): string[] {
  return ["-X", "-w", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"];
}

/** The line pg_dump writes at the very end of a complete plain dump. */
export const DUMP_COMPLETE = "-- PostgreSQL database dump complete";

/**
 * The dump wrapped in one transaction whose COMMIT is written only after the
 * input ended cleanly and is a complete dump. If the input fails, iteration
 * throws before COMMIT and the loader is killed; if it ends without pg_dump's
 * completion line, nothing is committed either.
 */
export async function* inOneTransaction(input: AsyncIterable<Buffer | string>, backup: string): AsyncGenerator<Buffer | string> {
  yield "BEGIN;\n";
  let tailText = "";
  for await (const chunk of input) {
    // Only the end matters: convert at most the last 4 KiB of each chunk.
    const end = typeof chunk === "string" ? chunk.slice(-4096) : chunk.subarray(-4096).toString("latin1");
    tailText = (tailText + end).slice(-4096);
    yield chunk;
  }
  if (!tailText.includes(DUMP_COMPLETE)) {
    throw failed("CorruptBackup", `backup ${backup} does not end with pg_dump's completion line: the dump is incomplete; nothing was committed`);
  }
  yield "\nCOMMIT;\n";
}

export const pgDumpMethod: BackupMethod = {
  name: "pg_dump",
  kind: "logical",
  engine: "postgresql",
  restoreInto: "server",
  extension: "sql",

  validateOptions(options) {
    parsePgDumpOptions(options);
  },

  /** pg_dump writes into an OS pipe to the agent's zstd: no byte of the dump passes through the agent. */
  ...streamedOrPiped(startBackup),

  async restore(ctx: RestoreContext, input: Readable): Promise<void> {
    const opts = parsePgDumpOptions(ctx.options);
    const pg = await pgEnv(ctx.target);
    try {
      // DROP ... IF EXISTS on an empty target says NOTICE for every object.
      const env = { ...pg.env, PGOPTIONS: "-c client_min_messages=warning" };
      const child = spawnTool(opts.clientCommand, buildLoadArgs(), {
        stdin: "pipe",
        stdout: "ignore",
        env,
        signal: ctx.signal,
        what: "load the dump into the target",
      });
      await feedChild(child, inOneTransaction(input, ctx.manifest.name), betterLoaderError).catch((err: unknown) => {
        throw betterLoaderError(mapChildError(err, ctx.target, "load the dump into the target"));
      });
    } finally {
      await pg.cleanup();
    }
  },
};

/** A dump into a stream of this process, or (`sink`) into the OS pipe the agent gives. */
async function startBackup(ctx: BackupContext, sink: PipedSink | undefined): Promise<{ stream: Readable | undefined; outcome: Promise<BackupOutcome> }> {
  const opts = parsePgDumpOptions(ctx.options);
  const source = ctx.source;
  const database = source.database ?? "postgres";
  const facts = await serverFacts(source, "connect to the source");
  const role: BackupOutcome["role"] = facts.inRecovery ? "slave" : "master";
  const warnings: string[] = [];
  if (facts.inRecovery) {
    warnings.push("dumped from a standby: a long dump can be cancelled by recovery conflicts (hot_standby_feedback = on avoids that)");
  }
  const pg = await pgEnv(source);
  const cleanup: CleanupStack = [() => pg.cleanup()];
  return undoOnFailure(cleanup, () => {
    const args = [...buildPgDumpArgs(opts), database];
    ctx.log.info({ command: opts.dumpCommand, args, role, version: facts.version }, "dump started");
    const child = spawnTool(opts.dumpCommand, args, {
      env: pg.env,
      signal: ctx.signal,
      stdout: sink ? sink.stdout : "pipe",
      what: "dump the source",
      // pg_dump prints "detail: Query was: ..." after its error line: the error line says why.
      summarize: pgToolErrorLine,
      notFoundHint: PG_TOOLS_HINT,
    });
    const mapped = (err: unknown): unknown => mapChildError(err, source, "dump the source");
    const out = sink ? undefined : outputOf(child, mapped);
    const done = out?.done ?? child.done.catch((err: unknown) => { throw mapped(err); });
    const outcome = settleOutcome(cleanup, async (): Promise<BackupOutcome> => {
      await done;
      return {
        role,
        serverId: 0,
        version: facts.version,
        // A logical dump cannot seed a standby: there is no position to record.
        replication: undefined,
        details: { database, format: "plain", noOwner: opts.noOwner },
        warnings,
      };
    });
    return { stream: out?.stream, outcome };
  });
}
