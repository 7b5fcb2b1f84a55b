// A fault-injection proxy in front of the test S3 server (versitygw), on
// loopback. Requests are forwarded byte for byte (the Host header the SDK
// signed included, so SigV4 still verifies upstream); rules make chosen
// requests fail: an S3 error status, a reset connection, a stall, a
// response body cut after N bytes, a request body the server gets late, or
// one whose first byte was changed on the way. With `tls` it serves https (the
// client's TLS ends here; upstream is plain http). Used by the storage fault
// tests and by the CLI tests (run the CLI with `--s3-endpoint <proxy.endpoint>`).
import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { freePort } from "./ports.js";

export type FaultAction =
  | { kind: "status"; status: number; code?: string } // S3 XML error body: InternalError, SlowDown, ServiceUnavailable...
  | { kind: "reset" } // destroy the client socket before any response
  | { kind: "stall"; ms?: number } // hold the request (forever if ms undefined, until clear()/close())
  | { kind: "truncate"; bytes: number } // forward the upstream response but cut the body after N bytes (then destroy)
  | { kind: "corrupt" } // forward the request with the first byte of its body inverted: corruption in transit, which the server's checks must refuse
  | { kind: "late-body"; ms: number }; // the head upstream now, the body ms after the client sent it (whole, even if the client gave up): a request kept in flight that still reaches the server

export interface FaultRule {
  /** LIST = GET on the bucket (list-type/prefix query); POST = multipart create/complete and DeleteObjects. */
  op?: "GET" | "PUT" | "HEAD" | "LIST" | "DELETE" | "POST";
  /** Matched against the object key (path after /bucket/); for LIST, against the `prefix` query. */
  key?: string | RegExp;
  /** Probability 0..1 (default 1), from a seeded PRNG so runs are repeatable. */
  fraction?: number;
  /** Apply at most N times, then the rule is spent. */
  times?: number;
  action: FaultAction;
}

export interface ProxyRequest {
  method: string;
  op: string;
  key: string;
  /** The path and query as sent, and the request's headers. */
  url: string;
  headers: http.IncomingHttpHeaders;
  status?: number;
  fault?: string;
  /** performance.now() when the request came in, and when its answer's head went out (forwarded or injected). */
  at: number;
  answeredAt?: number;
  /** Response body bytes sent to the client so far. */
  bytes?: number;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT, or https:// with `tls` */
  endpoint: string;
  /** Add a rule (checked in order, first match applies); returns a remover. */
  add(rule: FaultRule): () => void;
  /** Remove all rules and release stalled requests (they are forwarded). */
  clear(): void;
  /** Every request seen, for assertions. */
  readonly requests: ProxyRequest[];
  close(): Promise<void>;
}

const defaultCodes: Record<number, string> = {
  400: "BadRequest",
  403: "AccessDenied",
  404: "NoSuchKey",
  409: "OperationAborted",
  412: "PreconditionFailed",
  429: "SlowDown",
  500: "InternalError",
  502: "BadGateway",
  503: "ServiceUnavailable",
  504: "GatewayTimeout",
};

/** mulberry32: a small seeded PRNG, so a fraction of faults lands on the same requests every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The S3 operation and key of a path-style request. */
export function classify(method: string, url: string): { op: string; key: string } {
  const u = new URL(url, "http://proxy");
  const parts = u.pathname.replace(/^\/+/, "").split("/");
  const rawKey = parts.slice(1).join("/");
  let key: string;
  try {
    key = decodeURIComponent(rawKey);
  } catch {
    key = rawKey;
  }
  const m = method.toUpperCase();
  if (m === "GET" && key === "") {
    return { op: "LIST", key: u.searchParams.get("prefix") ?? "" };
  }
  return { op: m, key };
}

function matches(rule: FaultRule, op: string, key: string): boolean {
  if (rule.op !== undefined && rule.op !== op) return false;
  if (rule.key !== undefined) {
    if (typeof rule.key === "string" ? rule.key !== key : !rule.key.test(key)) return false;
  }
  return true;
}

function describe(a: FaultAction): string {
  switch (a.kind) {
    case "status":
      return `status:${a.status}${a.code ? `:${a.code}` : ""}`;
    case "reset":
      return "reset";
    case "stall":
      return `stall${a.ms !== undefined ? `:${a.ms}` : ""}`;
    case "truncate":
      return `truncate:${a.bytes}`;
    case "late-body":
      return `late-body:${a.ms}`;
    case "corrupt":
      return "corrupt";
  }
}

interface Entry {
  rule: FaultRule;
  left: number;
}

export async function startFaultProxy(upstream: string, opts: { seed?: number; tls?: { key: string; cert: string } } = {}): Promise<FaultProxy> {
  const up = new URL(upstream);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const random = prng(opts.seed ?? 1);
  let rules: Entry[] = [];
  const requests: ProxyRequest[] = [];
  const stalled = new Set<{ release: () => void; abort: () => void }>();
  const sockets = new Set<Socket>();

  const forward = (req: http.IncomingMessage, res: http.ServerResponse, log: ProxyRequest, truncateAt?: number, corrupt = false): void => {
    const headers = { ...req.headers };
    const upReq = http.request(
      { host: up.hostname, port: up.port, method: req.method, path: req.url, headers, agent },
      (upRes) => {
        log.status = upRes.statusCode;
        log.answeredAt = performance.now();
        res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders);
        log.bytes = 0;
        upRes.on("data", (chunk: Buffer) => {
          log.bytes = (log.bytes ?? 0) + Math.min(chunk.length, truncateAt === undefined ? chunk.length : Math.max(0, truncateAt - (log.bytes ?? 0)));
        });
        if (truncateAt === undefined) {
          upRes.pipe(res);
          upRes.on("error", () => res.destroy());
          return;
        }
        let sent = 0;
        let cut = false;
        upRes.on("data", (chunk: Buffer) => {
          if (cut) return;
          const room = truncateAt - sent;
          if (chunk.length < room) {
            sent += chunk.length;
            res.write(chunk);
            return;
          }
          cut = true;
          upRes.destroy();
          const part = chunk.subarray(0, Math.max(0, room));
          const kill = (): void => {
            res.socket?.destroy();
            res.destroy();
          };
          if (part.length > 0) {
            res.write(part, kill);
          } else {
            res.flushHeaders();
            setImmediate(kill);
          }
        });
        upRes.on("end", () => {
          if (!cut) res.end();
        });
        upRes.on("error", () => res.destroy());
      },
    );
    upReq.on("error", () => {
      // The upstream is down (killed, restarting): the client sees its connection reset.
      log.fault ??= "upstream-error";
      req.socket.destroy();
    });
    if (corrupt) {
      let changed = false;
      req.on("data", (c: Buffer) => {
        if (!changed && c.length > 0) {
          c = Buffer.from(c);
          c[0] = (c[0] ?? 0) ^ 0xff;
          changed = true;
        }
        upReq.write(c);
      });
      req.on("end", () => upReq.end());
    } else {
      req.pipe(upReq);
    }
    req.on("error", () => upReq.destroy());
    res.on("close", () => {
      if (!res.writableFinished) upReq.destroy();
    });
  };

  const handle = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const { op, key } = classify(req.method ?? "GET", req.url ?? "/");
    const log: ProxyRequest = { method: req.method ?? "GET", op, key, url: req.url ?? "/", headers: req.headers, at: performance.now() };
    requests.push(log);
    let action: FaultAction | undefined;
    for (const e of rules) {
      if (e.left <= 0 || !matches(e.rule, op, key)) continue;
      const f = e.rule.fraction ?? 1;
      if (f < 1 && random() >= f) continue;
      e.left--;
      action = e.rule.action;
      break;
    }
    if (!action) {
      forward(req, res, log);
      return;
    }
    log.fault = describe(action);
    switch (action.kind) {
      case "reset":
        req.socket.destroy();
        return;
      case "status": {
        const code = action.code ?? defaultCodes[action.status] ?? "InternalError";
        const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>injected fault: ${code}</Message><Resource>/${key}</Resource><RequestId>fault-proxy</RequestId></Error>`;
        log.status = action.status;
        // Read the request body first so the client is not cut off mid-upload.
        req.resume();
        req.once("end", () => {
          log.answeredAt = performance.now();
          res.writeHead(action.status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body), "x-amz-request-id": "fault-proxy" });
          res.end(body);
        });
        return;
      }
      case "truncate":
        forward(req, res, log, action.bytes);
        return;
      case "corrupt":
        forward(req, res, log, undefined, true);
        return;
      case "late-body": {
        const chunks: Buffer[] = [];
        const upReq = http.request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: { ...req.headers }, agent: false }, (upRes) => {
          log.status = upRes.statusCode;
          log.answeredAt = performance.now();
          if (res.destroyed) {
            upRes.resume();
            return;
          }
          res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, upRes.rawHeaders);
          upRes.pipe(res);
        });
        upReq.on("error", () => req.socket.destroy());
        upReq.flushHeaders();
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => setTimeout(() => upReq.end(Buffer.concat(chunks)), action.ms));
        req.on("close", () => {
          if (!req.complete) upReq.destroy();
        });
        return;
      }
      case "stall": {
        let timer: NodeJS.Timeout | undefined;
        const entry = {
          release: () => {
            if (timer) clearTimeout(timer);
            stalled.delete(entry);
            if (!req.socket.destroyed) forward(req, res, log);
          },
          abort: () => {
            if (timer) clearTimeout(timer);
            stalled.delete(entry);
            req.socket.destroy();
          },
        };
        stalled.add(entry);
        req.socket.once("close", () => {
          if (timer) clearTimeout(timer);
          stalled.delete(entry);
        });
        if (action.ms !== undefined) timer = setTimeout(entry.release, action.ms);
        return;
      }
    }
  };
  const server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handle) : http.createServer(handle);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  });
  server.keepAliveTimeout = 5_000;

  const port = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      resolve();
    });
  });

  return {
    endpoint: `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`,
    requests,
    add(rule) {
      const e: Entry = { rule, left: rule.times ?? Number.POSITIVE_INFINITY };
      rules.push(e);
      return () => {
        rules = rules.filter((x) => x !== e);
      };
    },
    clear() {
      rules = [];
      for (const s of [...stalled]) s.release();
    },
    async close() {
      rules = [];
      for (const s of [...stalled]) s.abort();
      for (const s of sockets) s.destroy();
      agent.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
    },
  };
}
