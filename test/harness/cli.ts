// Runs the built CLI (dist/cli/main.js) as a user would.
import { execa } from "execa";
import path from "node:path";

const repoRoot = path.resolve(import.meta.dirname, "../..");
export const CLI = path.join(repoRoot, "dist/cli/main.js");

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | undefined;
}

export async function runCli(args: string[], env: Record<string, string | undefined> = {}, opts: { cwd?: string } = {}): Promise<CliResult> {
  const r = await execa(process.execPath, [CLI, ...args], {
    reject: false,
    env: { REPLICATOR_CONFIG: undefined, REPLICATOR_DB_PASSWORD: undefined, ...env },
    extendEnv: true,
    cwd: opts.cwd ?? repoRoot,
    timeout: 170_000,
  });
  let json: Record<string, unknown> | undefined;
  const lastLine = r.stdout.trim().split("\n").pop() ?? "";
  if (lastLine.startsWith("{")) {
    try {
      json = JSON.parse(lastLine) as Record<string, unknown>;
    } catch {
      json = undefined;
    }
  }
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}
