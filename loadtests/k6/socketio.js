// Socket.IO under load with k6's websocket API, speaking Engine.IO 4 and
// Socket.IO 5 frames itself (no client library):
//
//   0{…}            Engine.IO open, from the server (sid, pingInterval)
//   40{"token":…}   Socket.IO CONNECT with the token as auth; 40{…} accepts,
//                   44{"message","data"} refuses
//   2 / 3           Engine.IO ping from the server / our pong
//   42N[event,arg]  an event with ack id N; 43N[reply] is its ack
//   42[event,arg]   an event without ack (what subscribers receive)
//
// Each iteration opens two sockets through the balancer (they may land on
// different nodes): a subscriber joins a fresh channel, a publisher sends
// EVENTS events to it with acks, PUBLISH_INTERVAL_MS apart. Every acked event
// must reach the subscriber: `sio_delivered` is the share that did, within
// DELIVERY_WAIT_MS of the last publish.
//
//   k6 run -e BASE_URL=… -e JWT_SECRET=… -e PLATFORM_KEY=… loadtests/k6/socketio.js
//
// VUS (10), DURATION (30s), EVENTS (20), P95_MS (100), P99_MS (250) shape it.
// Thresholds: handshakes accepted, acks ok and events delivered at 99% or
// more; publish→deliver and ack p95/p99 under P95_MS/P99_MS.
import { WebSocket } from "k6/experimental/websockets";
import { Counter, Rate, Trend } from "k6/metrics";
import { WS_URL, createTenant, envNumber, userToken, uuid } from "./lib.js";

const EVENTS = envNumber("EVENTS", 20);
const PUBLISH_INTERVAL_MS = envNumber("PUBLISH_INTERVAL_MS", 50);
const DELIVERY_WAIT_MS = envNumber("DELIVERY_WAIT_MS", 2000);
const P95 = envNumber("P95_MS", 100);
const P99 = envNumber("P99_MS", 250);

const connected = new Rate("sio_connected");
const acked = new Rate("sio_ack_ok");
const delivered = new Rate("sio_delivered");
const deliveryMs = new Trend("sio_delivery_ms", true);
const ackMs = new Trend("sio_ack_ms", true);
const refusals = new Counter("sio_refusals");

export const options = {
  scenarios: {
    pubsub: {
      executor: "constant-vus",
      vus: envNumber("VUS", 10),
      duration: __ENV.DURATION || "30s",
      gracefulStop: "10s",
    },
  },
  thresholds: {
    sio_connected: ["rate>0.99"],
    sio_ack_ok: ["rate>0.99"],
    sio_delivered: ["rate>0.99"],
    sio_delivery_ms: [`p(95)<${P95}`, `p(99)<${P99}`],
    sio_ack_ms: [`p(95)<${P95}`, `p(99)<${P99}`],
  },
};

export function setup() {
  return { tenant: createTenant(`k6-socketio-${Date.now()}`) };
}

/**
 * One Socket.IO client over a raw websocket. `on(event, fn)` for server
 * events, `emit(event, arg)` resolves with the ack, `ready` once connected.
 */
class Client {
  constructor(token) {
    this.handlers = {};
    this.acks = {};
    this.nextId = 0;
    this.ws = new WebSocket(`${WS_URL}/socket.io/?EIO=4&transport=websocket`);
    this.ready = new Promise((resolve, reject) => {
      this.ws.onmessage = (m) => this.frame(String(m.data), token, resolve, reject);
      this.ws.onerror = (e) => reject(new Error(`websocket: ${e.error}`));
      this.ws.onclose = () => reject(new Error("closed before connecting"));
    });
  }

  frame(data, token, resolve, reject) {
    const type = data[0];
    if (type === "0") {
      this.ws.send(`40${JSON.stringify({ token })}`);
    } else if (type === "2") {
      this.ws.send("3");
    } else if (data.startsWith("40")) {
      resolve(this);
    } else if (data.startsWith("44")) {
      const err = JSON.parse(data.slice(2));
      reject(new Error(`refused: ${err.message} ${err.data ? err.data.code : ""}`));
    } else if (data.startsWith("43")) {
      const m = /^43(\d+)(.*)$/.exec(data);
      const ack = this.acks[m[1]];
      delete this.acks[m[1]];
      if (ack) ack(JSON.parse(m[2])[0]);
    } else if (data.startsWith("42")) {
      const [event, arg] = JSON.parse(data.slice(data.indexOf("[")));
      const handler = this.handlers[event];
      if (handler) handler(arg);
    }
  }

  on(event, fn) {
    this.handlers[event] = fn;
  }

  emit(event, arg) {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.acks[id] = resolve;
      this.ws.send(`42${id}${JSON.stringify([event, arg])}`);
    });
  }

  close() {
    this.ws.onclose = null;
    this.ws.close();
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function timedEmit(client, event, arg) {
  const started = Date.now();
  const reply = await client.emit(event, arg);
  ackMs.add(Date.now() - started);
  acked.add(reply && reply.ok === true);
  return reply;
}

export default async function (data) {
  const topic = `channel:k6-${uuid()}`;
  let subscriber;
  let publisher;
  try {
    subscriber = await new Client(userToken(data.tenant)).ready;
    publisher = await new Client(userToken(data.tenant)).ready;
    connected.add(true, { role: "subscriber" });
    connected.add(true, { role: "publisher" });
  } catch (e) {
    connected.add(false);
    if (String(e).includes("refused")) refusals.add(1);
    if (subscriber) subscriber.close();
    if (publisher) publisher.close();
    return;
  }
  const seen = {};
  subscriber.on("tick", (e) => {
    if (!seen[e.data.n]) {
      seen[e.data.n] = true;
      deliveryMs.add(Date.now() - e.data.at);
    }
  });
  // Publishing needs the publisher on the topic too; it does not get its own events.
  const sub = await timedEmit(subscriber, "subscribe", { topic });
  const pub = await timedEmit(publisher, "subscribe", { topic });
  if (!sub || !sub.ok || !pub || !pub.ok) {
    subscriber.close();
    publisher.close();
    return;
  }
  const published = [];
  for (let n = 0; n < EVENTS; n++) {
    const reply = await timedEmit(publisher, "publish", { topic, event: "tick", data: { n, at: Date.now() } });
    if (reply && reply.ok) published.push(n);
    await sleep(PUBLISH_INTERVAL_MS);
  }
  for (let waited = 0; waited < DELIVERY_WAIT_MS && published.some((n) => !seen[n]); waited += 50) await sleep(50);
  for (const n of published) delivered.add(seen[n] === true);
  subscriber.close();
  publisher.close();
}
