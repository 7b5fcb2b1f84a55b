// A method whose tool can write either into a stream of the agent (backup) or
// straight into the agent's zstd through an OS pipe (backupPiped) starts it
// one way, `start(ctx, sink)`; this gives both entry points of BackupMethod.
import type { Readable } from "node:stream";
import type { BackupContext, BackupOutcome, BackupRun, PipedBackupRun, PipedSink } from "./contract.js";

export type StartBackup = (ctx: BackupContext, sink: PipedSink | undefined) => Promise<{ stream: Readable | undefined; outcome: Promise<BackupOutcome> }>;

export function streamedOrPiped(start: StartBackup): {
  backup(ctx: BackupContext): Promise<BackupRun>;
  backupPiped(ctx: BackupContext, sink: PipedSink): Promise<PipedBackupRun>;
} {
  return {
    async backup(ctx) {
      const run = await start(ctx, undefined);
      if (!run.stream) throw new Error("unreachable: a backup without a sink has a stream");
      return { stream: run.stream, outcome: run.outcome };
    },
    async backupPiped(ctx, sink) {
      const run = await start(ctx, sink);
      return { outcome: run.outcome };
    },
  };
}
