// REST under load: three scenarios at constant arrival rates, each an agent
// worker's or an app's real sequence of calls, against one tenant made in setup.
//
//   projects  create, list, read, rename and delete a project
//   messages  post a message with an Idempotency-Key, post it again (a replay:
//             200 and Idempotent-Replayed), read the latest page
//   runs      create a run, move it to running, append a step, stream 10 deltas,
//             record a tool call, finish it with usage, read it back
//
//   k6 run -e BASE_URL=… -e JWT_SECRET=… -e PLATFORM_KEY=… loadtests/k6/rest.js
//
// RATE (iterations/s per scenario, 5), DURATION (30s), P95_MS (150) and
// P99_MS (400) shape the run and its thresholds; any failed request or check
// over 1% fails it.
import http from "k6/http";
import { check, fail } from "k6";
import { BASE_URL, createTenant, envNumber, headers, userToken, uuid } from "./lib.js";

const RATE = envNumber("RATE", 5);
const DURATION = __ENV.DURATION || "30s";
const P95 = envNumber("P95_MS", 150);
const P99 = envNumber("P99_MS", 400);

const scenario = (exec) => ({
  executor: "constant-arrival-rate",
  exec,
  rate: RATE,
  timeUnit: "1s",
  duration: DURATION,
  preAllocatedVUs: 5,
  maxVUs: 50,
});

export const options = {
  scenarios: { projects: scenario("projects"), messages: scenario("messages"), runs: scenario("runs") },
  thresholds: {
    http_req_failed: ["rate<0.01"],
    checks: ["rate>0.99"],
    "http_req_duration{scenario:projects}": [`p(95)<${P95}`, `p(99)<${P99}`],
    "http_req_duration{scenario:messages}": [`p(95)<${P95}`, `p(99)<${P99}`],
    "http_req_duration{scenario:runs}": [`p(95)<${P95}`, `p(99)<${P99}`],
  },
};

const api = (path) => `${BASE_URL}/api/v1${path}`;

export function setup() {
  const tenant = createTenant(`k6-rest-${Date.now()}`);
  const owner = userToken(tenant, "owner", uuid(), 4 * 3600);
  const project = http.post(api("/projects"), JSON.stringify({ name: "k6" }), headers(owner));
  if (project.status !== 201) fail(`project: ${project.status} ${project.body}`);
  const conversation = http.post(
    api(`/projects/${project.json("id")}/conversations`),
    JSON.stringify({ title: "k6" }),
    headers(owner),
  );
  if (conversation.status !== 201) fail(`conversation: ${conversation.status} ${conversation.body}`);
  return { owner, project: project.json("id"), conversation: conversation.json("id") };
}

export function projects(data) {
  const h = headers(data.owner);
  const created = http.post(api("/projects"), JSON.stringify({ name: `p-${uuid()}` }), h);
  if (!check(created, { "project created": (r) => r.status === 201 })) return;
  const id = created.json("id");
  check(http.get(api("/projects?limit=10"), h), { "projects listed": (r) => r.status === 200 && r.json("data").length > 0 });
  check(http.get(api(`/projects/${id}`), h), { "project read": (r) => r.status === 200 && r.json("id") === id });
  check(http.patch(api(`/projects/${id}`), JSON.stringify({ name: "renamed" }), h), {
    "project renamed": (r) => r.status === 200 && r.json("name") === "renamed",
  });
  check(http.del(api(`/projects/${id}`), null, h), { "project deleted": (r) => r.status === 204 });
}

export function messages(data) {
  const key = uuid();
  const h = headers(data.owner, { "idempotency-key": key });
  const url = api(`/conversations/${data.conversation}/messages`);
  const body = JSON.stringify({ content: `hello ${key}` });
  const first = http.post(url, body, h);
  check(first, { "message stored": (r) => r.status === 201 });
  const again = http.post(url, body, h);
  check(again, {
    "same key replays the message": (r) =>
      r.status === 200 && r.headers["Idempotent-Replayed"] === "true" && r.json("id") === first.json("id"),
  });
  check(http.get(`${url}?limit=20`, headers(data.owner)), { "messages listed": (r) => r.status === 200 });
}

export function runs(data) {
  const h = headers(data.owner);
  const created = http.post(api("/runs"), JSON.stringify({ project_id: data.project, agent: "k6" }), h);
  if (!check(created, { "run created": (r) => r.status === 201 && r.json("status") === "queued" })) return;
  const id = created.json("id");
  check(http.patch(api(`/runs/${id}`), JSON.stringify({ status: "running" }), h), {
    "run running": (r) => r.status === 200 && r.json("status") === "running",
  });
  check(http.post(api(`/runs/${id}/steps`), JSON.stringify({ kind: "llm", content: "thinking", tokens_in: 10 }), h), {
    "step appended": (r) => r.status === 201,
  });
  const deltas = Array.from({ length: 10 }, (_, i) => ({ text: `token ${i} ` }));
  check(http.post(api(`/runs/${id}/deltas`), JSON.stringify({ step: 1, deltas }), h), {
    "deltas streamed": (r) => r.status === 202 && r.json("count") === 10,
  });
  check(http.post(api(`/runs/${id}/tool-calls`), JSON.stringify({ name: "search", status: "succeeded", latency_ms: 12, step: 1 }), h), {
    "tool call recorded": (r) => r.status === 201,
  });
  check(http.patch(api(`/runs/${id}`), JSON.stringify({ status: "succeeded", tokens_out: 20, cost_usd: "0.0001" }), h), {
    "run succeeded": (r) => r.status === 200 && r.json("status") === "succeeded",
  });
  check(http.get(api(`/runs/${id}`), h), {
    "run read back": (r) => r.status === 200 && r.json("steps").length === 1 && r.json("tool_calls").length === 1,
  });
}
