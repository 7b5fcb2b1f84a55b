// A TEST KUBELET: plays one Node so Pods run as local processes, next to the
// control plane of ./controlplane.ts (which has no scheduler and no node).
//
// Every `pollMs` it lists all Pods: unbound ones are bound to this node;
// this node's are started, their status (phase, IPs, containerStatuses,
// conditions) is written through pods/status, and deleted ones are stopped
// and then removed. A container's image picks its runner:
//   "agent"   node <repo>/dist/cli/main.js <args>  (the replicator CLI)
//   "mariadb" a real mariadbd on the pod's own IP 127.0.0.N, datadir on the PVC
//   "exec"    command + args as a host process (e.g. ["sh", "-c", "..."])
// Volumes: PVCs, emptyDir, hostPath, Secret, ConfigMap and downwardAPI (the
// last rewritten on every sync, so annotation changes reach running pods).
// Pod readiness follows the real rule: Ready = every container ready AND
// every spec.readinessGates condition True; gate conditions belong to their
// owner (the operator) and are never written here.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { appendFileSync, createWriteStream, existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { constants as osConstants, tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import type { KubeConfig } from "@kubernetes/client-node";
import { canBind, canLogin, ensureDatadir, mariadbdArgs } from "./mariadb-pod.js";
import { ContainerConfigError, expandVars, prepareMounts, resolveEnv, rewritePaths, writeDownwardVolumes, type PodContext } from "./pod-env.js";
import type { Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodPhase, PodStatus } from "./pod-types.js";
import { isConflict, isNotFound, KubeHttpError, kubeHttp, type KubeHttp } from "./rest.js";

export type RunnerKind = "agent" | "mariadb" | "exec";

/** Images the test kubelet knows by default: regex (matched against the whole image string) → runner. */
export const DEFAULT_IMAGES: Record<string, RunnerKind> = {
  "(^|/)replicator(-agent)?([:@]|$)": "agent",
  "(^|/)(mariadb|mysql)([:@]|$)": "mariadb",
};

export interface KubeletOptions {
  /** Admin credentials (e.g. controlPlane.kubeConfig()). */
  kubeConfig: KubeConfig;
  nodeName?: string;
  /** The repository root; the agent runner runs <repoRoot>/dist/cli/main.js. */
  repoRoot?: string;
  /** Regex (as a string) → runner; the first match in insertion order wins. Default DEFAULT_IMAGES. */
  images?: Record<string, RunnerKind>;
  /**
   * Regex (as a string) → the image's ENTRYPOINT, for exec-run images whose
   * containers give only args (a third-party plugin image, say).
   */
  entrypoints?: Record<string, string[]>;
  /** Where pod dirs, PVC dirs and logs live (default: a new temp dir, removed by stop()). */
  stateDir?: string;
  /** Keep stateDir after stop() (also with KEEP_KUBE_TMP=1). */
  keepStateDir?: boolean;
  /** How often all Pods are listed (default 500 ms). */
  pollMs?: number;
  /** Cap on a deleted pod's grace period before SIGKILL (default 10 s). */
  maxGracePeriodSeconds?: number;
}

export interface Kubelet {
  readonly nodeName: string;
  readonly stateDir: string;
  /** The kubelet's own log (sync errors, pod starts and stops). */
  readonly logFile: string;
  /** The pod's IP (127.0.0.N for mariadb pods, 127.0.0.1 otherwise), once this kubelet runs it. */
  podAddress(namespace: string, podName: string): string | undefined;
  /** The host directory standing in for PVC namespace/claim (a mariadb datadir is its `data` subdirectory). */
  pvcDir(namespace: string, claim: string): string;
  /** SIGKILL the pod's processes (one container, or all): a crash. Returns false if nothing was running. */
  killContainer(namespace: string, podName: string, container?: string): boolean;
  /**
   * Send a signal to the pod's processes (one container, or all), e.g.
   * SIGSTOP/SIGCONT to freeze a server while its volume is copied (the test
   * CSI driver's atomic snapshot). Returns false if nothing was running.
   */
  signalContainer(namespace: string, podName: string, signal: NodeJS.Signals, container?: string): boolean;
  /**
   * Run `hook` before a new pod's containers start (init containers too),
   * retried every second while it throws: what a real node waits for before
   * starting a pod, e.g. a volume that is still being provisioned.
   */
  addPodStartHook(hook: (pod: Pod) => Promise<void>): void;
  /** stdout+stderr of a container (all restarts), "" if none. */
  containerLog(namespace: string, podName: string, container: string): Promise<string>;
  /** Stop the loops, kill every process it started, remove stateDir (unless kept). */
  stop(): Promise<void>;
}

const HOST_IP = "127.0.0.1";
const LOG_ANNOTATION = "test.replicator.dev/log";
const TERMINATION_MESSAGE_MAX = 4096;
const FALLBACK_LOG_BYTES = 2048;
const RESTART_BACKOFF_MS = 1_000;
const HEARTBEAT_MS = 10_000;
/** The conditions this kubelet owns; any other (readiness gates) is left alone. */
const OWN_CONDITIONS = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

/** RFC 3339 with whole seconds, as the API server stores metav1.Time. */
const rfc3339 = (d = new Date()): string => d.toISOString().replace(/\.\d{3}Z$/, "Z");
/** metav1.MicroTime (Lease renewTime). */
const microTime = (d = new Date()): string => d.toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
const errText = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** One container of a running pod. */
class ContainerRuntime {
  child: ChildProcess | undefined;
  /** Resolves when the current process (if any) has exited and its output is flushed. */
  exited: Promise<void> = Promise.resolve();
  state: ContainerState = { waiting: { reason: "ContainerCreating" } };
  lastState: ContainerState = {};
  ready = false;
  everStarted = false;
  restartCount = 0;
  containerID: string | undefined;
  stderrTail = "";

  constructor(
    readonly spec: Container,
    readonly init: boolean,
    readonly kind: RunnerKind | undefined,
    readonly logFile: string,
    readonly terminationLog: string,
  ) {}

  get running(): boolean {
    return this.child !== undefined;
  }

  signal(sig: NodeJS.Signals): boolean {
    const pid = this.child?.pid;
    if (pid === undefined) return false;
    try {
      process.kill(-pid, sig); // the whole process group (detached spawn)
    } catch {
      this.child?.kill(sig);
    }
    return true;
  }

  status(): ContainerStatus {
    const running = this.state.running !== undefined;
    return {
      name: this.spec.name,
      image: this.spec.image,
      imageID: `test-kubelet://${this.spec.image}`,
      ...(this.containerID ? { containerID: this.containerID } : {}),
      ready: this.ready,
      started: running,
      restartCount: this.restartCount,
      state: this.state,
      lastState: this.lastState,
    };
  }
}

/** A pod this kubelet runs. */
class PodRuntime {
  pod: Pod;
  readonly containers: ContainerRuntime[];
  readonly startTime = rfc3339();
  initialized = false;
  initFailed = false;
  terminating = false;
  /** Set once every process of a terminating pod has exited. */
  terminated = false;
  deleteIssuedAt = 0;
  /** Aborts back-off sleeps when the pod terminates. */
  readonly abort = new AbortController();
  run: Promise<void> = Promise.resolve();
  termination: Promise<void> | undefined;

  constructor(
    pod: Pod,
    readonly dir: string,
    readonly ip: string,
    containers: ContainerRuntime[],
  ) {
    this.pod = pod;
    this.containers = containers;
  }

  get key(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }
  get inits(): ContainerRuntime[] {
    return this.containers.filter((c) => c.init);
  }
  get mains(): ContainerRuntime[] {
    return this.containers.filter((c) => !c.init);
  }
}

class TestKubelet implements Kubelet {
  readonly logFile: string;
  private readonly images: [RegExp, RunnerKind][];
  entrypoints: [RegExp, string[]][] = [];
  private readonly pods = new Map<string, PodRuntime>();
  /** Pods without a runtime whose deletion was requested, by uid → time. */
  private readonly deletesIssued = new Map<string, number>();
  /** mariadb datadir → the container using it (a recreated pod waits for the old one). */
  private readonly datadirOwners = new Map<string, ContainerRuntime>();
  private readonly tasks = new Set<Promise<unknown>>();
  private readonly podStartHooks: ((pod: Pod) => Promise<void>)[] = [];
  private nextIp = 10;
  private stopped = false;
  private wake: (() => void) | undefined;
  private loopDone: Promise<void> = Promise.resolve();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly nodeStartedAt = rfc3339();

  constructor(
    private readonly api: KubeHttp,
    readonly nodeName: string,
    readonly stateDir: string,
    private readonly cli: string,
    images: Record<string, RunnerKind>,
    private readonly pollMs: number,
    private readonly maxGrace: number,
    private readonly keepStateDir: boolean,
  ) {
    this.logFile = path.join(stateDir, "kubelet.log");
    this.images = Object.entries(images).map(([re, kind]) => [new RegExp(re), kind]);
  }

  // ------------------------------------------------------------ public API

  podAddress(namespace: string, podName: string): string | undefined {
    return this.find(namespace, podName)?.ip;
  }

  pvcDir(namespace: string, claim: string): string {
    return path.join(this.stateDir, "pvc", namespace, claim);
  }

  killContainer(namespace: string, podName: string, container?: string): boolean {
    const rt = this.find(namespace, podName);
    let killed = false;
    for (const c of rt?.containers ?? []) {
      if (container !== undefined && c.spec.name !== container) continue;
      if (c.signal("SIGKILL")) killed = true;
    }
    if (killed) this.log(`${rt?.key ?? "?"}: SIGKILL ${container ?? "all containers"} (simulated crash)`);
    return killed;
  }

  signalContainer(namespace: string, podName: string, signal: NodeJS.Signals, container?: string): boolean {
    const rt = this.find(namespace, podName);
    let sent = false;
    for (const c of rt?.containers ?? []) {
      if (container !== undefined && c.spec.name !== container) continue;
      if (c.signal(signal)) sent = true;
    }
    if (sent) this.log(`${rt?.key ?? "?"}: ${signal} ${container ?? "all containers"}`);
    return sent;
  }

  addPodStartHook(hook: (pod: Pod) => Promise<void>): void {
    this.podStartHooks.push(hook);
  }

  async containerLog(namespace: string, podName: string, container: string): Promise<string> {
    const c = this.find(namespace, podName)?.containers.find((x) => x.spec.name === container);
    if (!c || !existsSync(c.logFile)) return "";
    return readFile(c.logFile, "utf8");
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.heartbeatTimer);
    this.kick();
    await this.loopDone;
    const all = [...this.pods.values()];
    for (const rt of all) {
      rt.terminating = true;
      rt.abort.abort();
      for (const c of rt.containers) c.signal("SIGTERM");
    }
    const killTimer = setTimeout(() => {
      for (const rt of all) for (const c of rt.containers) c.signal("SIGKILL");
    }, 5_000);
    await Promise.allSettled(all.flatMap((rt) => [rt.run, ...rt.containers.map((c) => c.exited)]));
    clearTimeout(killTimer);
    await Promise.allSettled([...this.tasks]);
    this.api.close();
    if (!this.keepStateDir) await rm(this.stateDir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------ start-up

  async start(): Promise<void> {
    await this.registerNode();
    this.heartbeatTimer = setInterval(() => {
      this.track(this.heartbeat().catch((err: unknown) => { this.log(`heartbeat: ${errText(err)}`); }));
    }, HEARTBEAT_MS);
    this.loopDone = this.loop();
  }

  private async registerNode(): Promise<void> {
    const labels = { "kubernetes.io/hostname": this.nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64" };
    try {
      await this.api.post("/api/v1/nodes", { apiVersion: "v1", kind: "Node", metadata: { name: this.nodeName, labels }, spec: {} });
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    // The TaintNodesByCondition admission plugin adds node.kubernetes.io/not-ready
    // on create; the node lifecycle controller that would lift it is off.
    await this.api.patch(`/api/v1/nodes/${this.nodeName}`, { spec: { taints: null, unschedulable: null } }, "merge");
    await this.heartbeat();
  }

  /** Node status (Ready, capacity, addresses) with a fresh heartbeat, and the node Lease. */
  private async heartbeat(): Promise<void> {
    const now = rfc3339();
    const cond = (type: string, status: string, reason: string, message: string): Record<string, string> => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: this.nodeStartedAt,
    });
    const resources = { cpu: "8", memory: "32Gi", pods: "110", "ephemeral-storage": "100Gi" };
    await this.api.patch(
      `/api/v1/nodes/${this.nodeName}/status`,
      {
        status: {
          conditions: [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "test kubelet is posting ready status"),
          ],
          addresses: [
            { type: "InternalIP", address: HOST_IP },
            { type: "Hostname", address: this.nodeName },
          ],
          capacity: resources,
          allocatable: resources,
          daemonEndpoints: { kubeletEndpoint: { Port: 10250 } },
          nodeInfo: {
            machineID: "test",
            systemUUID: "test",
            bootID: "test",
            kernelVersion: "test",
            osImage: "test kubelet",
            containerRuntimeVersion: "test://1",
            kubeletVersion: "v1.31.14-test",
            kubeProxyVersion: "",
            operatingSystem: "linux",
            architecture: "amd64",
          },
        },
      },
      "strategic",
    );
    const leasePath = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${this.nodeName}`;
    const spec = { holderIdentity: this.nodeName, leaseDurationSeconds: 40, renewTime: microTime() };
    try {
      await this.api.patch(leasePath, { spec }, "merge");
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.api.post("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { name: this.nodeName, namespace: "kube-node-lease" },
        spec,
      });
    }
  }

  // ------------------------------------------------------------ sync loop

  private async loop(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.syncOnce();
      } catch (err) {
        this.log(`sync: ${errText(err)}`);
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, this.pollMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Run the loop again soon (a process exited, a container became ready). */
  private kick(): void {
    this.wake?.();
  }

  private async syncOnce(): Promise<void> {
    const list = await this.api.get<{ items: Pod[] }>("/api/v1/pods");
    const seen = new Set<string>();
    for (const pod of list.items) {
      if (this.stopped) return;
      if (pod.spec.nodeName === this.nodeName) seen.add(pod.metadata.uid);
      try {
        await this.syncPod(pod);
      } catch (err) {
        if (!isNotFound(err)) this.log(`${pod.metadata.namespace}/${pod.metadata.name}: ${errText(err)}`);
      }
    }
    // Pods gone from the API: stop their processes and forget them.
    for (const [uid, rt] of this.pods) {
      if (seen.has(uid)) continue;
      this.pods.delete(uid);
      this.log(`${rt.key}: gone from the API, stopping`);
      this.track(this.terminate(rt));
    }
    for (const uid of this.deletesIssued.keys()) if (!seen.has(uid)) this.deletesIssued.delete(uid);
  }

  private async syncPod(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    if (!pod.spec.nodeName) {
      if (!pod.metadata.deletionTimestamp) await this.bind(pod);
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) return;
    let rt = this.pods.get(uid);
    if (!rt) {
      const phase = pod.status?.phase;
      if (pod.metadata.deletionTimestamp || phase === "Succeeded" || phase === "Failed") {
        // Nothing runs here for it: a deleted pod can go right away.
        if (pod.metadata.deletionTimestamp && Date.now() - (this.deletesIssued.get(uid) ?? 0) > 5_000) {
          this.deletesIssued.set(uid, Date.now());
          await this.deletePod(pod);
        }
        return;
      }
      rt = await this.createRuntime(pod);
      this.pods.set(uid, rt);
      this.log(`${namespace}/${name}: starting (ip ${rt.ip}, dir ${rt.dir})`);
      const started = rt;
      rt.run = this.runPod(started).catch((err: unknown) => { this.log(`${started.key}: ${errText(err)}`); });
    }
    rt.pod = pod;
    await writeDownwardVolumes(pod, rt.dir).catch((err: unknown) => { this.log(`${rt.key}: downwardAPI: ${errText(err)}`); });
    if (pod.metadata.deletionTimestamp && !rt.terminating) {
      const grace = Math.min(pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30, this.maxGrace);
      this.log(`${rt.key}: deleted, stopping (grace ${grace}s)`);
      this.track(this.terminate(rt, grace));
    }
    await this.writeStatus(rt);
    if (pod.metadata.deletionTimestamp && rt.terminated && Date.now() - rt.deleteIssuedAt > 5_000) {
      rt.deleteIssuedAt = Date.now();
      await this.deletePod(pod);
    }
  }

  private async bind(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    try {
      await this.api.post(`/api/v1/namespaces/${namespace}/pods/${name}/binding`, {
        apiVersion: "v1",
        kind: "Binding",
        metadata: { name, uid },
        target: { apiVersion: "v1", kind: "Node", name: this.nodeName },
      });
      this.kick();
    } catch (err) {
      if (!isConflict(err)) throw err; // 409: already bound
    }
  }

  private async deletePod(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    try {
      await this.api.delete(`/api/v1/namespaces/${namespace}/pods/${name}`, undefined, {
        apiVersion: "v1",
        kind: "DeleteOptions",
        gracePeriodSeconds: 0,
        preconditions: { uid },
      });
    } catch (err) {
      if (!isNotFound(err) && !isConflict(err)) throw err;
    }
  }

  // ------------------------------------------------------------ pods

  private runnerFor(image: string): RunnerKind | undefined {
    return this.images.find(([re]) => re.test(image))?.[1];
  }

  private async createRuntime(pod: Pod): Promise<PodRuntime> {
    const dir = path.join(this.stateDir, "pods", pod.metadata.namespace, `${pod.metadata.name}-${pod.metadata.uid.slice(0, 8)}`);
    await mkdir(dir, { recursive: true });
    const make = (c: Container, init: boolean): ContainerRuntime =>
      new ContainerRuntime(c, init, this.runnerFor(c.image), path.join(dir, `${c.name}.log`), path.join(dir, `${c.name}.termination-log`));
    const containers = [...(pod.spec.initContainers ?? []).map((c) => make(c, true)), ...pod.spec.containers.map((c) => make(c, false))];
    const db = containers.find((c) => c.kind === "mariadb" && !c.init);
    const ip = db ? await this.allocateIp(mariadbPort(db.spec)) : HOST_IP;
    return new PodRuntime(pod, dir, ip, containers);
  }

  /** The next unused 127.0.N.M (from 127.0.0.10) where ip:port can be bound. */
  private async allocateIp(port: number): Promise<string> {
    for (let tries = 0; tries < 1_000; tries++) {
      const n = this.nextIp++;
      const ip = `127.0.${(n >> 8) & 255}.${n & 255}`;
      if ((n & 255) === 0 || (n & 255) === 255) continue;
      if (await canBind(ip, port)) return ip;
    }
    throw new Error(`no free loopback address for port ${port}`);
  }

  /** Init containers one by one, then every container (each supervised with its restarts). */
  private async runPod(rt: PodRuntime): Promise<void> {
    await this.api
      .patch(`/api/v1/namespaces/${rt.pod.metadata.namespace}/pods/${rt.pod.metadata.name}`, { metadata: { annotations: { [LOG_ANNOTATION]: rt.dir } } }, "merge")
      .catch((err: unknown) => { this.log(`${rt.key}: annotate: ${errText(err)}`); });
    for (const hook of this.podStartHooks) {
      for (;;) {
        if (this.halted(rt)) return;
        try {
          await hook(rt.pod);
          break;
        } catch (err) {
          this.log(`${rt.key}: waiting before start: ${errText(err)}`);
          await delay(RESTART_BACKOFF_MS, undefined, { signal: rt.abort.signal }).catch(() => undefined);
        }
      }
    }
    for (const c of rt.inits) {
      await this.supervise(rt, c);
      if (this.halted(rt)) return;
      if (c.state.terminated?.exitCode !== 0) {
        rt.initFailed = true;
        this.kick();
        return;
      }
    }
    rt.initialized = true;
    await Promise.all(rt.mains.map((c) => this.supervise(rt, c)));
  }

  /** Run a container until it is done for good, restarting it as restartPolicy says. */
  private async supervise(rt: PodRuntime, c: ContainerRuntime): Promise<void> {
    const policy = rt.pod.spec.restartPolicy ?? "Always";
    for (;;) {
      if (this.halted(rt)) return;
      if (c.kind === undefined) {
        c.state = {
          waiting: {
            reason: "ImageNotKnownToTestKubelet",
            message: `image "${c.spec.image}" matches none of the test kubelet's images: ${this.images.map(([re]) => re.source).join(", ")}`,
          },
        };
        this.kick();
        return;
      }
      try {
        await this.runOnce(rt, c, c.kind);
      } catch (err) {
        const reason = err instanceof ContainerConfigError ? "CreateContainerConfigError" : "RunContainerError";
        c.state = { waiting: { reason, message: errText(err) } };
        this.log(`${rt.key}/${c.spec.name}: ${reason}: ${errText(err)}`);
        this.kick();
        await delay(RESTART_BACKOFF_MS, undefined, { signal: rt.abort.signal }).catch(() => undefined);
        continue;
      }
      if (this.halted(rt)) return;
      const exitCode = c.state.terminated?.exitCode ?? 0;
      const restart = c.init || policy === "OnFailure" ? policy !== "Never" && exitCode !== 0 : policy === "Always";
      if (!restart) return;
      c.lastState = c.state;
      c.restartCount++;
      c.state = { waiting: { reason: "CrashLoopBackOff", message: `back-off restarting container ${c.spec.name}` } };
      this.kick();
      await delay(RESTART_BACKOFF_MS, undefined, { signal: rt.abort.signal }).catch(() => undefined);
    }
  }

  /** Start the container's process once and wait for it to exit; leaves c.state terminated. */
  private async runOnce(rt: PodRuntime, c: ContainerRuntime, kind: RunnerKind): Promise<void> {
    const pod = rt.pod;
    const ctx: PodContext = { api: this.api, pod, podIP: rt.ip, hostIP: HOST_IP, nodeName: this.nodeName };
    const env = await resolveEnv(ctx, c.spec);
    const mounts = await prepareMounts(ctx, c.spec, { pvcDir: (ns, claim) => this.pvcDir(ns, claim), podDir: rt.dir });
    const work = path.join(rt.dir, "work", c.spec.name);
    const tmp = path.join(rt.dir, "tmp");
    await mkdir(work, { recursive: true });
    await mkdir(tmp, { recursive: true });
    await writeFile(c.terminationLog, "");
    const argv = (xs: string[] | undefined): string[] => (xs ?? []).map((a) => rewritePaths(expandVars(a, env), mounts));
    const command = argv(c.spec.command);
    const args = argv(c.spec.args);

    let bin: string;
    let binArgs: string[];
    switch (kind) {
      case "agent": {
        // The image's entrypoint is the CLI; a command naming it is dropped.
        const first = command[0];
        if (first !== undefined && !/(^|\/)(kubectl-)?replicator$|main\.js$/.test(first)) {
          throw new ContainerConfigError(`the agent runner only runs the replicator CLI, not ${JSON.stringify(command)}`);
        }
        bin = process.execPath;
        binArgs = [this.cli, ...command.slice(1), ...args];
        break;
      }
      case "exec": {
        const entrypoint = command.length > 0 ? command : (this.entrypoints.find(([re]) => re.test(c.spec.image))?.[1] ?? []);
        const [first, ...rest] = [...entrypoint, ...args];
        if (first === undefined) throw new ContainerConfigError("the exec runner needs a command");
        bin = first;
        binArgs = rest;
        break;
      }
      case "mariadb": {
        const datadir = this.mariadbDatadir(pod, c.spec, rt.dir);
        const owner = this.datadirOwners.get(datadir);
        if (owner && owner !== c) await owner.exited; // the previous pod on this volume
        this.datadirOwners.set(datadir, c);
        await ensureDatadir(datadir);
        const port = mariadbPort(c.spec);
        const ordinal = /-(\d+)$/.exec(pod.metadata.name)?.[1];
        const serverId = env.SERVER_ID !== undefined ? Number(env.SERVER_ID) : 1 + Number(ordinal ?? 0);
        await mkdir(path.join(this.stateDir, "sock"), { recursive: true });
        bin = "mariadbd";
        binArgs = mariadbdArgs({
          datadir,
          ip: rt.ip,
          port,
          socket: path.join(this.stateDir, "sock", `${rt.ip}-${port}.sock`),
          pidFile: path.join(rt.dir, `${c.spec.name}.pid`),
          serverId,
          extra: [...command, ...args].filter((a) => a.startsWith("--")),
        });
        break;
      }
    }
    if (this.halted(rt)) return;

    const processEnv: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: work,
      HOSTNAME: pod.metadata.name,
      LANG: "C.UTF-8",
      TMPDIR: tmp,
    };
    for (const [k, v] of Object.entries(env)) processEnv[k] = rewritePaths(v, mounts);
    processEnv.REPLICATOR_TERMINATION_LOG = c.terminationLog;

    const log = createWriteStream(c.logFile, { flags: "a" });
    log.write(`--- ${new Date().toISOString()} ${c.spec.name}: ${bin} ${binArgs.join(" ")}\n`);
    const startedAt = rfc3339();
    c.stderrTail = "";
    const child = spawn(bin, binArgs, { cwd: work, env: processEnv, stdio: ["ignore", "pipe", "pipe"], detached: true });
    // Handled at once: `once` also rejects on "error" (e.g. ENOENT), reported below via "spawn".
    const closed = (once(child, "close") as Promise<[number | null, NodeJS.Signals | null]>).catch(
      (): [number | null, NodeJS.Signals | null] => [null, null],
    );
    try {
      await once(child, "spawn");
    } catch (err) {
      log.end();
      c.state = { terminated: { exitCode: 128, reason: "StartError", message: errText(err), startedAt, finishedAt: rfc3339() } };
      this.kick();
      return;
    }
    let markExited = (): void => undefined;
    c.exited = new Promise<void>((resolve) => (markExited = resolve));
    c.child = child;
    c.everStarted = true;
    c.containerID = `test://${child.pid ?? 0}`;
    c.state = { running: { startedAt } };
    c.ready = kind !== "mariadb";
    child.stdout.on("data", (b: Buffer) => log.write(b));
    child.stderr.on("data", (b: Buffer) => {
      log.write(b);
      c.stderrTail = (c.stderrTail + b.toString("utf8")).slice(-FALLBACK_LOG_BYTES);
    });
    this.kick();
    if (kind === "mariadb") this.track(this.probeMariadb(rt, c, child));

    const [code, signal] = await closed;
    await new Promise<void>((resolve) => log.end(resolve));
    const exitCode = code ?? 128 + (signal ? osConstants.signals[signal] : 0);
    let message = (await readFile(c.terminationLog, "utf8").catch(() => "")).slice(0, TERMINATION_MESSAGE_MAX);
    if (message === "" && exitCode !== 0 && c.spec.terminationMessagePolicy === "FallbackToLogsOnError") message = c.stderrTail;
    const terminated: ContainerStateTerminated = {
      exitCode,
      ...(signal ? { signal: osConstants.signals[signal] } : {}),
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message ? { message } : {}),
      startedAt,
      finishedAt: rfc3339(),
      containerID: c.containerID,
    };
    c.child = undefined;
    c.ready = false;
    c.state = { terminated };
    this.log(`${rt.key}/${c.spec.name}: exited ${exitCode}${signal ? ` (${signal})` : ""}`);
    markExited();
    this.kick();
  }

  /** Ready once root can log in over TCP on the pod IP. */
  private async probeMariadb(rt: PodRuntime, c: ContainerRuntime, child: ChildProcess): Promise<void> {
    const port = mariadbPort(c.spec);
    while (c.child === child && !this.halted(rt)) {
      if (await canLogin(rt.ip, port)) {
        if (c.child === child) {
          c.ready = true;
          this.kick();
        }
        return;
      }
      await delay(200);
    }
  }

  /** The datadir: `<pvcDir>/data` of the container's (else the pod's first) PVC volume, else a pod-local dir. */
  private mariadbDatadir(pod: Pod, c: Container, podDir: string): string {
    const pvcVolumes = (pod.spec.volumes ?? []).filter((v) => v.persistentVolumeClaim);
    const mounted = pvcVolumes.find((v) => c.volumeMounts?.some((m) => m.name === v.name)) ?? pvcVolumes[0];
    const claim = mounted?.persistentVolumeClaim?.claimName;
    return claim ? path.join(this.pvcDir(pod.metadata.namespace, claim), "data") : path.join(podDir, "emptydir-data");
  }

  /** SIGTERM every process, SIGKILL after `graceSeconds`, wait for all to exit. */
  private terminate(rt: PodRuntime, graceSeconds = this.maxGrace): Promise<void> {
    rt.termination ??= (async () => {
      rt.terminating = true;
      rt.abort.abort();
      for (const c of rt.containers) c.signal("SIGTERM");
      const timer = setTimeout(() => {
        for (const c of rt.containers) c.signal("SIGKILL");
      }, graceSeconds * 1000);
      await rt.run;
      await Promise.all(rt.containers.map((c) => c.exited));
      clearTimeout(timer);
      rt.terminated = true;
      this.log(`${rt.key}: all processes stopped`);
      this.kick();
    })();
    return rt.termination;
  }

  // ------------------------------------------------------------ status

  /** PATCH pods/status when what this kubelet owns differs from what the API server has. */
  private async writeStatus(rt: PodRuntime): Promise<void> {
    const desired = this.desiredStatus(rt);
    const current = rt.pod.status ?? {};
    if (statusKey(desired) === statusKey(current)) return;
    const { namespace, name, uid } = rt.pod.metadata;
    try {
      // Strategic merge: conditions merge by type, so readiness-gate conditions set by others stay.
      const updated = await this.api.patch<Pod>(`/api/v1/namespaces/${namespace}/pods/${name}/status`, { metadata: { uid }, status: desired }, "strategic");
      rt.pod = updated;
    } catch (err) {
      if (err instanceof KubeHttpError && (err.status === 404 || err.status === 409)) return;
      throw err;
    }
  }

  private desiredStatus(rt: PodRuntime): PodStatus {
    const pod = rt.pod;
    const phase = this.phaseOf(rt);
    const terminal = phase === "Succeeded" || phase === "Failed";
    const previous = new Map((pod.status?.conditions ?? []).map((c) => [c.type, c]));
    const now = rfc3339();
    const condition = (type: string, ok: boolean, reason?: string, message?: string): PodCondition => {
      const status = ok ? "True" : "False";
      const prev = previous.get(type);
      return {
        type,
        status,
        ...(ok || !reason ? {} : { reason }),
        ...(ok || !message ? {} : { message }),
        lastProbeTime: null,
        lastTransitionTime: prev?.status === status && prev.lastTransitionTime ? prev.lastTransitionTime : now,
      };
    };
    const unready = rt.mains.filter((c) => !c.ready).map((c) => c.spec.name);
    const containersReady = unready.length === 0 && !terminal;
    // Readiness gates: their conditions are owned by someone else; we only read them.
    let gateProblem: string | undefined;
    for (const gate of pod.spec.readinessGates ?? []) {
      const cond = previous.get(gate.conditionType);
      if (!cond) gateProblem = `corresponding condition of pod readiness gate "${gate.conditionType}" does not exist.`;
      else if (cond.status !== "True") gateProblem = `the status of pod readiness gate "${gate.conditionType}" is not "True", but ${cond.status}`;
      if (gateProblem) break;
    }
    const notReadyReason = terminal ? "PodCompleted" : "ContainersNotReady";
    const unreadyMessage = `containers with unready status: [${unready.join(" ")}]`;
    const incompleteInits = rt.inits.filter((c) => c.state.terminated?.exitCode !== 0).map((c) => c.spec.name);
    const status: PodStatus = {
      phase,
      conditions: [
        condition("PodScheduled", true),
        condition("Initialized", rt.initialized || incompleteInits.length === 0, "ContainersNotInitialized", `containers with incomplete status: [${incompleteInits.join(" ")}]`),
        condition("ContainersReady", containersReady, notReadyReason, terminal ? undefined : unreadyMessage),
        containersReady && gateProblem
          ? condition("Ready", false, "ReadinessGatesNotReady", gateProblem)
          : condition("Ready", containersReady, notReadyReason, terminal ? undefined : unreadyMessage),
      ],
      hostIP: HOST_IP,
      hostIPs: [{ ip: HOST_IP }],
      podIP: rt.ip,
      podIPs: [{ ip: rt.ip }],
      startTime: rt.startTime,
      containerStatuses: rt.mains.map((c) => c.status()),
    };
    if (rt.inits.length > 0) status.initContainerStatuses = rt.inits.map((c) => c.status());
    return status;
  }

  private phaseOf(rt: PodRuntime): PodPhase {
    const policy = rt.pod.spec.restartPolicy ?? "Always";
    if (rt.initFailed) return "Failed";
    const done = rt.mains.map((c) => c.state.terminated);
    if (done.length > 0 && done.every((t) => t !== undefined)) {
      const allOk = done.every((t) => t.exitCode === 0);
      if (rt.terminating || policy === "Never") return allOk ? "Succeeded" : "Failed";
      if (policy === "OnFailure" && allOk) return "Succeeded";
      return "Running"; // about to be restarted
    }
    if (!rt.initialized || rt.mains.some((c) => !c.everStarted)) return "Pending";
    return "Running";
  }

  // ------------------------------------------------------------ helpers

  /** The pod is being stopped, or the kubelet is (a method, so it is re-read after every await). */
  private halted(rt: PodRuntime): boolean {
    return rt.terminating || this.stopped;
  }

  private find(namespace: string, podName: string): PodRuntime | undefined {
    let found: PodRuntime | undefined;
    // The newest runtime wins when a pod was recreated under the same name.
    for (const rt of this.pods.values()) if (rt.pod.metadata.namespace === namespace && rt.pod.metadata.name === podName) found = rt;
    return found;
  }

  private track(p: Promise<unknown>): void {
    const t = p.catch((err: unknown) => { this.log(errText(err)); });
    this.tasks.add(t);
    void t.finally(() => this.tasks.delete(t));
  }

  private log(line: string): void {
    try {
      appendFileSync(this.logFile, `${new Date().toISOString()} ${line}\n`);
    } catch {
      // stateDir removed during stop(); nothing to log to.
    }
  }
}

/** The container's MySQL port: the port named "mysql", else the first, else 3306. */
function mariadbPort(c: Container): number {
  return (c.ports?.find((p) => p.name === "mysql") ?? c.ports?.[0])?.containerPort ?? 3306;
}

/** What the kubelet owns in a pod status, canonically (sorted keys, no empty values, no timestamps of conditions). */
function statusKey(s: PodStatus): string {
  const own = (s.conditions ?? [])
    .filter((c) => OWN_CONDITIONS.includes(c.type))
    .map((c) => ({ type: c.type, status: c.status, reason: c.reason, message: c.message }))
    .sort((a, b) => a.type.localeCompare(b.type));
  return JSON.stringify(
    canonical({
      phase: s.phase,
      podIP: s.podIP,
      hostIP: s.hostIP,
      startTime: s.startTime,
      conditions: own,
      containerStatuses: s.containerStatuses,
      initContainerStatuses: s.initContainerStatuses,
    }),
  );
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v !== null && typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v).sort()) {
      const x = canonical((v as Record<string, unknown>)[k]);
      if (x === undefined || x === null || x === "") continue;
      if (typeof x === "object" && !Array.isArray(x) && Object.keys(x).length === 0) continue;
      out[k] = x;
    }
    return out;
  }
  return v;
}

/** Register the node and start running this cluster's Pods. */
export async function startKubelet(opts: KubeletOptions): Promise<Kubelet> {
  const repoRoot = opts.repoRoot ?? path.resolve(import.meta.dirname, "../../..");
  const cli = path.join(repoRoot, "dist/cli/main.js");
  if (!existsSync(cli)) throw new Error(`${cli} is missing; run make build`);
  const stateDir = opts.stateDir ?? (await mkdtemp(path.join(tmpdir(), "replicator-kubelet-")));
  await mkdir(stateDir, { recursive: true });
  const api = await kubeHttp(opts.kubeConfig);
  const kubelet = new TestKubelet(
    api,
    opts.nodeName ?? "test-node",
    stateDir,
    cli,
    opts.images ?? DEFAULT_IMAGES,
    opts.pollMs ?? 500,
    opts.maxGracePeriodSeconds ?? 10,
    opts.keepStateDir ?? process.env.KEEP_KUBE_TMP === "1",
  );
  kubelet.entrypoints = Object.entries(opts.entrypoints ?? {}).map(([re, ep]) => [new RegExp(re), ep]);
  try {
    await kubelet.start();
  } catch (err) {
    await kubelet.stop();
    throw err;
  }
  return kubelet;
}
