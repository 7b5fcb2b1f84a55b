// Child processes (mariadb-dump, mariadb) get their credentials from a 0600
// defaults-extra-file in a private temp dir, never from argv.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Endpoint } from "./endpoint.js";

export interface DefaultsFile {
  path: string;
  /** Connection args without secrets, to pass after --defaults-extra-file. */
  args: string[];
  cleanup(): Promise<void>;
}

function escapeValue(v: string): string {
  return `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

export async function writeDefaultsFile(e: Endpoint): Promise<DefaultsFile> {
  const dir = await mkdtemp(path.join(tmpdir(), "replicator-cred-"));
  const file = path.join(dir, "client.cnf");
  const lines = ["[client]", `user=${escapeValue(e.user)}`];
  if (e.password !== undefined && e.password !== "") lines.push(`password=${escapeValue(e.password)}`);
  await writeFile(file, `${lines.join("\n")}\n`, { mode: 0o600 });
  const args = e.socket ? [`--socket=${e.socket}`] : [`--host=${e.host}`, `--port=${e.port}`, "--protocol=TCP"];
  return {
    path: file,
    args,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
