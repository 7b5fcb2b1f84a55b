// Replaying archived binlogs into a running server, shared by the
// point-in-time restore (restore-until.ts) and the seed bridge (bridge.ts):
// `mariadb-binlog [--start-position] [--stop-position] FILES | mariadb`,
// through one OS pipe. The files are local copies already checked against
// their indexes (archive.ts downloadBinlog).
//
// mariadb-binlog writes each transaction with its own GTID (SET
// gtid_domain_id, server_id, gtid_seq_no), so the replayed transactions keep
// the master's GTIDs: the target never mints GTIDs of its own for them.
import { failed } from "../lib/errors.js";
import { spawnTool } from "../lib/exec.js";
import { writeDefaultsFile } from "../db/defaults-file.js";
import { describeEndpoint, type Endpoint } from "../db/endpoint.js";
import { BINLOG_TOOL } from "./archiver.js";

export interface ReplayRequest {
  target: Endpoint;
  /** Local binlog files, in order. */
  files: string[];
  /** Offset in the first file of the first event replayed (undefined: from its start). */
  start: number | undefined;
  /** Offset in the last file before which the replay ends (undefined: to its end). */
  stop: number | undefined;
  /**
   * Keep the replay out of the target's own binlog (SET SESSION
   * sql_log_bin=0, as the ordinary load does): a seeded slave's binlog then
   * holds neither the backup nor the bridge, only what it replicates.
   */
  skipTargetBinlog?: boolean;
  /**
   * A temporary server running with --skip-grant-tables refuses account
   * statements (CREATE USER, GRANT: "running with the --skip-grant-tables
   * option"): the replay's session first loads the grant tables (FLUSH
   * PRIVILEGES). Sessions opened before, the replay's own included, keep
   * every privilege.
   */
  flushPrivileges?: boolean;
  clientCommand?: string | undefined;
  signal: AbortSignal;
  /** The one line of a failed replay, given the client's error (says what the target now holds). */
  failure: (cause: Error) => string;
}

export async function replayBinlogs(req: ReplayRequest): Promise<void> {
  await replaySegments({ ...req, segments: [{ files: req.files, start: req.start, stop: req.stop }] });
}

/** A stretch of binlogs: local files in order, from `start` in the first up to `stop` in the last. */
export interface ReplaySegment {
  files: string[];
  start: number | undefined;
  stop: number | undefined;
}

/**
 * Several stretches (after a switchover, one per server's chain) replayed
 * one after the other through ONE client session, `(mariadb-binlog A;
 * mariadb-binlog B) | mariadb`: on a temporary server whose grant tables
 * the first session loaded (flushPrivileges), a second connection could
 * not log in.
 */
export async function replaySegments(req: Omit<ReplayRequest, "files" | "start" | "stop"> & { segments: ReplaySegment[] }): Promise<void> {
  const init = [...(req.skipTargetBinlog ? ["SET SESSION sql_log_bin=0"] : []), ...(req.flushPrivileges ? ["FLUSH PRIVILEGES"] : [])];
  const creds = await writeDefaultsFile(req.target);
  try {
    const client = spawnTool(
      req.clientCommand ?? "mariadb",
      [
        `--defaults-extra-file=${creds.path}`,
        ...creds.args,
        "--binary-mode",
        "--max-allowed-packet=1G",
        ...(init.length > 0 ? [`--init-command=${init.join("; ")}`] : []),
      ],
      { stdin: "pipe", stdout: "ignore", signal: req.signal, what: `replay the archived binlogs into ${req.target.socket ? `the server on socket ${req.target.socket}` : describeEndpoint(req.target)}` },
    );
    const stdin = client.stdin;
    if (!stdin) throw failed("CommandFailed", "mariadb started without a stdin");
    // Each decoder writes straight into the client's stdin pipe, the next one
    // after the previous has exited; this process's copy of the pipe is
    // closed once the last has started, so the client sees the end with it.
    const producers = (async (): Promise<void> => {
      try {
        for (const [i, seg] of req.segments.entries()) {
          const args = [...(seg.start !== undefined ? [`--start-position=${seg.start}`] : []), ...(seg.stop !== undefined ? [`--stop-position=${seg.stop}`] : []), ...seg.files];
          const producer = spawnTool(BINLOG_TOOL, args, { stdout: stdin, signal: req.signal, what: "decode the archived binlogs" });
          if (i === req.segments.length - 1) stdin.destroy();
          await producer.done;
        }
      } finally {
        stdin.destroy();
      }
    })();
    const [p, c] = await Promise.allSettled([producers, client.done]);
    if (p.status === "rejected") throw p.reason;
    if (c.status === "rejected") throw failed("ReplayFailed", req.failure(c.reason as Error), { cause: c.reason });
  } finally {
    await creds.cleanup();
  }
}
