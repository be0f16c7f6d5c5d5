// Continuous load through the balancer while ACTIONS run one after another
// (loadtests/rolling_restart.sh passes `scripts/cluster restart-node nodeN`
// for every node), then the tally: every accepted event must have reached every
// subscriber exactly once and in order, and no REST request may have failed.
//
// Subscribers: WS_SUBSCRIBERS over websockets and POLLING_SUBSCRIBERS over
// long-polling (default 150 and 50), each on CHANNELS channel topics and one
// conversation. Writers: BROADCAST_WRITERS loops of POST /api/v1/broadcast and
// one loop of POST /api/v1/conversations/{id}/messages (stored in Postgres,
// then message:new), each pausing WRITE_PAUSE_MS between requests.
//
// Environment: LB_URL, PLATFORM_KEY, JWT_SECRET (required); ACTIONS (a JSON
// array of shell commands); WARMUP_S (5), PAUSE_S between actions (3),
// SETTLE_S (10, the longest to wait for the last events). Prints a report and a
// JSON line; exits 1 when anything was lost, doubled, reordered or failed.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { Subscriber, clientAddress, createTenant, percentile, rest, sleep, userToken } from "./common.mjs";

const env = process.env;
const num = (name, fallback) => (env[name] === undefined ? fallback : Number(env[name]));
const LB = env.LB_URL;
const PLATFORM_KEY = env.PLATFORM_KEY;
const SECRET = env.JWT_SECRET;
if (!LB || !PLATFORM_KEY || !SECRET) throw new Error("LB_URL, PLATFORM_KEY and JWT_SECRET are required");
const WS = num("WS_SUBSCRIBERS", 150);
const POLLING = num("POLLING_SUBSCRIBERS", 50);
const CHANNELS = num("CHANNELS", 4);
const BROADCAST_WRITERS = num("BROADCAST_WRITERS", 3);
const WRITE_PAUSE_MS = num("WRITE_PAUSE_MS", 50);
const ACTIONS = JSON.parse(env.ACTIONS ?? "[]");
const WARMUP_S = num("WARMUP_S", 5);
const PAUSE_S = num("PAUSE_S", 3);
const SETTLE_S = num("SETTLE_S", 10);

const log = (...a) => console.error(`[${new Date().toISOString().slice(11, 23)}]`, ...a);

function run(command) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn("bash", ["-c", command], { stdio: ["ignore", "inherit", "inherit"] });
    child.on("exit", (code) => resolve({ command, code, seconds: (Date.now() - started) / 1000 }));
  });
}

async function main() {
  const tenant = await createTenant(LB, PLATFORM_KEY, `rolling-${Date.now()}`);
  const owner = userToken(SECRET, tenant, "owner");
  const project = await rest(LB, "POST", "/api/v1/projects", owner, { name: "rolling restart" });
  const conversation = await rest(LB, "POST", `/api/v1/projects/${project.body.id}/conversations`, owner, {
    title: "rolling restart",
  });
  if (conversation.status !== 201) throw new Error(`conversation: ${conversation.status}`);
  const channels = Array.from({ length: CHANNELS }, (_, i) => `channel:roll-${i}`);
  const convTopic = `conversation:${conversation.body.id}`;
  const topics = [...channels, convTopic];

  log(`connecting ${WS} websocket and ${POLLING} long-polling subscribers to ${topics.length} topics`);
  const subscribers = [];
  for (let i = 0; i < WS + POLLING; i++) {
    const transport = i < WS ? "websocket" : "polling";
    subscribers.push(
      new Subscriber(LB, userToken(SECRET, tenant), topics, {
        transport,
        events: ["tick", "message:new"],
        address: clientAddress(i),
      }),
    );
    if (i % 25 === 24) await sleep(50);
  }
  await Promise.race([
    Promise.all(subscribers.map((s) => s.ready)),
    sleep(30000).then(() => {
      throw new Error("subscribers not ready within 30 s");
    }),
  ]);
  log("all subscribed; writing");

  const accepted = Object.fromEntries(topics.map((t) => [t, new Set()]));
  const failures = [];
  const latencies = [];
  let requests = 0;
  let writing = true;
  const record = (r, what) => {
    requests++;
    latencies.push(r.ms);
    if (r.status < 200 || r.status >= 300) failures.push({ what, status: r.status, error: r.error ?? r.body?.error?.code });
    return r.status >= 200 && r.status < 300;
  };
  const broadcaster = async (w) => {
    for (let seq = 0; writing; seq++) {
      const topic = channels[seq % channels.length];
      const id = `w${w}-${seq}`;
      const r = await rest(LB, "POST", "/api/v1/broadcast", owner, { topic, event: "tick", data: { id } });
      if (record(r, "broadcast")) accepted[topic].add(id);
      await sleep(WRITE_PAUSE_MS);
    }
  };
  const messenger = async () => {
    for (let seq = 0; writing; seq++) {
      const r = await rest(LB, "POST", `/api/v1/conversations/${conversation.body.id}/messages`, owner,
        { content: `message ${seq}` }, { "idempotency-key": randomUUID() });
      if (record(r, "message")) accepted[convTopic].add(r.body.id);
      await sleep(WRITE_PAUSE_MS);
    }
  };
  const writers = [...Array.from({ length: BROADCAST_WRITERS }, (_, w) => broadcaster(w)), messenger()];

  await sleep(WARMUP_S * 1000);
  const actions = [];
  for (const command of ACTIONS) {
    log(`action: ${command}`);
    actions.push(await run(command));
    await sleep(PAUSE_S * 1000);
  }
  writing = false;
  await Promise.all(writers);

  // Let the last events arrive (and the last reconnects resume).
  const missing = () => {
    let n = 0;
    for (const s of subscribers) for (const t of topics) for (const id of accepted[t]) if (!s.received[t].has(id)) n++;
    return n;
  };
  for (let waited = 0; waited < SETTLE_S * 1000 && missing() > 0; waited += 250) await sleep(250);

  let deliveries = 0;
  let gaps = 0;
  let extra = 0;
  for (const s of subscribers) {
    for (const t of topics) {
      for (const id of s.received[t]) (accepted[t].has(id) ? deliveries++ : extra++);
      for (const id of accepted[t]) if (!s.received[t].has(id)) gaps++;
    }
  }
  const sum = (f) => subscribers.reduce((n, s) => n + f(s), 0);
  const merge = (f) => {
    const out = {};
    for (const s of subscribers) for (const [k, v] of Object.entries(f(s))) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  const events = topics.reduce((n, t) => n + accepted[t].size, 0);
  const report = {
    subscribers: { websocket: WS, polling: POLLING },
    topics: topics.length,
    events_accepted: events,
    deliveries_expected: events * subscribers.length,
    deliveries,
    duplicates: sum((s) => s.duplicates),
    gaps,
    out_of_order: sum((s) => s.outOfOrder),
    unexpected: extra,
    rest_requests: requests,
    rest_failed: failures.length,
    rest_failures: failures.slice(0, 10),
    rest_p50_ms: Math.round(percentile(latencies, 50)),
    rest_p99_ms: Math.round(percentile(latencies, 99)),
    reconnects: sum((s) => s.connects - 1),
    drain_notices: sum((s) => s.drains),
    handshake_refusals: merge((s) => s.refusals),
    resubscribed_unrecovered: sum((s) => s.unrecovered),
    subscribe_errors: merge((s) => s.subscribeErrors),
    actions,
  };
  for (const s of subscribers) s.close();

  const ok =
    report.deliveries === report.deliveries_expected &&
    report.duplicates === 0 &&
    report.gaps === 0 &&
    report.out_of_order === 0 &&
    report.rest_failed === 0 &&
    report.resubscribed_unrecovered === 0 &&
    actions.every((a) => a.code === 0);
  console.log(`
  subscribers           ${WS} websocket + ${POLLING} long-polling, ${topics.length} topics each
  events accepted       ${events} (${requests} REST writes, p50 ${report.rest_p50_ms} ms, p99 ${report.rest_p99_ms} ms)
  deliveries            ${deliveries} of ${report.deliveries_expected} expected
  duplicates            ${report.duplicates}
  gaps                  ${gaps}
  out of order          ${report.out_of_order}
  failed REST requests  ${report.rest_failed}
  reconnects            ${report.reconnects} (${report.drain_notices} system:drain notices, refusals ${JSON.stringify(report.handshake_refusals)})
  actions               ${actions.map((a) => `${a.command} → ${a.code} in ${a.seconds.toFixed(1)} s`).join("\n                        ")}
  result                ${ok ? "every accepted event reached every subscriber once, in order; no request failed" : "FAILED"}
`);
  console.log(`rolling-report ${JSON.stringify(report)}`);
  process.exit(ok ? 0 : 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(2);
});
