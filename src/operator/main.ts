#!/usr/bin/env node
// The operator process: wiring only. Configuration comes from the
// environment (the Helm chart sets it).
import http from "node:http";
import { hostname } from "node:os";
import { createLogger } from "../lib/log.js";
import { oneLine } from "../lib/errors.js";
import { createKubeRest, fencedRest, loadKubeAccess } from "../kube/rest.js";
import { LeaderElector, REQUEST_TIMEOUT_MS, leaseClient } from "./leader.js";
import { Metrics } from "./metrics.js";
import { Operator } from "./operator.js";

const env = process.env;
const log = createLogger({ name: "replicator-operator", level: env.LOG_LEVEL ?? "info" });

async function main(): Promise<void> {
  // In a pod (and with a plain kubeconfig) this reads the credentials without loading client-node.
  const kc = await loadKubeAccess(env.KUBECONFIG);
  const apiRest = await createKubeRest(kc);
  // Leader election gets its own client, as client-go advises: a fresh
  // connection per request and a timeout under the renew deadline, so a
  // stalled pooled connection (or the operator's own traffic) cannot make it
  // miss the deadline. Seen in the watch-faults test: renewals queued on
  // stalled keep-alive sockets and the leader exited.
  const leaseRest = await createKubeRest(kc, { keepAlive: false, requestTimeoutMs: REQUEST_TIMEOUT_MS });
  const elector =
    env.LEADER_ELECT === "false"
      ? undefined
      : new LeaderElector(
          leaseClient(leaseRest, env.POD_NAMESPACE ?? env.LEADER_ELECTION_NAMESPACE ?? "default", env.LEADER_ELECTION_ID ?? "replicator-operator"),
          {
            namespace: env.POD_NAMESPACE ?? env.LEADER_ELECTION_NAMESPACE ?? "default",
            name: env.LEADER_ELECTION_ID ?? "replicator-operator",
            identity: env.POD_NAME ?? `${hostname()}-${process.pid}`,
          },
          log,
        );
  // Every write the operator makes (and every database session it opens) first checks it is still the leader.
  const rest = elector ? fencedRest(apiRest, (what) => { elector.fence(what); }) : apiRest;
  const metrics = new Metrics();
  const abort = new AbortController();
  const operator = new Operator(rest, log, {
    namespace: env.WATCH_NAMESPACE || undefined,
    addressMode: env.ADDRESS_MODE === "podIP" ? "podIP" : "dns",
    ...(elector ? { fence: (what: string) => { elector.fence(what); } } : {}),
    // Resync re-delivers cached objects (no API request): a safety net for lost handler work, not how changes arrive.
    resyncMs: Number(env.RESYNC_SECONDS ?? "300") * 1000,
    ...(env.WATCH_TIMEOUT_SECONDS ? { watchTimeoutSeconds: Number(env.WATCH_TIMEOUT_SECONDS) } : {}),
    jobs: {
      agentImage: env.AGENT_IMAGE ?? "ghcr.io/replicator-dev/replicator-agent:0.1.0",
      imagePullPolicy: env.AGENT_IMAGE_PULL_POLICY,
      backoffLimit: Number(env.JOB_BACKOFF_LIMIT ?? "2"),
      activeDeadlineSeconds: Number(env.JOB_DEADLINE_SECONDS ?? "21600"),
      ttlSecondsAfterFinished: Number(env.JOB_TTL_SECONDS ?? "86400"),
      logLevel: env.AGENT_LOG_LEVEL ?? "info",
    },
  }, metrics);

  let leader = false;
  const server = http.createServer((req, res) => {
    if (req.url === "/healthz") {
      res.writeHead(200).end("ok");
    } else if (req.url === "/readyz") {
      // Ready when caches are synced, or when waiting as a standby replica.
      const ok = !leader || operator.ready;
      res.writeHead(ok ? 200 : 503).end(ok ? "ok" : "caches not synced");
    } else if (req.url === "/metrics") {
      metrics.set("replicator_leader", {}, leader ? 1 : 0);
      operator.recordInformerStats();
      metrics.processMemory();
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4" }).end(metrics.render());
    } else {
      res.writeHead(404).end();
    }
  });
  const [host, port] = (env.HEALTH_ADDR ?? "0.0.0.0:8080").split(":");
  server.listen(Number(port), host);

  const shutdown = (sig: string): void => {
    log.info({ signal: sig }, "shutting down");
    abort.abort();
    server.close();
    void elector?.release();
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on("SIGTERM", () => { shutdown("SIGTERM"); });
  process.on("SIGINT", () => { shutdown("SIGINT"); });

  if (elector) {
    // Exit the moment a renew deadline passes, as controller-runtime does: a new process starts as a candidate.
    elector.onLost(() => {
      log.error({}, "lost the leader lease; exiting so that a new leader can take over");
      process.exit(1);
    });
    if (!(await elector.acquire(abort.signal))) return;
    void elector.renewLoop(abort.signal);
  }
  leader = true;
  log.info({ namespace: env.WATCH_NAMESPACE ?? "(all)" }, "operator started");
  await operator.run(abort.signal);
}

main().catch((err: unknown) => {
  log.error({ err: oneLine(err) }, "operator failed");
  process.exit(1);
});
