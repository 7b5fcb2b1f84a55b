// `make demo`: the main job on local defaults, with nothing but this
// machine. It starts a MariaDB master with some data and a local S3 server
// (versitygw), then runs the real CLI:
//   backup → list → more writes → restore into a new server as a slave →
//   the slave replicates the writes made after the backup.
// Everything runs on 127.0.0.1 and is removed at the end.
import { execa } from "execa";
import path from "node:path";
import { count, seedShop } from "../test/harness/fixtures.js";
import { startMariaDb, startReplication, waitCaughtUp, type MariaDb } from "../test/harness/mariadb.js";
import { startS3, type S3Server } from "../test/harness/s3.js";

const cli = path.resolve(import.meta.dirname, "../dist/cli/main.js");
const bold = (s: string): string => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);

async function step(title: string, args: string[], env: Record<string, string>): Promise<void> {
  console.log(`\n${bold(`# ${title}`)}\n$ replicator ${args.join(" ")}`);
  const r = await execa(process.execPath, [cli, ...args], { env, reject: false, stdio: ["ignore", "inherit", "inherit"] });
  if (r.exitCode !== 0) throw new Error(`replicator ${args[0] ?? ""} exited ${String(r.exitCode)}`);
}

async function main(): Promise<void> {
  const started: { stop: () => Promise<void> }[] = [];
  try {
    console.log(bold("Starting a MariaDB master (binlog on) and a local S3 server on 127.0.0.1 ..."));
    const [master, s3]: [MariaDb, S3Server] = await Promise.all([startMariaDb({ binlog: true, serverId: 1 }), startS3()]);
    started.push({ stop: () => master.destroy() }, s3);
    await s3.createBucket("demo-backups");
    await seedShop(master, { rows: 5000 });
    // A slave that the demo backs up as well; the replication user is "repl".
    const replica = await startMariaDb({ binlog: true, serverId: 2, args: ["--log-slave-updates"] });
    started.push({ stop: () => replica.destroy() });
    await startReplication(master, replica);
    console.log(`master  ${master.url}   (shop.customers: ${await count(master, "shop.customers")} rows)`);
    console.log(`slave   ${replica.url}`);
    console.log(`S3      ${s3.endpoint}  bucket demo-backups`);

    const env = { ...s3.env, REPLICATOR_REPLICATION_PASSWORD: "replpass" };
    const repo = ["--repository", "s3://demo-backups/replicator", "--cluster", "demo"];

    await step("Back up the master (consistent dump + its binlog/GTID position), keep 3", ["backup", "--source", master.url, ...repo, "--retain", "3"], env);
    await waitCaughtUp(master, replica);
    await step("Back up the slave (taken offline for the consistent point, then back online)", ["backup", "--source", replica.url, ...repo], env);
    await step("List the backups, oldest first", ["list", ...repo], env);
    await step("Verify every stored object against its manifest", ["verify", ...repo], env);

    await master.query("INSERT INTO shop.customers (id, name) VALUES (100001, 'written after the backups')");
    console.log(`\n${bold("# The master takes a write after the backups")}\nINSERT INTO shop.customers ... (now ${await count(master, "shop.customers")} rows)`);

    const fresh = await startMariaDb({ binlog: true, serverId: 3 });
    started.push({ stop: () => fresh.destroy() });
    await step(
      "Provision a new slave: restore the latest backup, replicate from its position",
      ["restore", "--target", fresh.url, ...repo, "--replicate-from", `mysql://repl@127.0.0.1:${master.port}`],
      env,
    );
    await waitCaughtUp(master, fresh);
    const rows = await count(fresh, "shop.customers");
    const [st] = await fresh.query<{ Slave_IO_Running: string; Slave_SQL_Running: string }>("SHOW SLAVE STATUS");
    console.log(`\n${bold("# The new slave")}\nshop.customers: ${rows} rows; Slave_IO_Running=${st?.Slave_IO_Running ?? "?"} Slave_SQL_Running=${st?.Slave_SQL_Running ?? "?"}`);
    if (rows !== (await count(master, "shop.customers"))) throw new Error("the new slave does not have the master's rows");
    console.log(bold("\nDemo complete: backup, list, verify, restore and a replicating slave, all on 127.0.0.1."));
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
  }
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
