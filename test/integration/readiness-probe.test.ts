// The readiness probe of deploy/examples/mariadb-provisioned.yaml, run for
// real after a physical restore: mariabackup does not carry the official
// image's $DATADIR/.my-healthcheck.cnf, so a probe that logs in with it
// (--innodb_initialized) can never pass on a slave provisioned from a
// physical backup. The example's probe must pass there, and must fail while
// nothing listens. healthcheck.sh is hack/node's stand-in for the official
// image's (the same tests and rules), run as the example's exec probe runs it.
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { execa } from "execa";
import { parseAllDocuments } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../harness/cli.js";
import { startMariaDb, type MariaDb } from "../harness/mariadb.js";
import { freePort } from "../harness/ports.js";

const root = path.resolve(import.meta.dirname, "../..");
const servers: MariaDb[] = [];
let work: string;

/** The mariadb container's readiness probe command in the provisioned example. */
async function exampleProbe(): Promise<string[]> {
  for (const d of parseAllDocuments(await readFile(path.join(root, "deploy/examples/mariadb-provisioned.yaml"), "utf8"))) {
    const o = d.toJSON() as { kind?: string; spec?: { template: { spec: { containers: { name: string; readinessProbe?: { exec?: { command: string[] } } }[] } } } } | null;
    const cmd = o?.kind === "StatefulSet" ? o.spec?.template.spec.containers.find((c) => c.name === "mariadb")?.readinessProbe?.exec?.command : undefined;
    if (cmd) return cmd;
  }
  throw new Error("mariadb-provisioned.yaml has no readiness probe on its mariadb container");
}

/** Run the probe as the kubelet would, against a server's data directory and TCP port. */
async function probe(cmd: string[], datadir: string, port: number): Promise<number> {
  const [bin, ...args] = cmd;
  const r = await execa(bin ?? "", [`--datadir=${datadir}`, ...args], {
    reject: false,
    env: { PATH: `${path.join(root, "hack/node/images/mariadb")}:${process.env.PATH ?? ""}`, MYSQL_TCP_PORT: String(port) },
  });
  return r.exitCode ?? -1;
}

beforeAll(async () => {
  work = await mkdtemp(path.join(tmpdir(), "replicator-probe-it-"));
  await mkdir(path.join(work, "repo"));
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.destroy()));
  if (work) await rm(work, { recursive: true, force: true });
});

describe("the provisioned example's readiness probe", () => {
  it("passes on a server started from a physical restore, which has no .my-healthcheck.cnf; fails while nothing listens", async () => {
    const cmd = await exampleProbe();
    expect(cmd).not.toContain("--innodb_initialized");
    const master = await startMariaDb({ binlog: true, serverId: 1 });
    servers.push(master);
    // What the official image's entrypoint leaves in a data directory it initialised.
    await writeFile(path.join(master.datadir, ".my-healthcheck.cnf"), "[mariadb-client]\nuser=healthcheck\npassword=x\n", { mode: 0o600 });
    await master.query("CREATE DATABASE app");
    await master.query("CREATE TABLE app.t (id INT PRIMARY KEY) ENGINE=InnoDB");
    await master.query("INSERT INTO app.t VALUES (1), (2)");
    const repo = `file://${work}/repo`;
    const b = await runCli(["backup", "--method", "mariabackup", "--source", master.url, "--repository", repo, "--cluster", "m", "--json"]);
    expect(b.exitCode, b.stderr).toBe(0);
    const dir = path.join(await mkdtemp(path.join(work, "restored-")), "data");
    const r = await runCli(["restore", "--datadir", dir, "--repository", repo, "--cluster", "m", "--json"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readdir(dir)).not.toContain(".my-healthcheck.cnf");

    const free = await freePort();
    expect(await probe(cmd, dir, free)).toBe(1);
    const restored = await startMariaDb({ datadir: dir, serverId: 10 });
    servers.push(restored);
    expect(await probe(cmd, dir, restored.port)).toBe(0);
  });
});
