// An agent worker records a run over REST with an API key while people watch it
// live with the official socket.io-client, on two switchboard nodes sharing the
// Postgres and Redis of scripts/services: a run with 3 steps, 2 tool calls and
// 500 streamed deltas; one watcher drops mid-stream and resumes on the other
// node; the worker re-sends requests with the same idempotency keys to the other
// node; another tenant watches the same topic name.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Node, connect, eventually, offsetAfter, sleep, userToken } from "./lib.mjs";

let A, B;

before(async () => {
  [A, B] = await Promise.all([Node.start("runs-a"), Node.start("runs-b")]);
});

after(async () => {
  await Promise.all([A?.stop(), B?.stop()]);
});

/** A REST call as the worker (an API key in X-API-Key) or a user (a token), with an optional idempotency key. */
async function api(node, key, method, path, body, idem) {
  const auth = key.startsWith("sb_") ? { "x-api-key": key } : { authorization: `Bearer ${key}` };
  const headers = { ...auth, "content-type": "application/json" };
  if (idem) headers["idempotency-key"] = idem;
  const res = await fetch(node.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, replayed: res.headers.get("idempotent-replayed") === "true" };
}

/** A tenant (roomy limits, so the run is not throttled), its worker key and a project. */
async function tenantWithWorker(name) {
  const tenant = await A.createTenant(name, { http_requests_per_second: 2000, events_per_second: 20000 });
  const admin = userToken(tenant, undefined, "admin");
  const key = await A.rest("POST", "/api/v1/api-keys", admin, { name: "worker", scopes: ["read", "write"] });
  assert.equal(key.status, 201);
  const project = await A.rest("POST", "/api/v1/projects", admin, { name: "agents" });
  assert.equal(project.status, 201);
  return { tenant, admin, key: key.body.key, project: project.body.id };
}

/** Every event `socket` receives, in arrival order, as `{ event, ...envelope }`. */
function record(socket) {
  const seen = [];
  socket.onAny((event, envelope) => seen.push({ event, ...envelope }));
  return seen;
}

/** What an event says, in one comparable line. */
function describeEvent(e) {
  switch (e.event) {
    case "run:updated":
      return `updated ${e.data.status}`;
    case "run:delta":
      return `delta ${e.data.step} ${e.data.text}`;
    case "run:step":
      return e.data.step ? `step ${e.data.step.seq} ${e.data.step.content_length}` : `tool ${e.data.tool_call.name}`;
    default:
      return `${e.event}?`;
  }
}

test("a worker streams a run; two watchers on two nodes see every event once and in order, across a reconnect", async () => {
  const { tenant, admin, key, project } = await tenantWithWorker("runs worker");
  const other = await tenantWithWorker("runs other");
  const nodes = [A, B];
  // Each retry goes to the node the first try did not.
  const twice = async (i, method, path, body, idem) => {
    const first = await api(nodes[i % 2], key, method, path, body, idem);
    const again = await api(nodes[(i + 1) % 2], key, method, path, body, idem);
    assert.equal(again.status, 200, `${path} retried: ${JSON.stringify(again.body)}`);
    assert.ok(again.replayed);
    return [first, again];
  };

  const [created, replayedRun] = await twice(0, "POST", "/api/v1/runs", { project_id: project, agent: "writer", input: { topic: "tides" } }, "run-1");
  assert.equal(created.status, 201);
  assert.equal(replayedRun.body.id, created.body.id, "the retried create answers the same run");
  const run = created.body.id;
  const topic = `run:${run}`;

  const w1 = await connect(A.url, userToken(tenant));
  const w2 = await connect(B.url, userToken(tenant));
  const spy = await connect(B.url, userToken(other.tenant, undefined, "owner"));
  const [seen1, seen2first, spied] = [record(w1), record(w2), record(spy)];
  for (const s of [w1, w2]) assert.equal((await s.emitWithAck("subscribe", { topic })).ok, true);
  assert.equal((await w1.emitWithAck("subscribe", { topic: `project:${project}` })).ok, true);
  const refused = await spy.emitWithAck("subscribe", { topic });
  assert.equal(refused.error?.code, "forbidden", "another tenant cannot subscribe to the run");
  const write = await w1.emitWithAck("publish", { topic, event: "note", data: {} });
  assert.equal(write.error?.code, "forbidden", "clients do not publish on run topics");

  const expected = [];
  assert.equal((await api(B, key, "PATCH", `/api/v1/runs/${run}`, { status: "running" })).status, 200);
  expected.push("updated running");

  const deltasPerStep = [200, 150, 150];
  const BATCH = 25;
  const usage = { tokens_in: 0, tokens_out: 0, cost: 0 };
  let w2second = null;
  let seen2second = [];
  let batchNo = 0;
  for (let s = 1; s <= 3; s++) {
    const texts = Array.from({ length: deltasPerStep[s - 1] }, (_, i) => `s${s}t${i} `);
    for (let b = 0; b < texts.length; b += BATCH) {
      const batch = texts.slice(b, b + BATCH);
      const body = { step: s, deltas: batch.map((text) => ({ text })) };
      const idem = `deltas-${s}-${b}`;
      const sent = await api(nodes[batchNo % 2], key, "POST", `/api/v1/runs/${run}/deltas`, body, idem);
      assert.equal(sent.status, 202, JSON.stringify(sent.body));
      assert.equal(sent.body.count, batch.length);
      if (batchNo % 4 === 3) {
        const again = await api(nodes[(batchNo + 1) % 2], key, "POST", `/api/v1/runs/${run}/deltas`, body, idem);
        assert.equal(again.status, 200);
        assert.equal(again.body.last_offset, sent.body.last_offset, "a re-sent batch answers its first offsets");
      }
      expected.push(...batch.map((t) => `delta ${s} ${t}`));
      batchNo++;

      // Mid-way through step 2, watcher 2 drops, and comes back to the other
      // node while the worker keeps streaming.
      if (s === 2 && b === 50) {
        await eventually(() => seen2first.length >= expected.length, 5000, "watcher 2 caught up before dropping");
        w2.close();
      }
      if (s === 2 && b === 100) {
        const last = seen2first.at(-1).offset;
        w2second = await connect(A.url, userToken(tenant));
        seen2second = record(w2second);
        const ack = await w2second.emitWithAck("subscribe", { topic, since: last });
        assert.equal(ack.recovered, true, JSON.stringify(ack));
      }
    }
    const content = texts.join("");
    const step = { kind: "message", content, tokens_in: 100 * s, tokens_out: texts.length, cost_usd: `0.00${s}5` };
    const [stored] = await twice(s, "POST", `/api/v1/runs/${run}/steps`, step, `step-${s}`);
    assert.equal(stored.status, 201);
    assert.equal(stored.body.seq, s);
    usage.tokens_in += 100 * s;
    usage.tokens_out += texts.length;
    usage.cost += Number(`0.00${s}5`);
    expected.push(`step ${s} ${content.length}`);
    if (s < 3) {
      const call = { name: `tool-${s}`, arguments: { q: s }, result: { ok: true }, latency_ms: 10 * s, step: s };
      const [recorded] = await twice(s, "POST", `/api/v1/runs/${run}/tool-calls`, call, `tool-${s}`);
      assert.equal(recorded.status, 201);
      expected.push(`tool tool-${s}`);
    }
  }
  const done = await api(A, key, "PATCH", `/api/v1/runs/${run}`, { status: "succeeded", output: { words: 500 } });
  assert.equal(done.status, 200);
  expected.push("updated succeeded");

  const onRun = (seen) => seen.filter((e) => e.topic === topic);
  const seen2 = () => [...onRun(seen2first), ...onRun(seen2second)];
  await eventually(() => onRun(seen1).length >= expected.length && seen2().length >= expected.length, 10000, "every event at both watchers");
  await sleep(300);
  for (const [name, events] of [["watcher 1", onRun(seen1)], ["watcher 2", seen2()]]) {
    assert.deepEqual(events.map(describeEvent), expected, `${name} saw every event exactly once, in order`);
    for (let i = 1; i < events.length; i++) {
      assert.ok(offsetAfter(events[i].offset, events[i - 1].offset), `${name}: offsets increase at ${i}`);
    }
    assert.ok(events.every((e) => e.event !== "run:delta" || e.from?.kind === "agent"));
  }
  assert.deepEqual(seen2().map((e) => e.offset), onRun(seen1).map((e) => e.offset), "both watchers saw the same offsets");
  assert.ok(seen2first.length > 0 && seen2second.length > 0, "watcher 2 saw part of the run on each connection");
  assert.equal(spied.length, 0, "another tenant saw nothing of the run");

  // The project's watchers got a summary after each commit, without the input.
  const summaries = seen1.filter((e) => e.topic === `project:${project}`);
  assert.equal(summaries.length, 1 + 3 + 2 + 1, "running, three steps, two tool calls, succeeded");
  assert.equal(summaries.at(-1).data.status, "succeeded");
  assert.equal(summaries.at(-1).data.tokens_out, 500);
  assert.ok(summaries.every((e) => e.event === "run:updated" && !("input" in e.data)));

  // What was stored: one run, its steps with the streamed text, its tool calls, its usage.
  const list = await api(B, key, "GET", `/api/v1/runs?project_id=${project}`);
  assert.deepEqual(list.body.data.map((r) => r.id), [run], "retries created nothing new");
  const detail = await api(B, key, "GET", `/api/v1/runs/${run}`);
  assert.equal(detail.body.status, "succeeded");
  assert.deepEqual(detail.body.steps.map((s) => s.seq), [1, 2, 3]);
  const streamed = (s) => expected.filter((d) => d.startsWith(`delta ${s} `)).map((d) => d.slice(`delta ${s} `.length)).join("");
  for (const s of detail.body.steps) assert.equal(s.content, streamed(s.seq), `step ${s.seq} holds what was streamed`);
  assert.deepEqual(detail.body.tool_calls.map((c) => [c.name, c.step_id]), [
    ["tool-1", detail.body.steps[0].id],
    ["tool-2", detail.body.steps[1].id],
  ]);
  assert.equal(detail.body.tokens_in, usage.tokens_in);
  assert.equal(detail.body.tokens_out, usage.tokens_out);
  assert.equal(Number(detail.body.cost_usd), Number(usage.cost.toFixed(6)));
  const day = await A.rest("GET", "/api/v1/usage", admin);
  const total = (m) => day.body.data.filter((r) => r.metric === m).reduce((a, r) => a + Number(r.value), 0);
  assert.deepEqual(
    [total("runs"), total("tokens_in"), total("tokens_out"), total("cost_usd").toFixed(6)],
    [1, usage.tokens_in, usage.tokens_out, usage.cost.toFixed(6)],
  );

  // The other tenant: 404 for the run on every route, no runs of its own.
  for (const [method, path, body] of [
    ["GET", `/api/v1/runs/${run}`],
    ["PATCH", `/api/v1/runs/${run}`, { status: "cancelled" }],
    ["POST", `/api/v1/runs/${run}/steps`, { content: "x" }],
    ["POST", `/api/v1/runs/${run}/deltas`, { deltas: [{ text: "x" }] }],
  ]) {
    assert.equal((await api(B, other.key, method, path, body)).status, 404, `${method} ${path}`);
  }
  assert.equal((await api(A, other.key, "GET", "/api/v1/runs")).body.data.length, 0);
  for (const s of [w1, w2second, spy]) s.close();
});

test("messages over REST and message:send share one path: one key, one message, one message:new", async () => {
  const { tenant, key, project, admin } = await tenantWithWorker("runs messages");
  const conv = await A.rest("POST", `/api/v1/projects/${project}/conversations`, admin, { title: "chat" });
  assert.equal(conv.status, 201);
  const topic = `conversation:${conv.body.id}`;
  const watcher = await connect(B.url, userToken(tenant));
  const seen = record(watcher);
  assert.equal((await watcher.emitWithAck("subscribe", { topic })).ok, true);
  const user = randomUUID();
  const sender = await connect(A.url, userToken(tenant, user));
  const first = await sender.emitWithAck("message:send", { conversation_id: conv.body.id, content: "hello", idempotency_key: "m-1" });
  assert.equal(first.ok, true);
  const rest = await api(B, userToken(tenant, user), "POST", `/api/v1/conversations/${conv.body.id}/messages`, { content: "hello" }, "m-1");
  assert.equal(rest.status, 200, "the same user's REST retry of a socket send is a replay");
  assert.equal(rest.body.id, first.message.id);
  // The same key from anyone else, or with anything else, is another request.
  for (const [token, body] of [
    [key, { content: "hello" }],
    [userToken(tenant), { content: "hello" }],
    [userToken(tenant, user), { content: "hello", metadata: { x: 1 } }],
    [userToken(tenant, user), { content: "hello!" }],
  ]) {
    const other = await api(B, token, "POST", `/api/v1/conversations/${conv.body.id}/messages`, body, "m-1");
    assert.equal(other.status, 409, JSON.stringify(body));
  }
  const again = await sender.emitWithAck("message:send", { conversation_id: conv.body.id, content: "hello", idempotency_key: "m-1" });
  assert.deepEqual([again.ok, again.replayed, again.message.id], [true, true, first.message.id]);
  const fromAgent = await api(A, key, "POST", `/api/v1/conversations/${conv.body.id}/messages`, { content: "hi, human" }, "m-2");
  assert.equal(fromAgent.status, 201);
  await eventually(() => seen.length >= 2, 5000, "two message:new");
  await sleep(200);
  assert.deepEqual(seen.map((e) => [e.event, e.data.content, e.from?.kind]), [
    ["message:new", "hello", "user"],
    ["message:new", "hi, human", "agent"],
  ]);
  const page = await api(A, key, "GET", `/api/v1/conversations/${conv.body.id}/messages?limit=1`);
  assert.equal(page.body.data[0].content, "hi, human");
  const older = await api(A, key, "GET", `/api/v1/conversations/${conv.body.id}/messages?limit=1&before=${page.body.data[0].id}`);
  assert.equal(older.body.data[0].content, "hello");
  assert.equal((await A.rest("DELETE", `/api/v1/conversations/${conv.body.id}`, admin)).status, 204);
  assert.equal((await api(A, key, "GET", `/api/v1/conversations/${conv.body.id}/messages`)).status, 404);
  for (const s of [watcher, sender]) s.close();
});
