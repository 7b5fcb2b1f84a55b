// A temporary mariadbd on a restored, stopped data directory: the replica
// configuration (seed.ts) and the replay of archived binlogs (a
// point-in-time restore into --datadir, a seed bridge) run through it.
//
// The server has no networking (its socket sits in a private 0700
// directory), skips the grant tables (the restored accounts are the
// source's; their passwords are not ours to know), never starts the slave
// threads or the event scheduler, writes no binlog (no --log-bin), and keeps
// its relay log outside the data directory. `fn` gets a control connection
// opened first (it keeps every privilege even after a FLUSH PRIVILEGES turns
// the grant tables on) and a socket endpoint for clients such as `mariadb`.
// When `fn` succeeds the server is shut down cleanly (InnoDB flushed, exit
// 0); when it fails the server is killed, and the caller says what the data
// directory now holds.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import mysql from "mysql2/promise";
import { failed, isReplicatorError } from "../../lib/errors.js";
import type { Logger } from "../../lib/log.js";
import type { Endpoint } from "../../db/endpoint.js";
import type { TemporaryServer } from "../contract.js";
import { buildSeedServerArgs, lastErrorLine, parseBackupMyCnf, type MariabackupOptions } from "./parse.js";
import { runTool, type Tool } from "./proc.js";
import { readOptional } from "./restore.js";

export interface TemporaryServerRequest {
  datadir: string;
  opts: MariabackupOptions;
  /** What the server is for, in messages: "to write the replica configuration", "to replay the archived binlogs". */
  purpose: string;
  log: Logger;
  signal: AbortSignal;
}

async function errorLogLine(file: string): Promise<string> {
  const text = (await readOptional(file).catch(() => undefined)) ?? "";
  // mariadbd ends a failed start with "[ERROR] Aborting": the line before says why.
  const lines = text.split("\n").filter((l) => /\[ERROR\]/.test(l) && !/\[ERROR\] Aborting\s*$/.test(l));
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

/** `mariadbd --version`: a missing mariadbd is one line (CommandNotFound) before anything is written. */
export async function checkTemporaryServer(opts: MariabackupOptions, signal: AbortSignal): Promise<void> {
  await runTool(opts.mariadbdCommand, ["--version"], { what: "run a temporary server on the restored data directory", stdout: "ignore", signal }).done;
}

export async function withTemporaryServer<T>(req: TemporaryServerRequest, fn: (server: TemporaryServer) => Promise<T>): Promise<T> {
  const { datadir, opts, log, signal } = req;
  const tmp = await mkdtemp(path.join(tmpdir(), "replicator-seed-"));
  const errorLog = path.join(tmp, "error.log");
  const socket = path.join(tmp, "s.sock");
  try {
    const layout = parseBackupMyCnf((await readOptional(path.join(datadir, "backup-my.cnf"))) ?? "");
    const args = buildSeedServerArgs({
      datadir,
      tmp,
      layout,
      // mariadbd refuses to run as root unless told to.
      runAsUser: process.getuid?.() === 0 ? userInfo().username : undefined,
      extra: opts.mariadbdArgs,
    });
    log.info({ command: opts.mariadbdCommand, datadir }, `starting a temporary server ${req.purpose}`);
    const server = runTool(opts.mariadbdCommand, args, { what: `run a temporary server on ${datadir}`, stdout: "ignore", signal });
    let exited = false;
    void server.done.then(() => { exited = true; }, () => { exited = true; });
    const startFailed = async (err: unknown): Promise<never> => {
      server.kill();
      await server.done.catch(() => undefined);
      if (signal.aborted) throw failed("Cancelled", "cancelled while the temporary server was starting");
      // mariadbd missing: its own one line (CommandNotFound) says what to install.
      if (isReplicatorError(err) && err.reason === "CommandNotFound") throw err;
      const line = await errorLogLine(errorLog);
      throw failed("SeedFailed", `the temporary server on ${datadir} (${req.purpose}) did not start: ${line || (err instanceof Error ? err.message : String(err))}`, { cause: err });
    };
    const c = await waitForSocket(socket, server, () => exited, opts.startTimeoutSeconds * 1000, signal).catch(startFailed);
    const endpoint: Endpoint = { engine: "mysql", host: "localhost", port: 0, user: "root", password: undefined, socket };
    let out: T;
    try {
      out = await fn({
        endpoint,
        query: async (sql, values) => {
          await c.query(sql, values);
        },
        escape: (v) => c.escape(v),
      });
    } catch (err) {
      server.kill();
      await server.done.catch(() => undefined);
      c.destroy();
      throw err;
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
      throw failed("SeedFailed", `the temporary server on ${datadir} (${req.purpose}) did not shut down cleanly: ${(await errorLogLine(errorLog)) || (err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    return out;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}
