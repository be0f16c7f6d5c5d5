// The example in a real browser: headless Chromium (Debian's) driven by
// playwright-core, against `next start` and two Switchboard nodes behind
// HAProxy. Three people in three browser contexts: two chat through different
// nodes (presence, typing, history paging, going offline and back), a third
// watches an agent run stream and reloads in the middle of it; then the
// refusals a user meets: an expired token, a rate limit, a suspended tenant.
// Screenshots of each step go to test-results/ (SCREENSHOTS sets another place).
//
// Needs: SWITCHBOARD_URL (the balancer), JWT_SECRET, PLATFORM_KEY,
// SB_NODE_METRICS (the nodes' /metrics URLs, comma-separated), APP_PORT, and a
// built app (`next build`). scripts/example-nextjs at the repository's root
// provides all of it.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const APP_DIR = path.dirname(HERE);
const need = (v) => {
  if (!process.env[v]) throw new Error(`${v} must be set (scripts/example-nextjs sets it)`);
  return process.env[v];
};
const SB = need("SWITCHBOARD_URL");
const JWT_SECRET = need("JWT_SECRET");
const PLATFORM_KEY = need("PLATFORM_KEY");
const APP_PORT = Number(need("APP_PORT"));
const METRICS = need("SB_NODE_METRICS").split(",");
const APP = `http://127.0.0.1:${APP_PORT}`;
const SHOTS = path.resolve(APP_DIR, process.env.SCREENSHOTS ?? "test-results");
const TTL = 30;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
function sign(claims) {
  const h = b64({ alg: "HS256", typ: "JWT" });
  const b = b64(claims);
  return `${h}.${b}.${createHmac("sha256", JWT_SECRET).update(`${h}.${b}`).digest("base64url")}`;
}

async function rest(method, url, token, body) {
  const res = await fetch(SB + url, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${text}`);
  return json;
}

async function eventually(check, what, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms (last: ${last?.message ?? JSON.stringify(last)})`);
    await sleep(100);
  }
}

/** Each node's open sockets, from its /metrics. */
async function socketsPerNode() {
  return Promise.all(
    METRICS.map(async (url) => {
      const text = await (await fetch(url)).text();
      const line = text.split("\n").find((l) => l.startsWith("switchboard_sockets{") || l.startsWith("switchboard_sockets "));
      return Number(line?.split(" ").pop() ?? NaN);
    }),
  );
}

let app, browser, tenant, owner, conversation;
const people = {};
let shot = 0;
async function screenshot(page, name) {
  shot += 1;
  const file = path.join(SHOTS, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // A tenant of its own: a project, a public conversation with 45 older
  // messages (three pages of history), an API key for the agent.
  tenant = (await rest("POST", "/api/v1/tenants", PLATFORM_KEY, { name: `nextjs-e2e-${Date.now()}` })).id;
  owner = sign({ sub: randomUUID(), tenant_id: tenant, tenant_role: "owner", exp: Math.floor(Date.now() / 1000) + 3600 });
  const project = (await rest("POST", "/api/v1/projects", owner, { name: "Demo" })).id;
  conversation = (await rest("POST", `/api/v1/projects/${project}/conversations`, owner, { title: "General" })).id;
  for (let i = 1; i <= 45; i++) {
    await rest("POST", `/api/v1/conversations/${conversation}/messages`, owner, {
      content: `archive ${i}`,
      metadata: { name: "Archive" },
    });
  }
  const key = await rest("POST", "/api/v1/api-keys", owner, { name: "nextjs-e2e", scopes: ["read", "write"] });

  app = spawn(path.join(APP_DIR, "node_modules/.bin/next"), ["start", "-p", String(APP_PORT), "-H", "127.0.0.1"], {
    cwd: APP_DIR,
    env: {
      ...process.env,
      NEXT_TELEMETRY_DISABLED: "1",
      DEV_SIGNIN: "1",
      SWITCHBOARD_URL: SB,
      SWITCHBOARD_PUBLIC_URL: SB,
      SWITCHBOARD_JWT_SECRET: JWT_SECRET,
      SWITCHBOARD_TENANT_ID: tenant,
      SWITCHBOARD_PROJECT_ID: project,
      SWITCHBOARD_CONVERSATION_ID: conversation,
      SWITCHBOARD_API_KEY: key.key,
      SESSION_TTL_SECONDS: String(TTL),
      DEMO_AGENT_DELTA_MS: "150",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  app.log = "";
  app.stdout.on("data", (d) => (app.log += d));
  app.stderr.on("data", (d) => (app.log += d));
  await eventually(async () => (await fetch(`${APP}/api/session`)).status === 401, "next start answering");

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  if (app && app.exitCode === null) {
    app.kill("SIGTERM");
    await new Promise((r) => app.once("exit", r));
  }
  if (process.exitCode && app?.log) console.error(`next start said:\n${app.log}`);
});

/** A person in a browser context of their own, signed in on the chat page. */
async function signIn(name, node) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  if (node) await context.addCookies([{ name: "SBNODE", value: node, url: SB }]);
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e));
  await page.goto(APP);
  await page.getByLabel("Your name").fill(name);
  await page.getByRole("button", { name: "Sign in" }).click();
  await connected(page);
  return { name, context, page, signedInAt: Date.now() };
}

const connected = (page, ms = 15000) =>
  page.locator('[data-testid="connection"][data-status="connected"]').waitFor({ timeout: ms });

/** The node HAProxy pinned this context to (its affinity cookie). */
async function nodeOf(person) {
  const cookies = await person.context.cookies(SB);
  return cookies.find((c) => c.name === "SBNODE")?.value;
}

const texts = (page) => page.locator('[data-testid="message"] .text').allTextContents();
const count = (list, text) => list.filter((t) => t === text).length;

test("two people sign in through the balancer, on different nodes, and see each other", async () => {
  // HAProxy keeps each browser on one node with its affinity cookie; setting
  // it before the first request puts Alice on node1 and Bob on node2.
  people.alice = await signIn("Alice", "node1");
  people.bob = await signIn("Bob", "node2");
  assert.deepEqual([await nodeOf(people.alice), await nodeOf(people.bob)], ["node1", "node2"]);
  assert.deepEqual(await eventually(async () => {
    const s = await socketsPerNode();
    return s.every((n) => n === 1) && s;
  }, "one socket on each node"), [1, 1]);

  for (const [me, other] of [["alice", "Bob"], ["bob", "Alice"]]) {
    await people[me].page.locator('[data-testid="presence"] li', { hasText: other }).waitFor();
  }
  await screenshot(people.alice.page, "alice-signed-in-sees-bob");
  await screenshot(people.bob.page, "bob-signed-in-sees-alice");
});

test("history comes newest first and pages back to the start, each message once", async () => {
  const { page } = people.alice;
  await page.locator('[data-testid="message"]').nth(19).waitFor();
  assert.equal(await page.locator('[data-testid="message"]').count(), 20);
  assert.deepEqual((await texts(page)).at(0), "archive 26");
  while (await page.getByTestId("load-older").isVisible()) {
    const before = await page.locator('[data-testid="message"]').count();
    await page.getByTestId("load-older").click();
    await eventually(async () => (await page.locator('[data-testid="message"]').count()) > before, "an older page");
  }
  await page.getByTestId("start").waitFor();
  assert.deepEqual(await texts(page), Array.from({ length: 45 }, (_, i) => `archive ${i + 1}`));
  await screenshot(page, "alice-history-to-the-start");
});

test("they chat: typing shows, messages cross the nodes, each once", async () => {
  const { alice, bob } = people;
  await alice.page.getByPlaceholder(/message/i).fill("Hel");
  await bob.page.getByTestId("typing").filter({ hasText: "Alice is typing" }).waitFor();
  await screenshot(bob.page, "bob-sees-alice-typing");
  await alice.page.getByPlaceholder(/message/i).fill("Hello Bob");
  await alice.page.getByRole("button", { name: "Send" }).click();
  await bob.page.locator('[data-testid="message"]', { hasText: "Hello Bob" }).waitFor();
  await bob.page.getByPlaceholder(/message/i).fill("Hi Alice, from the other node");
  await bob.page.keyboard.press("Enter");
  await alice.page.locator('[data-testid="message"]', { hasText: "Hi Alice, from the other node" }).waitFor();
  // The optimistic messages settled into stored ones.
  for (const p of [alice, bob]) {
    await eventually(async () => (await p.page.locator('[data-testid="pending"]').count()) === 0, `${p.name}'s pending settled`);
    const t = await texts(p.page);
    assert.equal(count(t, "Hello Bob"), 1);
    assert.equal(count(t, "Hi Alice, from the other node"), 1);
  }
  await screenshot(alice.page, "alice-chatting");
});

test("Bob goes offline, misses messages, comes back and sees each exactly once", async () => {
  const { alice, bob } = people;
  await bob.context.setOffline(true);
  await bob.page.locator('[data-testid="connection"][data-status="reconnecting"]').waitFor();
  // What he writes meanwhile waits for the connection.
  await bob.page.getByPlaceholder(/message/i).fill("written while offline");
  await bob.page.keyboard.press("Enter");
  await bob.page.locator('[data-testid="pending"][data-state="queued"]').waitFor();
  const missed = ["while you were away 1", "while you were away 2", "while you were away 3"];
  for (const m of missed) {
    await alice.page.getByPlaceholder(/message/i).fill(m);
    await alice.page.keyboard.press("Enter");
    await alice.page.locator('[data-testid="message"]', { hasText: m }).waitFor();
  }
  assert.equal(count(await texts(bob.page), missed[0]), 0, "Bob was offline");
  await screenshot(bob.page, "bob-offline-reconnecting");

  await bob.context.setOffline(false);
  await connected(bob.page);
  for (const m of [...missed, "written while offline"]) {
    await bob.page.locator('[data-testid="message"]', { hasText: m }).first().waitFor();
    await alice.page.locator('[data-testid="message"]', { hasText: m }).first().waitFor();
  }
  await sleep(1000); // time for any duplicate to show
  for (const p of [alice, bob]) {
    const t = await texts(p.page);
    for (const m of [...missed, "written while offline"]) assert.equal(count(t, m), 1, `${p.name} sees "${m}" once`);
    const ids = await p.page.locator('[data-testid="message"]').evaluateAll((els) => els.map((e) => e.dataset.id));
    assert.equal(new Set(ids).size, ids.length, `${p.name} has no message twice`);
  }
  // The gap came back from Switchboard's history (subscribe with since), not a reload.
  assert.equal(await bob.page.getByTestId("messages").getAttribute("data-resyncs"), "0");
  assert.equal(await bob.page.getByTestId("connection").getAttribute("data-connects"), "2");
  await screenshot(bob.page, "bob-back-online-caught-up");
});

test("a gap longer than Switchboard's history: the page reloads the conversation instead", async () => {
  const { bob } = people;
  await bob.context.setOffline(true);
  await bob.page.locator('[data-testid="connection"][data-status="reconnecting"]').waitFor();
  // More than the topic keeps (TOPIC_HISTORY_SIZE=100 on these nodes).
  for (let i = 1; i <= 120; i++) {
    await rest("POST", `/api/v1/conversations/${conversation}/messages`, owner, { content: `flood ${i}`, metadata: { name: "Archive" } });
  }
  await bob.context.setOffline(false);
  await connected(bob.page);
  await eventually(async () => (await bob.page.getByTestId("messages").getAttribute("data-resyncs")) === "1", "a reload");
  await bob.page.locator('[data-testid="message"]', { hasText: "flood 120" }).waitFor();
  const t = await texts(bob.page);
  assert.deepEqual(t.slice(-20), Array.from({ length: 20 }, (_, i) => `flood ${101 + i}`), "the newest page, in order");
  assert.equal(new Set(t).size, t.length, "nothing twice");
  // Older pages follow on from the reloaded one.
  await bob.page.getByTestId("load-older").click();
  await bob.page.locator('[data-testid="message"] .text').getByText("flood 81", { exact: true }).waitFor();
  const after = await texts(bob.page);
  assert.deepEqual(after.slice(-40), Array.from({ length: 40 }, (_, i) => `flood ${81 + i}`));
  await screenshot(bob.page, "bob-reloaded-after-a-long-gap");
});

test("a run streams into a third context and survives a reload mid-stream", async () => {
  const carol = (people.carol = await signIn("Carol"));
  const { page } = carol;
  await page.getByRole("link", { name: "Agent runs" }).click();
  await page.getByRole("button", { name: "Start run" }).click();
  await page.waitForURL(/\/runs\?run=/);
  await page.locator('[data-testid="tool-call"]', { hasText: "search_notes" }).waitFor();
  const stream = page.getByTestId("stream");
  await eventually(async () => Number(await stream.getAttribute("data-deltas")) >= 12, "a dozen tokens streamed");
  await screenshot(page, "carol-run-streaming");
  // Offline for a second and a half while the agent streams on (about ten
  // tokens), then a reload: what was missed can only come from the replay.
  await carol.context.setOffline(true);
  const beforeReload = Number(await stream.getAttribute("data-deltas"));
  await sleep(1500);
  assert.equal(Number(await stream.getAttribute("data-deltas")), beforeReload, "nothing arrived while offline");
  assert.equal(await page.getByTestId("answer").getAttribute("data-stored"), "no", "reloaded before the answer was stored");
  await carol.context.setOffline(false);
  await page.reload();
  await connected(page);
  await page.locator('[data-testid="run-status"]', { hasText: "succeeded" }).waitFor({ timeout: 30000 });
  await page.locator('[data-testid="answer"][data-stored="yes"]').waitFor();
  const stored = await page.getByTestId("answer").textContent();
  const streamed = await page.getByTestId("streamed-text").textContent();
  const tokens = stored.split(/(?<= )/).length;
  assert.ok(beforeReload < tokens, `reloaded mid-stream (${beforeReload} of ${tokens})`);
  assert.equal(streamed, stored, "the tokens streamed before and after the reload add up to the stored answer");
  assert.equal(Number(await stream.getAttribute("data-deltas")), tokens, "each token arrived once");
  assert.equal(await stream.getAttribute("data-gap"), "no");
  await page.getByTestId("stream").locator("summary").click();
  await screenshot(page, "carol-run-finished");
});

test("an expired token is refreshed and the socket outlives the first one", async () => {
  const { alice, bob } = people;
  // A token the browser still holds after its expiry (a laptop waking up): refused, refreshed, connected.
  const context = await browser.newContext();
  const stale = sign({ sub: randomUUID(), tenant_id: tenant, tenant_role: "member", exp: Math.floor(Date.now() / 1000) - 60 });
  let served = 0;
  await context.route("**/api/session", async (route) => {
    const res = await route.fetch();
    const body = await res.json();
    if (route.request().method() === "POST" && served++ === 0) {
      body.token = stale;
      body.expires_at = Math.floor(Date.now() / 1000) + 600;
    }
    await route.fulfill({ response: res, json: body });
  });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e));
  await page.goto(APP);
  await page.getByLabel("Your name").fill("Dana");
  await page.getByRole("button", { name: "Sign in" }).click();
  await connected(page);
  assert.equal(await page.getByTestId("connection").getAttribute("data-refreshes"), "1");
  assert.deepEqual(page.errors ?? [], []);
  await context.close();

  // Alice's first token has expired by now; her socket renewed it in place.
  const wait = alice.signedInAt + (TTL + 2) * 1000 - Date.now();
  if (wait > 0) await sleep(wait);
  await eventually(async () => Number(await alice.page.getByTestId("connection").getAttribute("data-refreshes")) >= 1, "a renewal");
  assert.equal(await alice.page.getByTestId("connection").getAttribute("data-connects"), "1", "Alice never reconnected");
  await alice.page.getByPlaceholder(/message/i).fill("still here after my first token expired");
  await alice.page.keyboard.press("Enter");
  await bob.page.locator('[data-testid="message"]', { hasText: "still here after my first token expired" }).waitFor();
});

test("over the tenant's event rate, sends back off and every message arrives once", async () => {
  const { alice, bob } = people;
  await rest("PATCH", `/api/v1/tenants/${tenant}`, PLATFORM_KEY, { limits: { events_per_second: 2 } });
  try {
    await sleep(1500); // limits reach every node within a second
    const burst = Array.from({ length: 6 }, (_, i) => `burst ${i + 1}`);
    for (const m of burst) {
      await alice.page.getByPlaceholder(/message/i).fill(m);
      await alice.page.keyboard.press("Enter");
    }
    await alice.page.locator('[data-testid="notice"][data-code="rate_limited"]').waitFor();
    await screenshot(alice.page, "alice-rate-limited");
    for (const m of burst) await bob.page.locator('[data-testid="message"]', { hasText: m }).first().waitFor({ timeout: 20000 });
    await eventually(async () => (await alice.page.locator('[data-testid="pending"]').count()) === 0, "all sent");
    for (const p of [alice, bob]) {
      const t = await texts(p.page);
      for (const m of burst) assert.equal(count(t, m), 1, `${p.name} sees "${m}" once`);
    }
  } finally {
    await rest("PATCH", `/api/v1/tenants/${tenant}`, PLATFORM_KEY, { limits: { events_per_second: 1000 } });
  }
});

test("a suspended tenant is told so, and the page comes back when it is reactivated", async () => {
  const { alice, bob } = people;
  await rest("PATCH", `/api/v1/tenants/${tenant}`, PLATFORM_KEY, { status: "suspended" });
  for (const p of [alice, bob]) {
    await p.page.locator('[data-testid="notice"][data-code="tenant_suspended"]').waitFor();
    await p.page.locator('[data-testid="connection"][data-status="stopped"]').waitFor();
  }
  assert.match(await alice.page.getByTestId("notice").textContent(), /suspended/i);
  await screenshot(alice.page, "alice-tenant-suspended");
  await rest("PATCH", `/api/v1/tenants/${tenant}`, PLATFORM_KEY, { status: "active" });
  for (const p of [alice, bob]) await connected(p.page, 25000);
  await alice.page.getByPlaceholder(/message/i).fill("we are back");
  await alice.page.keyboard.press("Enter");
  await bob.page.locator('[data-testid="message"]', { hasText: "we are back" }).waitFor();
  for (const p of Object.values(people)) assert.deepEqual(p.page.errors, [], `${p.name}'s page threw nothing`);
  await screenshot(bob.page, "bob-after-reactivation");
});
