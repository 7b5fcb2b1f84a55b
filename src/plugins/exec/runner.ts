// Running a plugin process: an executable on this machine, or (for the
// conformance kit) a container image run through docker/podman with the same
// contract. Each run gets its own process group, so an abort reaches the
// plugin's children too (SIGTERM, then SIGKILL after a grace period).
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync, statSync } from "node:fs";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { badInput } from "../../lib/errors.js";
import { inheritedEnv, type Subcommand } from "./protocol.js";

export interface SpawnRequest {
  env: Record<string, string>;
  /** Paths the plugin must see (its run directory, a data directory): bind-mounted in container mode. */
  mounts: string[];
  stdin: "pipe" | "ignore";
  stdout: "pipe" | "ignore";
}

export interface PluginRunner {
  /** The command or image, as messages show it. */
  readonly describe: string;
  readonly mode: "command" | "image";
  spawn(sub: Subcommand, req: SpawnRequest): ChildProcess;
}

/** A plugin executable: an absolute or relative path, or a name on PATH. Gets `SUBCOMMAND` as its only argument. */
export function commandRunner(command: string): PluginRunner {
  const file = command.includes("/") ? path.resolve(command) : command;
  return {
    describe: command,
    mode: "command",
    spawn(sub, req) {
      return spawn(file, [sub], {
        env: { ...inheritedEnv(process.env), ...req.env },
        stdio: [req.stdin, req.stdout, "pipe"],
        detached: true,
      });
    },
  };
}

/** The path inside a v1 plugin image where the executable lives. */
export const IMAGE_PLUGIN_PATH = "/replicator/plugin";

/**
 * A plugin image run as `ENGINE run --rm -i --network host --entrypoint /replicator/plugin IMAGE SUBCOMMAND`.
 * Variables are passed by name (`-e NAME`), so their values stay off the
 * command line; the run directory and data directory are bind-mounted at the
 * same paths. Untested here: this machine has no container engine.
 */
export function imageRunner(image: string, engine: string): PluginRunner {
  return {
    describe: image,
    mode: "image",
    spawn(sub, req) {
      const args = ["run", "--rm", "--network", "host", "--entrypoint", IMAGE_PLUGIN_PATH];
      if (req.stdin === "pipe") args.push("-i");
      if (typeof process.getuid === "function" && typeof process.getgid === "function") args.push("--user", `${process.getuid()}:${process.getgid()}`);
      for (const m of [...new Set(req.mounts)]) args.push("-v", `${m}:${m}`);
      for (const k of Object.keys(req.env).sort()) args.push("-e", k);
      args.push(image, sub);
      return spawn(engine, args, {
        env: { ...inheritedEnv(process.env), ...req.env },
        stdio: [req.stdin, req.stdout, "pipe"],
        detached: true,
      });
    },
  };
}

/** Anything with ':' or '/' that is not an existing path is an image reference. */
export function looksLikeImage(spec: string): boolean {
  return (spec.includes(":") || spec.includes("/")) && !existsSync(spec);
}

/** The first of docker/podman on PATH, or undefined. */
export function findContainerEngine(envPath = process.env.PATH ?? ""): string | undefined {
  for (const name of ["docker", "podman"]) {
    for (const dir of envPath.split(":").filter(Boolean)) {
      const p = path.join(dir, name);
      try {
        if (statSync(p).isFile()) {
          accessSync(p, constants.X_OK);
          return p;
        }
      } catch {
        // not here
      }
    }
  }
  return undefined;
}

/** A runner for `--plugin`/REPLICATOR_PLUGIN or the kit's COMMAND-or-IMAGE argument. */
export function runnerFor(spec: string, opts: { allowImage: boolean }): PluginRunner {
  if (spec.trim() === "") throw badInput("InvalidPlugin", "the plugin command is empty");
  if (looksLikeImage(spec)) {
    if (!opts.allowImage) {
      throw badInput("PluginNotFound", `plugin ${spec} does not exist; --plugin takes the path of an executable (inside an image: ${IMAGE_PLUGIN_PATH})`);
    }
    const engine = findContainerEngine();
    if (!engine) {
      throw badInput("NoContainerEngine", `${spec} looks like an image, and running an image needs docker or podman, but neither is on PATH; install one, or pass the plugin's executable instead`);
    }
    return imageRunner(spec, engine);
  }
  return commandRunner(spec);
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The tail of stderr (at most 64 KiB). */
  stderr: string;
  /** Set when the process could not be started. */
  spawnError?: NodeJS.ErrnoException;
}

export interface PluginProcess {
  child: ChildProcess;
  stdout: Readable | null;
  stdin: Writable | null;
  exit: Promise<Exit>;
  /** SIGTERM to the process group, SIGKILL after `graceMs`. */
  kill(graceMs?: number): void;
}

/**
 * Start one plugin run. Each stderr line goes to `onLine` (the agent logs it);
 * the tail is kept for the failure message. `signal` kills the run.
 */
export function startPlugin(
  runner: PluginRunner,
  sub: Subcommand,
  req: SpawnRequest,
  opts: { signal?: AbortSignal | undefined; onLine?: (line: string) => void; timeoutMs?: number },
): PluginProcess {
  const child = runner.spawn(sub, req);
  let stderr = "";
  let partial = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (chunk: string) => {
    stderr += chunk;
    if (stderr.length > 128 * 1024) stderr = stderr.slice(-64 * 1024);
    if (opts.onLine) {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) if (l.trim()) opts.onLine(l.length > 2000 ? `${l.slice(0, 2000)}…` : l);
    }
  });
  let killTimer: NodeJS.Timeout | undefined;
  let exited = false;
  const kill = (graceMs = 5000): void => {
    if (exited || child.pid === undefined) return;
    const pid = child.pid;
    const send = (sig: NodeJS.Signals): void => {
      try {
        process.kill(-pid, sig);
      } catch {
        try {
          child.kill(sig);
        } catch {
          // already gone
        }
      }
    };
    send("SIGTERM");
    killTimer ??= setTimeout(() => { if (!exited) send("SIGKILL"); }, graceMs);
    killTimer.unref();
  };
  const onAbort = (): void => { kill(); };
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) kill();
  const timeout = opts.timeoutMs ? setTimeout(() => { kill(1000); }, opts.timeoutMs) : undefined;
  const exit = new Promise<Exit>((resolve) => {
    let spawnError: NodeJS.ErrnoException | undefined;
    child.once("error", (err: NodeJS.ErrnoException) => {
      spawnError = err;
      if (child.pid === undefined) {
        exited = true;
        resolve({ code: null, signal: null, stderr, spawnError: err });
      }
    });
    child.once("close", (code, signal) => {
      exited = true;
      if (killTimer) clearTimeout(killTimer);
      if (timeout) clearTimeout(timeout);
      opts.signal?.removeEventListener("abort", onAbort);
      if (partial.trim() && opts.onLine) opts.onLine(partial);
      resolve({ code, signal, stderr, ...(spawnError ? { spawnError } : {}) });
    });
  });
  return { child, stdout: child.stdout, stdin: child.stdin, exit, kill };
}
