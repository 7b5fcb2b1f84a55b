// The replica configuration of a restored, stopped data directory (the
// recovery.conf step of MariaDB): a temporary mariadbd on the data directory
// runs SET GLOBAL gtid_slave_pos and CHANGE MASTER TO, and shuts down
// cleanly. MariaDB keeps both in the data directory (master.info and the
// mysql.gtid_slave_pos table), so the real server replicates as soon as it
// starts.
//
// The temporary server has no networking (a socket in a private 0700
// directory), skips the grant tables (the restored accounts are the
// source's; their passwords are not ours to know), never starts the slave
// threads or the event scheduler, and keeps its relay log outside the data
// directory: the real server starts its own, named after its own host and
// configuration, from the position in master.info / mysql.gtid_slave_pos.
// The replication password travels only inside CHANGE MASTER over the socket.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import mysql from "mysql2/promise";
import { badInput, failed } from "../../lib/errors.js";
import type { ReplicationPosition } from "../../storage/catalog.js";
import { describeEndpoint, type Endpoint } from "../../db/endpoint.js";
import type { SeedContext } from "../contract.js";
import { buildSeedServerArgs, lastErrorLine, parseBackupMyCnf, type MariabackupOptions } from "./parse.js";
import { runTool, type Tool } from "./proc.js";
import { readOptional } from "./restore.js";

/** Pure: the statements that point a stopped server at `master` from `pos` (values escaped with `esc`). */
export function replicaStatements(master: Endpoint, pos: ReplicationPosition, esc: (v: string) => string): string[] {
  const common = [
    `MASTER_HOST=${esc(master.host)}`,
    `MASTER_PORT=${master.port}`,
    `MASTER_USER=${esc(master.user)}`,
    `MASTER_PASSWORD=${esc(master.password ?? "")}`,
    "MASTER_CONNECT_RETRY=5",
  ];
  if (pos.gtid) {
    return [
      "RESET SLAVE ALL",
      `SET GLOBAL gtid_slave_pos = ${esc(pos.gtid)}`,
      `CHANGE MASTER TO ${[...common, "MASTER_USE_GTID=slave_pos"].join(", ")}`,
    ];
  }
  if (pos.file && pos.position !== undefined) {
    return [
      "RESET SLAVE ALL",
      `CHANGE MASTER TO ${[...common, `MASTER_LOG_FILE=${esc(pos.file)}`, `MASTER_LOG_POS=${pos.position}`, "MASTER_USE_GTID=no"].join(", ")}`,
    ];
  }
  throw badInput("NoPosition", "the backup has no replication position (no GTID, no binlog file/position); it cannot seed a replica");
}

async function errorLogLine(file: string): Promise<string> {
  const text = (await readOptional(file).catch(() => undefined)) ?? "";
  const lines = text.split("\n").filter((l) => /\[ERROR\]/.test(l));
  return lastErrorLine(lines.length > 0 ? lines : text.split("\n").slice(-5));
}

async function waitForSocket(socket: string, server: Tool, exited: () => boolean, timeoutMs: number, signal: AbortSignal): Promise<mysql.Connection> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited()) {
      await server.done;
      throw new Error("exited");
    }
    try {
      return await mysql.createConnection({ socketPath: socket, user: "root", multipleStatements: false });
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code !== "ENOENT" && code !== "ECONNREFUSED" && code !== "PROTOCOL_CONNECTION_LOST") throw err;
    }
    if (signal.aborted) throw failed("Cancelled", "cancelled while the temporary server was starting");
    if (Date.now() > deadline) throw new Error(`not ready after ${Math.round(timeoutMs / 1000)}s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function configureRestoredReplica(ctx: SeedContext, opts: MariabackupOptions): Promise<void> {
  const tmp = await mkdtemp(path.join(tmpdir(), "replicator-seed-"));
  const errorLog = path.join(tmp, "error.log");
  const socket = path.join(tmp, "s.sock");
  try {
    const layout = parseBackupMyCnf((await readOptional(path.join(ctx.datadir, "backup-my.cnf"))) ?? "");
    const args = buildSeedServerArgs({
      datadir: ctx.datadir,
      tmp,
      layout,
      // mariadbd refuses to run as root unless told to.
      runAsUser: process.getuid?.() === 0 ? userInfo().username : undefined,
      extra: opts.mariadbdArgs,
    });
    ctx.log.info({ command: opts.mariadbdCommand, datadir: ctx.datadir }, "starting a temporary server to configure replication");
    const server = runTool(opts.mariadbdCommand, args, { what: "run the temporary server", stdout: "ignore", signal: ctx.signal });
    let exited = false;
    void server.done.then(() => { exited = true; }, () => { exited = true; });
    const startFailed = async (err: unknown): Promise<never> => {
      server.kill();
      await server.done.catch(() => undefined);
      if (ctx.signal.aborted) throw failed("Cancelled", "cancelled while the temporary server was starting");
      const line = await errorLogLine(errorLog);
      throw failed(
        "SeedFailed",
        `the temporary server on ${ctx.datadir} (to write the replica configuration) did not start: ${line || (err instanceof Error ? err.message : String(err))}`,
        { cause: err },
      );
    };
    const c = await waitForSocket(socket, server, () => exited, opts.startTimeoutSeconds * 1000, ctx.signal).catch(startFailed);
    try {
      for (const sql of replicaStatements(ctx.replicateFrom, ctx.position, (v) => c.escape(v))) await c.query(sql);
    } catch (err) {
      server.kill();
      await server.done.catch(() => undefined);
      c.destroy();
      // No `cause`: the driver's error carries the statement, password included.
      const x = err as { sqlMessage?: string; message?: string; code?: string };
      throw failed("SeedFailed", `configuring replication from ${describeEndpoint(ctx.replicateFrom)} failed: ${x.sqlMessage ?? x.message ?? "unknown error"}`, {
        detail: x.code,
      });
    }
    await c.query("SHUTDOWN").catch((err: unknown) => {
      // The server may close the connection before the reply arrives.
      if ((err as { code?: string }).code !== "PROTOCOL_CONNECTION_LOST") server.kill();
    });
    c.destroy();
    // A clean shutdown: InnoDB is flushed and the server exits 0.
    const timer = setTimeout(() => { server.kill(); }, 120_000);
    try {
      await server.done;
    } catch (err) {
      throw failed("SeedFailed", `the temporary server did not shut down cleanly: ${(await errorLogLine(errorLog)) || (err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    ctx.log.info({ master: describeEndpoint(ctx.replicateFrom), gtid: ctx.position.gtid, file: ctx.position.file, position: ctx.position.position }, "replica configuration written");
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
