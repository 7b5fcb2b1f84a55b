// Running a plugin process: an executable on this machine, or (for the
// conformance kit) a container image run through docker/podman with the same
// contract. Each run gets its own process group, so an abort reaches the
// plugin's children too (SIGTERM, then SIGKILL after a grace period). The
// process itself is lib/exec's spawnTool, with the plugin's wider
// environment (everything but the agent's secrets: protocol.ts inheritedEnv).
import { accessSync, constants, existsSync, statSync } from "node:fs";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import { badInput } from "../../lib/errors.js";
import { spawnTool } from "../../lib/exec.js";
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
  /** Pure: the command line of one run. */
  commandLine(sub: Subcommand, req: SpawnRequest): { file: string; args: string[] };
}

/** A plugin executable: an absolute or relative path, or a name on PATH. Gets `SUBCOMMAND` as its only argument. */
export function commandRunner(command: string): PluginRunner {
  const file = command.includes("/") ? path.resolve(command) : command;
  return {
    describe: command,
    mode: "command",
    commandLine(sub) {
      return { file, args: [sub] };
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
    commandLine(sub, req) {
      const args = ["run", "--rm", "--network", "host", "--entrypoint", IMAGE_PLUGIN_PATH];
      if (req.stdin === "pipe") args.push("-i");
      if (typeof process.getuid === "function" && typeof process.getgid === "function") args.push("--user", `${process.getuid()}:${process.getgid()}`);
      for (const m of [...new Set(req.mounts)]) args.push("-v", `${m}:${m}`);
      for (const k of Object.keys(req.env).sort()) args.push("-e", k);
      args.push(image, sub);
      return { file: engine, args };
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
  stdout: Readable | null;
  stdin: Writable | null;
  exit: Promise<Exit>;
  /** SIGTERM to the process group, SIGKILL after `graceMs`. */
  kill(graceMs?: number): void;
}

/**
 * Start one plugin run. Each non-blank stderr line goes to `onLine` (the
 * agent logs it); the tail is kept for the failure message. `signal` kills the run.
 */
export function startPlugin(
  runner: PluginRunner,
  sub: Subcommand,
  req: SpawnRequest,
  opts: { signal?: AbortSignal | undefined; onLine?: (line: string) => void; timeoutMs?: number | undefined },
): PluginProcess {
  const { file, args } = runner.commandLine(sub, req);
  const onLine = opts.onLine;
  const child = spawnTool(file, args, {
    what: `run plugin ${runner.describe} ${sub}`,
    stdin: req.stdin,
    stdout: req.stdout,
    baseEnv: inheritedEnv(process.env),
    env: req.env,
    group: true,
    tailBytes: 64 * 1024,
    signal: opts.signal,
    timeoutMs: opts.timeoutMs,
    ...(onLine ? { onLine: (l: string) => { if (l.trim()) onLine(l.length > 2000 ? `${l.slice(0, 2000)}…` : l); } } : {}),
  });
  const exit = child.exit.then((x): Exit => ({ code: x.exitCode, signal: x.signal, stderr: x.stderr, ...(x.spawnError ? { spawnError: x.spawnError } : {}) }));
  return { stdout: child.stdout, stdin: child.stdin, exit, kill: (graceMs) => { child.kill(graceMs); } };
}
