import { badInput } from "../lib/errors.js";
import type { BackupMethod } from "./contract.js";
import { mariabackupMethod } from "./mariabackup/index.js";
import { mysqldumpMethod } from "./mysqldump/index.js";
import { mysqldumpParallelMethod } from "./mysqldump_parallel/index.js";
import { pgBasebackupMethod } from "./pg_basebackup/index.js";
import { pgDumpMethod } from "./pg_dump/index.js";

const builtins: Record<string, BackupMethod> = {
  mysqldump: mysqldumpMethod,
  "mysqldump_parallel": mysqldumpParallelMethod,
  mariabackup: mariabackupMethod,
  pg_dump: pgDumpMethod,
  pg_basebackup: pgBasebackupMethod,
};

export function builtinMethods(): string[] {
  return Object.keys(builtins);
}

export function getMethod(name: string): BackupMethod {
  const m = builtins[name];
  if (!m) {
    throw badInput("UnknownMethod", `unknown backup method "${name}"; built-in methods: ${builtinMethods().join(", ")}`);
  }
  return m;
}
