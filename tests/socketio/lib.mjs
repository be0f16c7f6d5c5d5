// Helpers for the socket.io-client suite: real `switchboard` processes on the
// Postgres and Redis of `scripts/services`, tokens signed like the server's
// tests, tenants made over REST, and promise-shaped socket helpers.
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import net from "node:net";
import { io } from "socket.io-client";

export const JWT_SECRET = "switchboard-test-secret-0123456789";
export const PLATFORM_KEY = "switchboard-test-platform-key-0123456789abcdef";
const BIN = process.env.SWITCHBOARD_BIN;
if (!BIN) throw new Error("SWITCHBOARD_BIN must name the switchboard binary");
for (const v of ["DATABASE_URL", "REDIS_URL"]) {
  if (!process.env[v]) throw new Error(`${v} must be set (eval "$(scripts/services env)")`);
}

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 JWT with `claims`, signed with `secret`. */
export function sign(claims, secret = JWT_SECRET) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64(claims);
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const now = () => Math.floor(Date.now() / 1000);

export function userToken(tenant, user = randomUUID(), role = "member", ttl = 3600) {
  return sign({ sub: user, tenant_id: tenant, tenant_role: role, exp: now() + ttl });
}

/** The platform operator's credential (sent as a bearer): the platform key. */
export function platformToken() {
  return PLATFORM_KEY;
}

/** A tenant-less `service_role` JWT (a Supabase service key): it is nobody. */
export function serviceRoleToken() {
  return sign({ sub: "operator", role: "service_role", exp: now() + 3600 });
}

/** A running switchboard process; `url` once it listens. */
export class Node {
  static async start(name, env = {}) {
    const child = spawn(BIN, ["serve"], {
      env: {
        ...process.env,
        PORT: "0",
        METRICS_ADDR: "127.0.0.1:0",
        HOST: "127.0.0.1",
        NODE_ID: name,
        JWT_SECRET,
        PLATFORM_KEY,
        RUST_LOG: process.env.SUITE_LOG ?? "warn,switchboard=info",
        ...env,
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    const node = new Node(name, child);
    node.url = await new Promise((resolve, reject) => {
      let buf = "";
      const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${node.log}`)), 30000);
      child.stderr.on("data", (chunk) => {
        node.log += chunk;
        buf += chunk;
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          try {
            const rec = JSON.parse(line);
            if (rec.fields?.message === "serving") {
              clearTimeout(timer);
              resolve(`http://${rec.fields.addr}`);
            }
          } catch {}
        }
      });
      child.on("exit", (code) => reject(new Error(`${name} exited with ${code}:\n${node.log}`)));
    });
    return node;
  }

  constructor(name, child) {
    this.name = name;
    this.child = child;
    this.log = "";
    this.exited = new Promise((r) => child.on("exit", (code, signal) => r({ code, signal })));
  }

  /** Stops the process with `signal` and waits for it to exit. */
  async stop(signal = "SIGTERM") {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exited;
    this.child.kill(signal);
    return this.exited;
  }

  async rest(method, path, token, body) {
    const res = await fetch(this.url + path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  async createTenant(name, limits) {
    const r = await this.rest("POST", "/api/v1/tenants", platformToken(), { name, ...(limits ? { limits } : {}) });
    if (r.status !== 201) throw new Error(`tenant not created: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.id;
  }
}

/** Connects and resolves with the socket, or rejects with the connect_error. */
export function connect(url, token, opts = {}) {
  const socket = io(url, {
    auth: token === undefined ? undefined : { token },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 5000,
    ...opts,
  });
  return new Promise((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** The next `event` on `socket`, or a rejection after `ms`. */
export function next(socket, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off(event, on);
      reject(new Error(`no ${event} within ${ms} ms`));
    }, ms);
    const on = (data) => {
      clearTimeout(timer);
      resolve(data);
    };
    socket.once(event, on);
  });
}

/** Collects every `event` on `socket` into an array. */
export function collect(socket, event) {
  const seen = [];
  socket.on(event, (data) => seen.push(data));
  return seen;
}

/** Resolves true if `event` arrives within `ms`, false otherwise. */
export async function arrives(socket, event, ms = 500) {
  try {
    await next(socket, event, ms);
    return true;
  } catch {
    return false;
  }
}

/** Whether offset `a` comes after `b` in the same topic epoch (`epoch:ms-seq`). */
export function offsetAfter(a, b) {
  const parse = (o) => {
    const [epoch, id] = o.split(":");
    const [ms, seq] = id.split("-").map(BigInt);
    return { epoch, ms, seq };
  };
  const [x, y] = [parse(a), parse(b)];
  if (x.epoch !== y.epoch) throw new Error(`offsets of two epochs: ${a} ${b}`);
  return x.ms > y.ms || (x.ms === y.ms && x.seq > y.seq);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value or `ms` pass. */
export async function eventually(check, ms = 5000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`${what} not reached within ${ms} ms`);
    await sleep(50);
  }
}

/**
 * A TCP load balancer on loopback, as an operator would put in front of the
 * nodes: each new connection goes to the first upstream whose /health/ready
 * answered 200 at the last check (every 100 ms).
 */
export async function loadBalancer(nodes) {
  const ready = new Map(nodes.map((n) => [n, true]));
  let stopped = false;
  const poll = async () => {
    while (!stopped) {
      for (const n of nodes) {
        try {
          const r = await fetch(n.url + "/health/ready", { signal: AbortSignal.timeout(500) });
          ready.set(n, r.status === 200);
        } catch {
          ready.set(n, false);
        }
      }
      await sleep(100);
    }
  };
  poll();
  const server = net.createServer((client) => {
    const target = nodes.find((n) => ready.get(n));
    if (!target) return client.destroy();
    const { hostname, port } = new URL(target.url);
    const upstream = net.connect(Number(port), hostname);
    client.pipe(upstream).pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () => {
      stopped = true;
      server.close();
    },
  };
}
