// What a container sees, resolved the way the kubelet does it: env
// (value, $(VAR) expansion, secretKeyRef, configMapKeyRef, fieldRef,
// envFrom) and volumes, which the test kubelet maps to host directories.
// Processes run on the host, so container paths in args and env (e.g.
// `--repository file:///repository`) are rewritten to those directories.
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Container, KeyValueObject, Pod } from "./pod-types.js";
import { isNotFound, type KubeHttp } from "./rest.js";

/** Why a container cannot be created yet (the kubelet's CreateContainerConfigError); retried later. */
export class ContainerConfigError extends Error {
  override name = "ContainerConfigError";
}

export interface PodContext {
  api: KubeHttp;
  pod: Pod;
  podIP: string;
  hostIP: string;
  nodeName: string;
}

type SourceKind = "Secret" | "ConfigMap";

/** Secret and ConfigMap reads, cached for one container start. */
class Sources {
  private readonly cache = new Map<string, KeyValueObject | undefined>();
  constructor(private readonly ctx: PodContext) {}

  async get(kind: SourceKind, name: string): Promise<KeyValueObject | undefined> {
    const id = `${kind}/${name}`;
    if (!this.cache.has(id)) {
      const plural = kind === "Secret" ? "secrets" : "configmaps";
      try {
        this.cache.set(id, await this.ctx.api.get<KeyValueObject>(`/api/v1/namespaces/${this.ctx.pod.metadata.namespace}/${plural}/${name}`));
      } catch (err) {
        if (!isNotFound(err)) throw err;
        this.cache.set(id, undefined);
      }
    }
    return this.cache.get(id);
  }

  /** All keys of a Secret/ConfigMap as bytes; undefined when it does not exist. */
  async entries(kind: SourceKind, name: string): Promise<Map<string, Buffer> | undefined> {
    const obj = await this.get(kind, name);
    if (!obj) return undefined;
    const out = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(obj.data ?? {})) out.set(k, kind === "Secret" ? Buffer.from(v, "base64") : Buffer.from(v, "utf8"));
    for (const [k, v] of Object.entries(obj.binaryData ?? {})) out.set(k, Buffer.from(v, "base64"));
    return out;
  }
}

/** Expand $(VAR) references to earlier variables; $$ escapes a $; unknown references stay as they are. */
export function expandVars(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name: string | undefined) => {
    if (name === undefined) return "$";
    return env[name] ?? m;
  });
}

function fieldValue(ctx: PodContext, fieldPath: string): string {
  const m = ctx.pod.metadata;
  const keyed = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (keyed) return (keyed[1] === "labels" ? m.labels : m.annotations)?.[keyed[2] ?? ""] ?? "";
  switch (fieldPath) {
    case "metadata.name":
      return m.name;
    case "metadata.namespace":
      return m.namespace;
    case "metadata.uid":
      return m.uid;
    case "spec.nodeName":
      return ctx.nodeName;
    case "spec.serviceAccountName":
      return ctx.pod.spec.serviceAccountName ?? "default";
    case "status.podIP":
    case "status.podIPs":
      return ctx.podIP;
    case "status.hostIP":
    case "status.hostIPs":
      return ctx.hostIP;
    default:
      throw new ContainerConfigError(`fieldRef ${fieldPath} is not supported by the test kubelet`);
  }
}

/** The container's environment as the kubelet would build it. */
export async function resolveEnv(ctx: PodContext, container: Container): Promise<Record<string, string>> {
  const sources = new Sources(ctx);
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const ref = from.secretRef ?? from.configMapRef;
    if (!ref) continue;
    const kind: SourceKind = from.secretRef ? "Secret" : "ConfigMap";
    const entries = await sources.entries(kind, ref.name);
    if (!entries) {
      if (ref.optional) continue;
      throw new ContainerConfigError(`${kind.toLowerCase()} "${ref.name}" not found`);
    }
    for (const [k, v] of entries) env[`${from.prefix ?? ""}${k}`] = v.toString("utf8");
  }
  for (const v of container.env ?? []) {
    const from = v.valueFrom;
    if (!from) {
      env[v.name] = expandVars(v.value ?? "", env);
    } else if (from.secretKeyRef ?? from.configMapKeyRef) {
      const kind: SourceKind = from.secretKeyRef ? "Secret" : "ConfigMap";
      const ref = (from.secretKeyRef ?? from.configMapKeyRef)!;
      const entries = await sources.entries(kind, ref.name);
      const value = entries?.get(ref.key);
      if (value === undefined) {
        if (ref.optional) continue;
        throw new ContainerConfigError(
          entries ? `couldn't find key ${ref.key} in ${kind} ${ctx.pod.metadata.namespace}/${ref.name}` : `${kind.toLowerCase()} "${ref.name}" not found`,
        );
      }
      env[v.name] = value.toString("utf8");
    } else if (from.fieldRef) {
      env[v.name] = fieldValue(ctx, from.fieldRef.fieldPath);
    } else {
      throw new ContainerConfigError(`env ${v.name}: this valueFrom is not supported by the test kubelet`);
    }
  }
  return env;
}

/** Where a container path lives on the host. */
export interface HostMount {
  mountPath: string;
  hostPath: string;
}

export interface VolumeDirs {
  /** The directory of a PersistentVolumeClaim (kept across pods: it is the "volume"). */
  pvcDir(namespace: string, claim: string): string;
  /** The pod's own directory (emptyDir, Secret and ConfigMap volumes live under it). */
  podDir: string;
}

/**
 * Map each of the container's volumeMounts to a host directory, creating it:
 * a PVC to `pvcDir(ns, claim)`, emptyDir to `<podDir>/volumes/<name>`, hostPath
 * to itself, Secret/ConfigMap volumes to files written under the pod dir.
 */
export async function prepareMounts(ctx: PodContext, container: Container, dirs: VolumeDirs): Promise<HostMount[]> {
  const sources = new Sources(ctx);
  const mounts: HostMount[] = [];
  for (const vm of container.volumeMounts ?? []) {
    const vol = ctx.pod.spec.volumes?.find((v) => v.name === vm.name);
    if (!vol) throw new ContainerConfigError(`volumeMount ${vm.name}: no such volume`);
    let root: string;
    if (vol.persistentVolumeClaim) {
      root = dirs.pvcDir(ctx.pod.metadata.namespace, vol.persistentVolumeClaim.claimName);
    } else if (vol.hostPath) {
      root = vol.hostPath.path;
    } else {
      root = path.join(dirs.podDir, "volumes", vol.name);
    }
    await mkdir(root, { recursive: true });
    if (vol.downwardAPI) await writeDownwardVolumes({ ...ctx.pod, spec: { ...ctx.pod.spec, volumes: [vol] } }, dirs.podDir);
    const source: [SourceKind, string, boolean] | undefined = vol.secret
      ? ["Secret", vol.secret.secretName, vol.secret.optional ?? false]
      : vol.configMap
        ? ["ConfigMap", vol.configMap.name, vol.configMap.optional ?? false]
        : undefined;
    if (source) {
      const [kind, name, optional] = source;
      const entries = await sources.entries(kind, name);
      if (!entries && !optional) throw new ContainerConfigError(`${kind.toLowerCase()} "${name}" not found`);
      const items = vol.secret?.items ?? vol.configMap?.items;
      for (const [key, bytes] of entries ?? []) {
        const rel = items ? items.find((i) => i.key === key)?.path : key;
        if (rel === undefined) continue;
        await mkdir(path.dirname(path.join(root, rel)), { recursive: true });
        await writeFile(path.join(root, rel), bytes);
      }
    }
    const hostPath = vm.subPath ? path.join(root, vm.subPath) : root;
    if (vm.subPath) await mkdir(hostPath, { recursive: true });
    mounts.push({ mountPath: vm.mountPath.replace(/\/+$/, ""), hostPath });
  }
  return mounts;
}

/**
 * A downward-API field of the pod, as the kubelet projects it into a file:
 * metadata.name/namespace/uid, metadata.labels['k'], metadata.annotations['k']
 * (missing keys give ""), and metadata.labels / metadata.annotations as k="v" lines.
 */
export function downwardField(pod: Pod, fieldPath: string): string {
  const m = /^metadata\.(labels|annotations)\[['"](.+)['"]\]$/.exec(fieldPath);
  if (m?.[1] && m[2] !== undefined) return (m[1] === "labels" ? pod.metadata.labels : pod.metadata.annotations)?.[m[2]] ?? "";
  switch (fieldPath) {
    case "metadata.name":
      return pod.metadata.name;
    case "metadata.namespace":
      return pod.metadata.namespace;
    case "metadata.uid":
      return pod.metadata.uid;
    case "metadata.labels":
    case "metadata.annotations": {
      const map = (fieldPath === "metadata.labels" ? pod.metadata.labels : pod.metadata.annotations) ?? {};
      return Object.keys(map).sort().map((k) => `${k}=${JSON.stringify(map[k])}`).join("\n");
    }
    default:
      throw new ContainerConfigError(`downwardAPI fieldPath ${fieldPath} is not supported by the test kubelet`);
  }
}

/**
 * (Re)write a pod's downward-API volume files under `podDir`. Called when the
 * pod starts and on every sync, so annotation changes reach running
 * containers as they do on a real node (there within a sync period).
 */
export async function writeDownwardVolumes(pod: Pod, podDir: string): Promise<void> {
  for (const vol of pod.spec.volumes ?? []) {
    if (!vol.downwardAPI) continue;
    const root = path.join(podDir, "volumes", vol.name);
    await mkdir(root, { recursive: true });
    for (const item of vol.downwardAPI.items ?? []) {
      if (!item.fieldRef) continue;
      const file = path.join(root, item.path);
      await mkdir(path.dirname(file), { recursive: true });
      const value = downwardField(pod, item.fieldRef.fieldPath);
      const current = await readFile(file, "utf8").catch(() => undefined);
      if (current === value) continue;
      // Replace atomically, as the kubelet's atomic writer does.
      await writeFile(`${file}.tmp`, value);
      await rename(`${file}.tmp`, file);
    }
  }
}

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * Rewrite container paths to host paths in one arg or env value: a mount path
 * at the start, after `=` (`--dir=/x`) or after `file://`, followed by `/`,
 * `?` or the end. The longest mount path wins.
 */
export function rewritePaths(value: string, mounts: HostMount[]): string {
  // Only the first (longest) matching mount is applied: a host path may itself
  // start with a shorter mount path such as /tmp.
  for (const m of [...mounts].sort((a, b) => b.mountPath.length - a.mountPath.length)) {
    if (m.mountPath === "") continue;
    const re = new RegExp(`(^|=|file://)${escapeRegExp(m.mountPath)}(?=/|\\?|$)`, "g");
    if (re.test(value)) return value.replace(re, (_m, prefix: string) => `${prefix}${m.hostPath}`);
  }
  return value;
}
