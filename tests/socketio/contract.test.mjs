// The Socket.IO protocol of docs/socketio.md, line by line, with the official socket.io-client against real
// switchboard processes sharing the Postgres and Redis of scripts/services.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  Node, arrives, collect, connect, eventually, loadBalancer, next, offsetAfter, platformToken, serviceRoleToken, sign, sleep, userToken,
} from "./lib.mjs";

let A, B, t1, t2;

before(async () => {
  [A, B] = await Promise.all([Node.start("suite-a"), Node.start("suite-b")]);
  t1 = await A.createTenant("suite one");
  t2 = await A.createTenant("suite two");
});

after(async () => {
  await Promise.all([A?.stop(), B?.stop()]);
});

async function refused(url, token, opts) {
  try {
    const s = await connect(url, token, opts);
    s.close();
  } catch (err) {
    return { message: err.message, code: err.data?.code, data: err.data };
  }
  assert.fail("the connection was accepted");
}

describe("handshake", () => {
  test("refusals carry the documented message and code", async () => {
    const user = randomUUID();
    assert.deepEqual(await refused(A.url, undefined).then((r) => [r.message, r.code]), ["unauthorized", "token_missing"]);
    const forged = sign({ sub: user, tenant_id: t1, exp: Math.floor(Date.now() / 1000) + 60 }, "another-secret-0123456789");
    assert.deepEqual(await refused(A.url, forged).then((r) => [r.message, r.code]), ["unauthorized", "token_invalid"]);
    const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.${Buffer.from(
      JSON.stringify({ sub: user, tenant_id: t1, exp: Math.floor(Date.now() / 1000) + 60 }),
    ).toString("base64url")}.`;
    assert.deepEqual(await refused(A.url, none).then((r) => [r.message, r.code]), ["unauthorized", "token_invalid"]);
    const expired = userToken(t1, user, "member", -600);
    assert.deepEqual(await refused(B.url, expired).then((r) => [r.message, r.code]), ["unauthorized", "token_expired"]);
    assert.deepEqual(
      await refused(A.url, userToken(randomUUID())).then((r) => [r.message, r.code]),
      ["forbidden", "tenant_unknown"],
    );
    assert.deepEqual(await refused(A.url, serviceRoleToken()).then((r) => [r.message, r.code]), ["forbidden", "tenant_required"]);
    const r = await refused(A.url, expired);
    assert.equal(typeof r.data.message, "string");
  });

  test("a token in the Authorization header works, over long-polling too", async () => {
    const s = await connect(A.url, undefined, {
      transports: ["polling"],
      extraHeaders: { authorization: `Bearer ${userToken(t1)}` },
    });
    assert.ok(s.connected);
    assert.equal(s.io.engine.transport.name, "polling");
    const ack = await s.emitWithAck("subscribe", { topic: "channel:poll" });
    assert.equal(ack.ok, true);
    const other = await connect(B.url, userToken(t1));
    await other.emitWithAck("subscribe", { topic: "channel:poll" });
    const got = next(s, "ping:poll");
    await other.emitWithAck("publish", { topic: "channel:poll", event: "ping:poll", data: { n: 1 } });
    assert.deepEqual((await got).data, { n: 1 });
    s.close();
    other.close();
  });

  test("a suspended tenant is refused, and its open sockets are closed", async () => {
    const t = await A.createTenant("to suspend");
    const open = await connect(B.url, userToken(t));
    const closed = next(open, "disconnect", 5000);
    const r = await A.rest("PATCH", `/api/v1/tenants/${t}`, platformToken(), { status: "suspended" });
    assert.equal(r.status, 200);
    await closed;
    const refusal = await eventually(async () => {
      const x = await refused(B.url, userToken(t)).catch(() => null);
      return x?.code === "tenant_suspended" ? x : null;
    }, 5000, "suspension seen by node B");
    assert.equal(refusal.message, "tenant_suspended");
  });

  test("the tenant's connection limit counts sockets on every node", async () => {
    const t = await A.createTenant("two sockets", { max_connections: 2 });
    const one = await connect(A.url, userToken(t));
    const two = await connect(B.url, userToken(t));
    const r = await refused(A.url, userToken(t));
    assert.deepEqual([r.message, r.code], ["over_capacity", "tenant_connection_limit"]);
    two.close();
    const three = await eventually(() => connect(B.url, userToken(t)).catch(() => null), 5000, "a freed slot");
    one.close();
    three.close();
  });

  test("a node that dies stops holding its share of the connection limit", async () => {
    const t = await A.createTenant("one socket", { max_connections: 1 });
    const C = await Node.start("suite-c-conn");
    try {
      await connect(C.url, userToken(t));
      assert.equal((await refused(A.url, userToken(t))).code, "tenant_connection_limit");
      await C.stop("SIGKILL");
      const s = await eventually(() => connect(A.url, userToken(t)).catch(() => null), 20000, "the dead node's share released");
      s.close();
    } finally {
      await C.stop("SIGKILL");
    }
  });
});

describe("events", () => {
  test("every ack has the documented shape", async () => {
    const s = await connect(A.url, userToken(t1));
    const sub = await s.emitWithAck("subscribe", { topic: "channel:acks" });
    assert.equal(sub.ok, true);
    assert.equal(sub.topic, "channel:acks");
    assert.equal(typeof sub.offset, "string");
    const dup = await s.emitWithAck("subscribe", { topic: "channel:acks" });
    assert.equal(dup.ok, true);
    const pub = await s.emitWithAck("publish", { topic: "channel:acks", event: "note", data: { a: 1 } });
    assert.equal(pub.ok, true);
    assert.equal(typeof pub.offset, "string");
    assert.deepEqual(await s.emitWithAck("unsubscribe", { topic: "channel:acks" }), { ok: true, topic: "channel:acks" });
    const codes = async (event, payload) => (await s.emitWithAck(event, payload)).error?.code;
    assert.equal(await codes("unsubscribe", { topic: "channel:acks" }), "not_subscribed");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: {} }), "not_subscribed");
    assert.equal(await codes("subscribe", { topic: "lobby" }), "unknown_topic");
    assert.equal(await codes("subscribe", { topic: "run:not-a-uuid" }), "unknown_topic");
    assert.equal(await codes("subscribe", "channel:acks"), "invalid_payload");
    assert.equal(await codes("subscribe", { topic: "channel:acks", extra: 1 }), "invalid_payload");
    assert.equal(await codes("subscribe", { topic: `run:${randomUUID()}` }), "forbidden");
    await s.emitWithAck("subscribe", { topic: "channel:acks" });
    assert.equal(await codes("publish", { topic: "channel:acks", event: "message:new", data: {} }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "bad name", data: {} }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: new Uint8Array([1, 2]) }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: {}, extra: 1 }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", data: {} }), "invalid_payload");
    const deep = (n) => (n === 0 ? 1 : [deep(n - 1)]);
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: deep(200) }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: { s: "\ud800" } }), "invalid_payload");
    assert.equal(await codes("publish", { topic: "channel:acks", event: "note", data: deep(100) }), undefined);
    assert.equal(await codes("publish", "channel:acks"), "invalid_payload");
    assert.equal(await codes("subscribe", { topic: "channel:acks", since: 42 }), "invalid_payload");
    assert.equal(await codes("presence:track", { topic: "channel:other", state: {} }), "not_subscribed");
    assert.equal(await codes("presence:list", { topic: "channel:other" }), "not_subscribed");
    assert.equal(await codes("presence:track", { topic: "channel:acks", state: "busy" }), "invalid_payload");
    assert.equal(await codes("presence:track", { topic: "nope" }), "unknown_topic");
    assert.equal(await codes("message:send", { conversation_id: randomUUID(), content: "hi" }), "invalid_payload");
    assert.equal(
      await codes("message:send", { conversation_id: "x", content: "hi", idempotency_key: "k" }),
      "invalid_payload",
    );
    assert.equal(
      await codes("message:send", { conversation_id: randomUUID(), content: "hi", idempotency_key: "k", metadata: [1] }),
      "invalid_payload",
    );
    assert.equal(
      await codes("message:send", { conversation_id: randomUUID(), content: "hi", idempotency_key: "k" }),
      "forbidden",
    );
    const err = next(s, "error");
    s.emit("no:such:event", {});
    assert.equal((await err).code, "invalid_payload");
    s.close();
  });

  test("publish reaches subscribers on both nodes, both ways, never the sender", async () => {
    const [a, b, c] = await Promise.all([connect(A.url, userToken(t1)), connect(B.url, userToken(t1)), connect(A.url, userToken(t1))]);
    for (const s of [a, b, c]) assert.equal((await s.emitWithAck("subscribe", { topic: "channel:both" })).ok, true);
    const [fromA, atB, atC] = [next(a, "typing", 700).catch(() => null), next(b, "typing"), next(c, "typing")];
    const data = { who: "a", n: [0, -1, 2.5, 1e-7, 9007199254740991], s: "é \u2028 \" \\ 😀", none: null, deep: [[{}], []] };
    const ack = await a.emitWithAck("publish", { topic: "channel:both", event: "typing", data });
    const got = await atB;
    assert.deepEqual(got, { topic: "channel:both", offset: ack.offset, data, from: got.from });
    assert.equal(got.from.kind, "user");
    assert.deepEqual((await atC).data, data);
    assert.equal(await fromA, null, "the sender got its own event");
    const [atA2, atC2] = [next(a, "typing"), next(c, "typing")];
    await b.emitWithAck("publish", { topic: "channel:both", event: "typing", data: { who: "b" } });
    assert.deepEqual([(await atA2).data, (await atC2).data], [{ who: "b" }, { who: "b" }]);
    for (const s of [a, b, c]) s.close();
  });

  test("the same channel name in two tenants is two topics", async () => {
    const [one, two] = await Promise.all([connect(A.url, userToken(t1)), connect(B.url, userToken(t2))]);
    const sender = await connect(B.url, userToken(t1));
    for (const s of [one, two, sender]) await s.emitWithAck("subscribe", { topic: "channel:general" });
    const leaked = arrives(two, "hello", 800);
    const delivered = next(one, "hello");
    await sender.emitWithAck("publish", { topic: "channel:general", event: "hello", data: {} });
    await delivered;
    assert.equal(await leaked, false);
    for (const s of [one, two, sender]) s.close();
  });

  test("another tenant's conversation cannot be subscribed to or written", async () => {
    const owner = userToken(t1, randomUUID(), "admin");
    const project = await A.rest("POST", "/api/v1/projects", owner, { name: "suite" });
    assert.equal(project.status, 201);
    const conv = await A.rest("POST", `/api/v1/projects/${project.body.id}/conversations`, owner, { title: "x" });
    assert.equal(conv.status, 201, JSON.stringify(conv.body));
    const outsider = await connect(B.url, userToken(t2));
    const sub = await outsider.emitWithAck("subscribe", { topic: `conversation:${conv.body.id}` });
    assert.equal(sub.error.code, "forbidden");
    const send = await outsider.emitWithAck("message:send", {
      conversation_id: conv.body.id, content: "hi", idempotency_key: "k1",
    });
    assert.equal(send.error.code, "forbidden");
    outsider.close();
  });

  test("message:send stores and broadcasts once per idempotency key", async () => {
    const admin = userToken(t1, randomUUID(), "admin");
    const project = await A.rest("POST", "/api/v1/projects", admin, { name: "messages" });
    const conv = await A.rest("POST", `/api/v1/projects/${project.body.id}/conversations`, admin, { title: "m" });
    const topic = `conversation:${conv.body.id}`;
    const watcher = await connect(B.url, userToken(t1, randomUUID(), "admin"));
    assert.equal((await watcher.emitWithAck("subscribe", { topic })).ok, true);
    const seen = collect(watcher, "message:new");
    const sender = await connect(A.url, admin);
    const payload = { conversation_id: conv.body.id, content: "hello", idempotency_key: `k-${randomUUID()}` };
    const first = await sender.emitWithAck("message:send", payload);
    const second = await sender.emitWithAck("message:send", payload);
    assert.equal(first.ok, true);
    assert.equal(second.message.id, first.message.id);
    assert.deepEqual([first.replayed, second.replayed], [false, true]);
    await eventually(() => seen.length >= 1, 3000, "message:new");
    await sleep(300);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].data.id, first.message.id);
    assert.equal(seen[0].topic, topic);
    const listed = await B.rest("GET", `/api/v1/conversations/${conv.body.id}/messages`, admin);
    assert.equal(listed.body.data.length, 1);
    const empty = await sender.emitWithAck("message:send", { ...payload, content: "" });
    assert.equal(empty.error.code, "invalid_payload");
    watcher.close();
    sender.close();
  });

  test("too many events are refused with retry_after_ms and the socket stays", async () => {
    const t = await A.createTenant("slow", { events_per_second: 5 });
    const s = await connect(A.url, userToken(t));
    await s.emitWithAck("subscribe", { topic: "channel:fast" });
    const acks = await Promise.all(
      Array.from({ length: 30 }, (_, i) => s.emitWithAck("publish", { topic: "channel:fast", event: "tick", data: { i } })),
    );
    const limited = acks.filter((a) => a.error?.code === "rate_limited");
    assert.ok(limited.length > 0, "nothing was limited");
    assert.ok(acks.some((a) => a.ok), "everything was limited");
    assert.ok(limited.every((a) => a.error.retry_after_ms > 0));
    assert.ok(s.connected);
    await sleep(limited[0].error.retry_after_ms + 1100);
    assert.equal((await s.emitWithAck("publish", { topic: "channel:fast", event: "tick", data: {} })).ok, true);
    s.close();
  });

  test("a tenant's events_per_second holds across sockets on both nodes", async () => {
    // 10/s for the tenant: each socket alone may burst 20 (twice the rate), so
    // only the cluster-wide budget can keep the two together near 10 + 10/s.
    const t = await A.createTenant("shared budget", { events_per_second: 10 });
    const [a, b] = await Promise.all([connect(A.url, userToken(t)), connect(B.url, userToken(t))]);
    for (const s of [a, b]) await s.emitWithAck("subscribe", { topic: "channel:shared" });
    const started = Date.now();
    const burst = (s) =>
      Promise.all(Array.from({ length: 20 }, () => s.emitWithAck("publish", { topic: "channel:shared", event: "x", data: {} })));
    const acks = (await Promise.all([burst(a), burst(b)])).flat();
    const seconds = (Date.now() - started) / 1000;
    const ok = acks.filter((x) => x.ok).length;
    assert.ok(ok >= 5, `only ${ok} accepted`);
    assert.ok(ok <= 10 + Math.ceil(10 * seconds) + 2, `${ok} accepted in ${seconds}s: the tenant budget was not shared`);
    assert.ok(acks.filter((x) => !x.ok).every((x) => x.error.code === "rate_limited"));
    a.close();
    b.close();
  });

  test("data over the tenant's max_payload_bytes is refused", async () => {
    const t = await A.createTenant("small", { max_payload_bytes: 1024 });
    const s = await connect(B.url, userToken(t));
    await s.emitWithAck("subscribe", { topic: "channel:big" });
    const ack = await s.emitWithAck("publish", { topic: "channel:big", event: "blob", data: { x: "y".repeat(2048) } });
    assert.equal(ack.error.code, "payload_too_large");
    assert.equal((await s.emitWithAck("publish", { topic: "channel:big", event: "blob", data: { x: "y" } })).ok, true);
    s.close();
  });

  test("a socket holds at most max_topics_per_socket topics", async () => {
    const t = await A.createTenant("few topics", { max_topics_per_socket: 2 });
    const s = await connect(A.url, userToken(t));
    for (const n of ["a", "b"]) assert.equal((await s.emitWithAck("subscribe", { topic: `channel:${n}` })).ok, true);
    assert.equal((await s.emitWithAck("subscribe", { topic: "channel:c" })).error.code, "forbidden");
    s.close();
  });
});

describe("presence", () => {
  test("join, list and leave reach every node, including when a node dies", async () => {
    const C = await Node.start("suite-c");
    try {
      const topic = "channel:presence";
      const watcher = await connect(A.url, userToken(t1));
      await watcher.emitWithAck("subscribe", { topic });
      const leaver = await connect(B.url, userToken(t1));
      await leaver.emitWithAck("subscribe", { topic });
      const doomed = await connect(C.url, userToken(t1), { reconnection: false });
      await doomed.emitWithAck("subscribe", { topic });

      const joined = next(watcher, "presence:join");
      assert.equal((await doomed.emitWithAck("presence:track", { topic, state: { name: "c" } })).ok, true);
      const join = await joined;
      assert.equal(join.topic, topic);
      assert.deepEqual(join.data.state, { name: "c" });
      const doomedConn = join.data.conn_id;
      await leaver.emitWithAck("presence:track", { topic, state: { name: "b" } });
      const list = await watcher.emitWithAck("presence:list", { topic });
      assert.deepEqual(list.entries.map((e) => e.state.name).sort(), ["b", "c"]);
      const rest = await B.rest("GET", `/api/v1/presence?topic=${topic}`, userToken(t1));
      assert.equal(rest.body.entries.length, 2);

      const left = next(watcher, "presence:leave");
      leaver.close();
      assert.deepEqual((await left).data.state, { name: "b" });

      const gone = next(watcher, "presence:leave", 25000);
      await C.stop("SIGKILL");
      assert.equal((await gone).data.conn_id, doomedConn);
      const after = await watcher.emitWithAck("presence:list", { topic });
      assert.deepEqual(after.entries, []);
      watcher.close();
    } finally {
      await C.stop("SIGKILL");
    }
  });
});

describe("recovery", () => {
  test("a reconnecting client resumes from its offset on the other node, in order, no duplicates", async () => {
    const topic = `channel:resume-${Date.now()}`;
    const pub = await connect(A.url, userToken(t1));
    await pub.emitWithAck("subscribe", { topic });
    const sub = await connect(A.url, userToken(t1));
    const first = await sub.emitWithAck("subscribe", { topic });
    const live = next(sub, "n");
    await pub.emitWithAck("publish", { topic, event: "n", data: { i: 0 } });
    const last = (await live).offset;
    sub.close();
    for (let i = 1; i <= 5; i++) await pub.emitWithAck("publish", { topic, event: "n", data: { i } });
    const again = await connect(B.url, userToken(t1));
    const got = collect(again, "n");
    const ack = await again.emitWithAck("subscribe", { topic, since: last });
    assert.equal(ack.recovered, true);
    await pub.emitWithAck("publish", { topic, event: "n", data: { i: 6 } });
    await eventually(() => got.length >= 6, 3000, "replay and live");
    await sleep(200);
    assert.deepEqual(got.map((e) => e.data.i), [1, 2, 3, 4, 5, 6]);
    assert.ok(offsetAfter(got[0].offset, last), "the replay starts after the client's offset");
    assert.ok(offsetAfter(last, first.offset));
    for (let k = 1; k < got.length; k++) assert.ok(offsetAfter(got[k].offset, got[k - 1].offset), "offsets increase");
    pub.close();
    again.close();
  });

  test("recovered is false once the history was trimmed past the offset", async () => {
    const D = await Node.start("suite-d", { TOPIC_HISTORY_SIZE: "3" });
    try {
      const topic = `channel:trim-${Date.now()}`;
      const pub = await connect(D.url, userToken(t1));
      await pub.emitWithAck("subscribe", { topic });
      const early = await pub.emitWithAck("publish", { topic, event: "n", data: { i: 0 } });
      for (let i = 1; i <= 5; i++) await pub.emitWithAck("publish", { topic, event: "n", data: { i } });
      const late = await connect(D.url, userToken(t1));
      const replayed = collect(late, "n");
      const ack = await late.emitWithAck("subscribe", { topic, since: early.offset });
      assert.equal(ack.recovered, false);
      await sleep(200);
      assert.equal(replayed.length, 0, "a partial replay was sent as if complete");
      const fresh = await connect(D.url, userToken(t1));
      const recent = await pub.emitWithAck("publish", { topic, event: "n", data: { i: 6 } });
      const ok = await fresh.emitWithAck("subscribe", { topic, since: recent.offset });
      assert.equal(ok.recovered, true);
      const bogus = await fresh.emitWithAck("subscribe", { topic: "channel:x", since: "garbage" });
      assert.equal(bogus.recovered, false);
      for (const s of [pub, late, fresh]) s.close();
    } finally {
      await D.stop();
    }
  });
});

describe("drain", () => {
  test("drained clients reconnect through the balancer to the other node and miss nothing", async () => {
    const [E, F] = await Promise.all([Node.start("suite-e", { DRAIN_SECONDS: "1" }), Node.start("suite-f")]);
    const lb = await loadBalancer([E, F]);
    try {
      const topic = `channel:drain-${Date.now()}`;
      const token = userToken(t1);
      // A client that follows docs/socketio.md: remember the last offset, leave on
      // system:drain after reconnect_after_ms, resubscribe with `since`.
      const client = await connect(lb.url, token, { reconnection: true, reconnectionDelay: 100 });
      let last;
      const got = [];
      client.on("tick", (e) => {
        got.push(e.data.i);
        last = e.offset;
      });
      const drains = [];
      client.on("system:drain", (d) => {
        drains.push(d);
        setTimeout(() => client.io.engine.close(), d.reconnect_after_ms);
      });
      const acks = [];
      client.on("connect", async () => acks.push(await client.emitWithAck("subscribe", { topic, since: last })));
      acks.push(await client.emitWithAck("subscribe", { topic }));
      const publisher = await connect(F.url, token);
      await publisher.emitWithAck("subscribe", { topic });
      let i = 0;
      let publishing = true;
      const pump = (async () => {
        while (publishing) {
          await publisher.emitWithAck("publish", { topic, event: "tick", data: { i: i++ } });
          await sleep(20);
        }
      })();
      await eventually(() => got.length > 5, 3000, "events before the drain");
      const r = await E.rest("POST", "/admin/drain", platformToken());
      assert.equal(r.status, 202);
      const ready = await fetch(E.url + "/health/ready").then((x) => x.status).catch(() => 503);
      assert.equal(ready, 503);
      const exit = await E.exited;
      assert.equal(exit.code, 0);
      await eventually(() => acks.length >= 2 && client.connected, 10000, "reconnected");
      const before = i;
      await eventually(() => got.includes(before + 5), 5000, "live events after the reconnect");
      publishing = false;
      await pump;
      await sleep(200);
      assert.equal(drains.length, 1);
      assert.equal(acks[1].recovered, true);
      assert.deepEqual(got, Array.from({ length: got.length }, (_, k) => k), "a gap or a duplicate");
      assert.equal(got.length, i);
      client.close();
      publisher.close();
    } finally {
      lb.close();
      await Promise.all([E.stop(), F.stop()]);
    }
  });
});
