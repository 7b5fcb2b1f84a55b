// Cluster mode: `kubectl replicator backup|restore|list`. Creates or reads
// the custom resources, follows them to the end with progress, and exits
// non-zero on failure. Talks only to the Kubernetes API.
import { parseArgs } from "node:util";
import { API_VERSION, GROUP, VERSION, type BackupStatus, type ReplicatorBackup, type ReplicatorRestore, type RestoreStatus } from "../api/v1alpha1.js";
import { badInput, failed, oneLine } from "../lib/errors.js";
import { formatStamp } from "../storage/catalog.js";
import { renderTable } from "./table.js";
import { createKubeRest, loadKubeConfig, type KubeRest } from "../kube/rest.js";

export const CLUSTER_USAGE = `kubectl replicator: backups and restores through the operator

Usage:
  kubectl replicator backup STATEFULSET [--role master|slave] [--repository NAME] [--method NAME]
                             [--credentials-secret NAME] [--no-wait] [--timeout SECONDS] [-n NAMESPACE]
  kubectl replicator restore STATEFULSET --target POD [--backup NAME | --before TIME] [--replicate]
                             [--credentials-secret NAME] [--replication-secret NAME] [--force]
                             [--repository NAME] [--no-wait] [--timeout SECONDS] [-n NAMESPACE]
  kubectl replicator list [STATEFULSET] [-n NAMESPACE] [--json]
  kubectl replicator offline|online POD [-n NAMESPACE] [--timeout SECONDS]

Credentials: --credentials-secret defaults to <STATEFULSET>-credentials (keys username, password);
--replication-secret defaults to <STATEFULSET>-replication. --replicate makes the target a slave
of the StatefulSet's master at the backup's position.`;

const options = {
  namespace: { type: "string", short: "n" },
  role: { type: "string" },
  repository: { type: "string" },
  method: { type: "string" },
  "credentials-secret": { type: "string" },
  "replication-secret": { type: "string" },
  target: { type: "string" },
  backup: { type: "string" },
  before: { type: "string" },
  replicate: { type: "boolean" },
  force: { type: "boolean" },
  "no-wait": { type: "boolean" },
  timeout: { type: "string" },
  json: { type: "boolean" },
  kubeconfig: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const path = (plural: string, ns: string, name?: string): string => `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${plural}${name ? `/${name}` : ""}`;

function currentNamespace(): string {
  try {
    const kc = loadKubeConfig(process.env.KUBECONFIG);
    return kc.getContextObject(kc.getCurrentContext())?.namespace ?? "default";
  } catch {
    return "default";
  }
}

async function follow<S extends { phase?: string; message?: string }>(
  rest: KubeRest,
  p: string,
  timeoutMs: number,
  out: (s: string) => void,
): Promise<S> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    const obj = await rest.get<{ status?: S }>(p);
    const s = obj.status ?? ({} as S);
    const line = `${s.phase ?? "Pending"}${s.message ? `: ${s.message}` : ""}`;
    if (line !== last) {
      out(`  ${new Date().toISOString().slice(11, 19)} ${line}`);
      last = line;
    }
    if (s.phase === "Completed" || s.phase === "Failed") return s;
    if (Date.now() > deadline) throw failed("Timeout", `still ${s.phase ?? "Pending"} after ${Math.round(timeoutMs / 1000)}s; follow it with kubectl get ${p.split("/").slice(-2).join("/")} -w`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

export async function clusterMain(argv: string[], out: (s: string) => void): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw badInput("InvalidArguments", `${oneLine(err)}; see \`kubectl replicator --help\``);
  }
  const v = parsed.values;
  const [command, ...rest] = parsed.positionals;
  if (v.help || !command) {
    out(CLUSTER_USAGE);
    return 0;
  }
  const ns = v.namespace ?? currentNamespace();
  const timeoutMs = v.timeout ? Number(v.timeout) * 1000 : 30 * 60_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw badInput("InvalidArguments", "--timeout must be a positive number of seconds");
  const kube = await createKubeRest(loadKubeConfig(v.kubeconfig ?? process.env.KUBECONFIG));
  const stamp = formatStamp(new Date()).toLowerCase().replace(/z$/, "");

  switch (command) {
    case "backup": {
      const sts = rest[0];
      if (!sts) throw badInput("InvalidArguments", "backup needs a StatefulSet name: kubectl replicator backup STATEFULSET");
      if (v.role && v.role !== "master" && v.role !== "slave") throw badInput("InvalidArguments", "--role must be master or slave");
      const name = `${sts}-${stamp}`.slice(0, 63);
      const body: ReplicatorBackup = {
        apiVersion: API_VERSION,
        kind: "ReplicatorBackup",
        metadata: { name, namespace: ns, labels: { "replicator.dev/cluster": sts } },
        spec: {
          repository: v.repository ?? "default",
          source: { statefulSet: sts, role: (v.role ?? "master") as "master" | "slave", credentialsSecret: { name: v["credentials-secret"] ?? `${sts}-credentials` } },
          ...(v.method ? { method: v.method } : {}),
        },
      };
      await kube.create(path("replicatorbackups", ns), body);
      out(`replicatorbackup/${name} created in ${ns}`);
      if (v["no-wait"]) return 0;
      const s = await follow<BackupStatus>(kube, path("replicatorbackups", ns, name), timeoutMs, out);
      if (s.phase === "Failed") {
        process.stderr.write(`kubectl replicator backup: ${s.message ?? "failed"}\n`);
        return 1;
      }
      out(`backup ${s.backupName ?? "?"}: ${s.sizeHuman ?? "?"}, position ${s.position ?? "-"}`);
      return 0;
    }
    case "restore": {
      const sts = rest[0];
      if (!sts || !v.target) throw badInput("InvalidArguments", "restore needs a StatefulSet and a target pod: kubectl replicator restore STATEFULSET --target POD");
      if (v.backup && v.before) throw badInput("InvalidArguments", "--backup and --before are mutually exclusive");
      const name = `${v.target}-restore-${stamp}`.slice(0, 63);
      const body: ReplicatorRestore = {
        apiVersion: API_VERSION,
        kind: "ReplicatorRestore",
        metadata: { name, namespace: ns, labels: { "replicator.dev/cluster": sts } },
        spec: {
          repository: v.repository ?? "default",
          cluster: sts,
          target: { pod: v.target, credentialsSecret: { name: v["credentials-secret"] ?? `${sts}-credentials` } },
          ...(v.backup ? { backup: v.backup } : {}),
          ...(v.before ? { before: v.before } : {}),
          ...(v.force ? { force: true } : {}),
          ...(v.replicate ? { replicateFrom: { statefulSet: sts, role: "master" as const, credentialsSecret: { name: v["replication-secret"] ?? `${sts}-replication` } } } : {}),
        },
      };
      await kube.create(path("replicatorrestores", ns), body);
      out(`replicatorrestore/${name} created in ${ns}`);
      if (v["no-wait"]) return 0;
      const s = await follow<RestoreStatus>(kube, path("replicatorrestores", ns, name), timeoutMs, out);
      if (s.phase === "Failed") {
        process.stderr.write(`kubectl replicator restore: ${s.message ?? "failed"}\n`);
        return 1;
      }
      out(`restored ${s.backupName ?? "?"} into ${s.targetPod ?? v.target}${s.replicating ? "; replicating" : ""}`);
      return 0;
    }
    case "list": {
      const sts = rest[0];
      const list = await kube.list<ReplicatorBackup>(path("replicatorbackups", ns));
      const items = list.items
        .filter((b) => !sts || b.status?.cluster === sts || b.spec.cluster === sts || b.spec.source?.statefulSet === sts)
        .sort((a, b) => (a.status?.backupName ?? a.metadata.name).localeCompare(b.status?.backupName ?? b.metadata.name));
      if (v.json) {
        out(JSON.stringify({ backups: items.map((b) => ({ resource: b.metadata.name, ...b.status })) }));
        return 0;
      }
      const rows = [["RESOURCE", "BACKUP", "PHASE", "METHOD", "SIZE", "POSITION"]];
      for (const b of items) {
        const s = b.status ?? {};
        rows.push([b.metadata.name, s.backupName ?? "-", s.phase ?? "Pending", s.method ?? "-", s.sizeHuman ?? "-", s.position ?? "-"]);
      }
      out(renderTable(rows));
      return 0;
    }
    case "offline":
    case "online": {
      const pod = rest[0];
      if (!pod) throw badInput("InvalidArguments", `${command} needs a pod: kubectl replicator ${command} POD`);
      const podPath = `/api/v1/namespaces/${ns}/pods/${pod}`;
      await kube.patch(podPath, { metadata: { annotations: { "replicator.dev/replication": command } } });
      const want = command === "online" ? "True" : "False";
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const p = await kube.get<{ status?: { conditions?: { type: string; status: string; reason?: string; message?: string }[] } }>(podPath);
        const c = p.status?.conditions?.find((x) => x.type === "replicator.dev/replicating");
        if (c?.status === want) {
          out(`${pod}: ${c.message ?? command}`);
          return 0;
        }
        if (c?.reason === "Error" || c?.reason === "InvalidAnnotation") throw failed("ReplicationFailed", `${pod}: ${c.message ?? "failed"}`);
        if (Date.now() > deadline) throw failed("Timeout", `${pod} is not ${command} after ${Math.round(timeoutMs / 1000)}s; is the operator running?`);
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    default:
      throw badInput("UnknownCommand", `unknown command "${command}"; kubectl replicator commands: backup, restore, list, offline, online`);
  }
}
