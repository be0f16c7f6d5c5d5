// The baseline that loadtests/versus_node.sh measures Switchboard against: a
// plain Socket.IO 4 server on Node.js, as a team would write one for the same
// job, scaled out with @socket.io/redis-adapter on a shared Redis. It speaks
// the slice of Switchboard's Socket.IO contract that sb-bench drives
// (docs/socketio.md):
//
//   handshake    `auth.token`: an HS256 JWT with the shared secret, verified by
//                jsonwebtoken in an `io.use` middleware; refused as
//                `connect_error` { message, data: { code } } like Switchboard
//                (`token_missing`, `token_invalid`, `token_expired`,
//                `tenant_required`). The socket joins its tenant's room and
//                its user's room, as Switchboard's do.
//   subscribe    { topic } -> joins the tenant's room for the topic; ack
//                { ok: true, topic }
//   unsubscribe  { topic } -> leaves it; ack { ok: true, topic }
//   publish      { topic, event, data } on a joined topic -> `event` with
//                { topic, data, from: { kind: "user", user_id } } to the
//                topic's other subscribers on every node; ack { ok: true, topic }
//
// What it does not do, and Switchboard does on every publish: keep the
// topic's history (offsets, recovery), count tenant and socket rates and
// quotas, push back when the node is saturated. The classic Redis adapter
// cannot recover missed events (connection state recovery needs the Redis
// streams adapter). It follows Socket.IO's performance advice: bufferutil is
// installed (ws picks it up), and each session drops its handshake request.
//
// Environment: PORT (18291), HOST (127.0.0.1), REDIS_URL
// (redis://127.0.0.1:6379), JWT_SECRET (required), ADAPTER_KEY (the prefix of
// the adapter's Pub/Sub channels, `switchboard-baseline`: apart from
// Switchboard's). GET /health answers 200 once Redis is connected; SIGTERM or
// SIGINT closes everything and exits.
import { createSecretKey } from "node:crypto";
import http from "node:http";
import { createAdapter } from "@socket.io/redis-adapter";
import jwt from "jsonwebtoken";
import { createClient } from "redis";
import { Server } from "socket.io";

const PORT = Number(process.env.PORT ?? 18291);
const HOST = process.env.HOST ?? "127.0.0.1";
const REDIS_URL = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const SECRET = process.env.JWT_SECRET;
const CHANNELS = process.env.ADAPTER_KEY ?? "switchboard-baseline";
if (!SECRET) {
  console.error("baseline: JWT_SECRET is required");
  process.exit(2);
}

// A KeyObject, made once: given the string, jsonwebtoken 9 tries to parse it
// as a public key on every verify first, which costs most of a handshake
// (auth0/node-jsonwebtoken#966, #1046).
const SECRET_KEY = createSecretKey(Buffer.from(SECRET));

const TOPIC = /^[a-z]+:[A-Za-z0-9_.-]{1,64}$/;
const EVENT = /^[A-Za-z0-9_.:-]{1,64}$/;
const RESERVED = new Set(["connect", "connect_error", "disconnect", "disconnecting", "error", "newListener", "removeListener"]);

const pubClient = createClient({ url: REDIS_URL });
const subClient = pubClient.duplicate();
pubClient.on("error", (e) => console.error("baseline: redis:", e.message));
subClient.on("error", (e) => console.error("baseline: redis:", e.message));
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.writeHead(200, { "content-type": "text/plain" }).end("ok");
  } else {
    res.writeHead(404).end();
  }
});
const io = new Server(httpServer, {
  adapter: createAdapter(pubClient, subClient, { key: CHANNELS }),
});

// The handshake's HTTP request is not needed once the session is open
// (socket.handshake keeps what the server reads).
io.engine.on("connection", (rawSocket) => {
  rawSocket.request = null;
});

function refusal(message, code, detail) {
  const err = new Error(message);
  err.data = { code, message: detail };
  return err;
}

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string" || !token) {
    return next(refusal("unauthorized", "token_missing", "no token in auth.token"));
  }
  let claims;
  try {
    claims = jwt.verify(token, SECRET_KEY, { algorithms: ["HS256"] });
  } catch (e) {
    return e.name === "TokenExpiredError"
      ? next(refusal("unauthorized", "token_expired", "the token has expired"))
      : next(refusal("unauthorized", "token_invalid", "the token is not valid"));
  }
  if (typeof claims.tenant_id !== "string" || typeof claims.sub !== "string") {
    return next(refusal("forbidden", "tenant_required", "the token names no tenant or user"));
  }
  socket.data.tenant = claims.tenant_id;
  socket.data.user = claims.sub;
  next();
});

const fail = (code, message) => ({ ok: false, error: { code, message } });
// A topic's room is the tenant's: no topic name reaches another tenant.
const roomOf = (socket, topic) => `${socket.data.tenant}/${topic}`;
const answer = (ack) => (typeof ack === "function" ? ack : () => {});

io.on("connection", (socket) => {
  const { tenant, user } = socket.data;
  socket.join([`tenant:${tenant}`, `user:${tenant}/${user}`]);

  socket.on("subscribe", (payload, ack) => {
    ack = answer(ack);
    const topic = payload?.topic;
    if (typeof topic !== "string" || !TOPIC.test(topic)) return ack(fail("unknown_topic", "not a topic"));
    socket.join(roomOf(socket, topic));
    ack({ ok: true, topic });
  });

  socket.on("unsubscribe", (payload, ack) => {
    ack = answer(ack);
    const topic = payload?.topic;
    if (typeof topic !== "string" || !socket.rooms.has(roomOf(socket, topic))) {
      return ack(fail("not_subscribed", "not subscribed to that topic"));
    }
    socket.leave(roomOf(socket, topic));
    ack({ ok: true, topic });
  });

  socket.on("publish", (payload, ack) => {
    ack = answer(ack);
    const { topic, event, data } = payload ?? {};
    if (typeof topic !== "string" || !TOPIC.test(topic)) return ack(fail("unknown_topic", "not a topic"));
    if (typeof event !== "string" || !EVENT.test(event) || RESERVED.has(event)) {
      return ack(fail("invalid_payload", "not an event name a client may send"));
    }
    const room = roomOf(socket, topic);
    if (!socket.rooms.has(room)) return ack(fail("not_subscribed", "subscribe to the topic first"));
    // To the room on every node, except this socket.
    socket.to(room).emit(event, { topic, data, from: { kind: "user", user_id: user } });
    ack({ ok: true, topic });
  });
});

httpServer.listen(PORT, HOST);

let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  io.close();
  await Promise.allSettled([pubClient.quit(), subClient.quit()]);
  process.exit(0);
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
