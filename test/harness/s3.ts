// A real S3 server for tests: versitygw serving a temp directory on a
// loopback port. Installed by `make tools` into .tools/bin. A test can freeze
// it (SIGSTOP: connections hang), thaw it, kill it and restart it on the same
// port and root.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "./ports.js";

export interface S3Server {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The directory versitygw serves: <root>/<bucket>/<key>. */
  root: string;
  /** Env for a child process (the CLI) that talks to this server. */
  env: Record<string, string>;
  createBucket(name: string): Promise<void>;
  /** SIGSTOP the server: it accepts nothing and answers nothing until thaw(). */
  freeze(): void;
  /** SIGCONT a frozen server. */
  thaw(): void;
  /** SIGKILL the server (connections refused until restart()). */
  kill(): Promise<void>;
  /** Start it again on the same port and root. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

const repoRoot = path.resolve(import.meta.dirname, "../..");

export function versitygwPath(): string {
  const p = path.join(repoRoot, ".tools/bin/versitygw");
  if (!existsSync(p)) throw new Error(`versitygw not found at ${p}; run \`make tools\``);
  return p;
}

interface Running {
  child: ChildProcess;
  exited: Promise<void>;
}

/** With tls, versitygw serves https with that certificate and key (files). */
interface GwTls { certFile: string; keyFile: string }

async function spawnGw(host: string, port: number, root: string, accessKeyId: string, secretAccessKey: string, tls?: GwTls): Promise<Running> {
  const tlsArgs = tls ? ["--cert", tls.certFile, "--key", tls.keyFile] : [];
  const child = spawn(versitygwPath(), ["--port", `${host}:${port}`, ...tlsArgs, "--quiet", "posix", root], {
    stdio: ["ignore", "ignore", "pipe"],
    // Credentials via env, not argv (they would show in `ps`).
    env: { ...process.env, ROOT_ACCESS_KEY_ID: accessKeyId, ROOT_SECRET_ACCESS_KEY: secretAccessKey },
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once("exit", () => { resolve(); }));
  const deadline = Date.now() + 20_000;
  while (!(await canConnect(host, port))) {
    if (child.exitCode !== null) throw new Error(`versitygw exited: ${stderr}`);
    if (Date.now() > deadline) throw new Error(`versitygw did not listen on ${port}: ${stderr}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, exited };
}

/**
 * versitygw on a free port of `host` (default 127.0.0.1; on a real node, an
 * address its pods reach, e.g. the node's); https with `tls`.
 */
export async function startS3(opts: { host?: string; tls?: GwTls } = {}): Promise<S3Server> {
  const host = opts.host ?? "127.0.0.1";
  const root = await mkdtemp(path.join(tmpdir(), "replicator-s3-"));
  const port = await freePort();
  const accessKeyId = "testaccess";
  const secretAccessKey = "testsecret-not-a-real-one";
  let gw: Running | undefined = await spawnGw(host, port, root, accessKeyId, secretAccessKey, opts.tls);
  let frozen = false;
  const endpoint = `${opts.tls ? "https" : "http"}://${host}:${port}`;
  const kill = async (): Promise<void> => {
    if (!gw) return;
    const { child, exited } = gw;
    gw = undefined;
    child.kill("SIGKILL");
    frozen = false;
    await exited;
  };
  return {
    endpoint,
    accessKeyId,
    secretAccessKey,
    root,
    env: {
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: secretAccessKey,
      AWS_REGION: "us-east-1",
      AWS_ENDPOINT_URL_S3: endpoint,
    },
    // versitygw's posix backend: a bucket is a top-level directory.
    createBucket: async (name) => {
      await mkdir(path.join(root, name), { recursive: true });
    },
    freeze: () => {
      if (gw && !frozen) {
        gw.child.kill("SIGSTOP");
        frozen = true;
      }
    },
    thaw: () => {
      if (gw && frozen) {
        gw.child.kill("SIGCONT");
        frozen = false;
      }
    },
    kill,
    restart: async () => {
      await kill();
      gw = await spawnGw(host, port, root, accessKeyId, secretAccessKey, opts.tls);
    },
    stop: async () => {
      if (gw) {
        const { child, exited } = gw;
        gw = undefined;
        if (frozen) child.kill("SIGCONT");
        child.kill("SIGTERM");
        await exited;
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, host);
    s.once("connect", () => { s.end(); resolve(true); });
    s.once("error", () => { resolve(false); });
  });
}
