// Runs the operator as its own process (node dist/operator/main.js), the way
// the Deployment does, under whatever kubeconfig the test gives it (a
// ServiceAccount token with the chart's RBAC, so a missing permission fails).
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./ports.js";

const repoRoot = path.resolve(import.meta.dirname, "../..");

export interface OperatorProcess {
  pid: number;
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  exited: Promise<number | string>;
  healthUrl: string;
  logFile: string;
  logs(): Promise<string>;
  /** SIGKILL: a crash, no clean-up. */
  kill(): Promise<void>;
  /** SIGTERM and wait. */
  stop(): Promise<void>;
}

export async function startOperator(opts: {
  kubeconfig: string;
  namespace?: string;
  agentImage: string;
  podNamespace: string;
  identity?: string;
  env?: Record<string, string>;
}): Promise<OperatorProcess> {
  const port = await freePort();
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-operator-"));
  const logFile = path.join(dir, "operator.log");
  const log = createWriteStream(logFile);
  const child: ChildProcess = spawn(process.execPath, [path.join(repoRoot, "dist/operator/main.js")], {
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "/root",
      KUBECONFIG: opts.kubeconfig,
      AGENT_IMAGE: opts.agentImage,
      HEALTH_ADDR: `127.0.0.1:${port}`,
      POD_NAMESPACE: opts.podNamespace,
      POD_NAME: opts.identity ?? `operator-${port}`,
      // Production defaults otherwise (resync, Job backoff limit, leader election timings):
      // a test that needs something else passes it in `env` and says why.
      LOG_LEVEL: "debug",
      // The bench has no cluster DNS: slaves replicate from the master's pod IP.
      ADDRESS_MODE: "podIP",
      ...(opts.namespace ? { WATCH_NAMESPACE: opts.namespace } : {}),
      ...opts.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const exited = new Promise<number | string>((r) => child.once("exit", (code, sig) => { r(code ?? sig ?? "unknown"); }));
  const healthUrl = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`operator exited ${child.exitCode}: ${await readFile(logFile, "utf8")}`);
    try {
      const r = await fetch(`${healthUrl}/healthz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`operator did not become healthy: ${await readFile(logFile, "utf8")}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    pid: child.pid ?? 0,
    exited,
    healthUrl,
    logFile,
    logs: () => readFile(logFile, "utf8"),
    kill: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGCONT");
        child.kill("SIGTERM");
      }
      await exited;
    },
  };
}
