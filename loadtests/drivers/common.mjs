// What the rolling-restart and canary drivers share: tokens, REST calls through
// the balancer, a tenant with room for the load, and a subscriber that behaves
// as the contract asks a client to (docs/socketio.md): it remembers the last
// offset of each topic, resubscribes with `since` after every reconnect, leaves
// on system:drain after reconnect_after_ms, and retries a refused handshake
// after a pause (socket.io-client does not retry those by itself).
import { createHmac, randomUUID } from "node:crypto";
import http from "node:http";
import { io } from "socket.io-client";

const b64 = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/** An HS256 user token for `tenant`, signed with `secret`. */
export function userToken(secret, tenant, role = "member", user = randomUUID(), ttl = 3600) {
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub: user, tenant_id: tenant, tenant_role: role, exp: Math.floor(Date.now() / 1000) + ttl });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** One REST call; never throws: `{ status, body, error?, ms }` (status 0 on a network error). */
export async function rest(base, method, path, credential, body, headers = {}) {
  const started = performance.now();
  try {
    const res = await fetch(base + path, {
      method,
      headers: { authorization: `Bearer ${credential}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(10000),
    });
    const text = await res.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = text;
    }
    return { status: res.status, body: parsed, ms: performance.now() - started };
  } catch (e) {
    return { status: 0, body: null, error: String(e.cause?.code ?? e.name ?? e), ms: performance.now() - started };
  }
}

/** A tenant whose limits leave room for the load; its id. */
export async function createTenant(base, platformKey, name) {
  const limits = {
    max_connections: 100000,
    events_per_second: 100000,
    http_requests_per_second: 100000,
    max_topics_per_socket: 100,
  };
  const r = await rest(base, "POST", "/api/v1/tenants", platformKey, { name, limits });
  if (r.status !== 201) throw new Error(`tenant not created: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.id;
}

/**
 * The loopback address client `i` connects from. The nodes limit new
 * Socket.IO sessions per client address (HAProxy passes it on in
 * X-Forwarded-For), so a load generator that is many clients must not come
 * from one address: the whole of 127.0.0.0/8 reaches the loopback interface.
 */
export function clientAddress(i) {
  return `127.1.${Math.floor(i / 250) % 250}.${(i % 250) + 1}`;
}

/** socket.io-client options that make it connect from `address`. */
export function fromAddress(address) {
  if (!address) return {};
  return { localAddress: address, agent: new http.Agent({ localAddress: address, keepAlive: true }) };
}

/** Offsets are `epoch:ms-seq`; within an epoch they order by (ms, seq). */
export function compareOffsets(a, b) {
  const [ea, ida] = a.split(":");
  const [eb, idb] = b.split(":");
  if (ea !== eb) return ea < eb ? -1 : 1;
  const [ma, sa] = ida.split("-").map(BigInt);
  const [mb, sb] = idb.split("-").map(BigInt);
  if (ma !== mb) return ma < mb ? -1 : 1;
  return sa === sb ? 0 : sa < sb ? -1 : 1;
}

/**
 * A socket.io-client subscriber of `topics`, counting what it receives. Each
 * event is known by `data.id` (a message's id, or the id a writer put in a
 * broadcast): `received[topic]` is the set of ids that arrived, `duplicates`
 * counts ids that arrived again, `outOfOrder` events whose offset was not
 * after the topic's last one.
 */
export class Subscriber {
  constructor(url, token, topics, { transport = "websocket", events = [], address } = {}) {
    this.transport = transport;
    this.topics = topics;
    this.last = {};
    this.received = Object.fromEntries(topics.map((t) => [t, new Set()]));
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.connects = 0;
    this.drains = 0;
    this.refusals = {};
    this.unrecovered = 0;
    this.subscribeErrors = {};
    this.ready = new Promise((resolve) => (this._ready = resolve));
    this.socket = io(url, {
      auth: { token },
      transports: [transport],
      // Long-polling keeps the balancer's cookie within an Engine.IO session.
      withCredentials: true,
      forceNew: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 1000,
      randomizationFactor: 0.5,
      timeout: 5000,
      ...fromAddress(address),
    });
    this.socket.on("connect", () => this.onConnect());
    this.socket.on("connect_error", (err) => {
      const code = err.data?.code ?? "transport";
      this.refusals[code] = (this.refusals[code] ?? 0) + 1;
      // A refusal by the server (err.data set) ends socket.io-client's own
      // retries; a client that follows the contract tries again shortly.
      if (!this.socket.active && !this.closed) setTimeout(() => this.socket.connect(), 200 + Math.random() * 300);
    });
    this.socket.on("system:drain", (d) => {
      this.drains++;
      setTimeout(() => this.socket.io.engine?.close(), d.reconnect_after_ms);
    });
    for (const name of events) this.socket.on(name, (e) => this.onEvent(e));
  }

  async onConnect() {
    this.connects++;
    for (const topic of this.topics) {
      const since = this.last[topic];
      let ack;
      try {
        ack = await this.socket.timeout(5000).emitWithAck("subscribe", since ? { topic, since } : { topic });
      } catch {
        // The socket went away before the ack; the next connect resubscribes.
        return;
      }
      if (!ack.ok) {
        const code = ack.error?.code ?? "unknown";
        this.subscribeErrors[code] = (this.subscribeErrors[code] ?? 0) + 1;
      } else if (since && ack.recovered === false) {
        this.unrecovered++;
      }
    }
    this._ready();
  }

  onEvent(e) {
    const seen = this.received[e.topic];
    if (!seen) return;
    const id = e.data?.id ?? e.offset;
    if (seen.has(id)) {
      this.duplicates++;
      return;
    }
    seen.add(id);
    const last = this.last[e.topic];
    if (last !== undefined && compareOffsets(e.offset, last) <= 0) {
      this.outOfOrder++;
      return;
    }
    this.last[e.topic] = e.offset;
  }

  close() {
    this.closed = true;
    this.socket.close();
  }
}

/** Percentile `p` (0-100) of numbers. */
export function percentile(values, p) {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
