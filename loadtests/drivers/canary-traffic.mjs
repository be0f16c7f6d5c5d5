// Client traffic through the balancer while loadtests/canary.sh puts a canary
// in and takes it out: new socket.io-client clients arrive at ARRIVALS_PER_S
// (websocket and long-polling in turn), subscribe to a channel and stay
// LIFETIME_MS; a REST client reads projects at REST_PER_S. A client is
// affected when the balancer sent its handshake to a node that refused it
// (it retries, as the contract asks, and normally lands on a stable node).
//
// Runs until SIGTERM, then reads WINDOW_FILE (lines `start <ms>` and `end <ms>`:
// when the canary had weight) and prints who was affected inside and outside
// that window, as text and as a `canary-traffic {json}` line.
//
// Environment: LB_URL, PLATFORM_KEY, JWT_SECRET, WINDOW_FILE (required);
// ARRIVALS_PER_S (20), LIFETIME_MS (3000), REST_PER_S (20). Prints `ready`
// on stdout once traffic flows.
import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import { clientAddress, createTenant, fromAddress, rest, sleep, userToken } from "./common.mjs";

const env = process.env;
const LB = env.LB_URL;
const SECRET = env.JWT_SECRET;
if (!LB || !env.PLATFORM_KEY || !SECRET || !env.WINDOW_FILE) {
  throw new Error("LB_URL, PLATFORM_KEY, JWT_SECRET and WINDOW_FILE are required");
}
const ARRIVALS_PER_S = Number(env.ARRIVALS_PER_S ?? 20);
const LIFETIME_MS = Number(env.LIFETIME_MS ?? 3000);
const REST_PER_S = Number(env.REST_PER_S ?? 20);

const tenant = await createTenant(LB, env.PLATFORM_KEY, `canary-${Date.now()}`);
const member = userToken(SECRET, tenant, "member");
const clients = [];
const requests = [];
let running = true;

function arrive(n) {
  const c = { t: Date.now(), transport: n % 2 ? "polling" : "websocket", refusals: [], connected: false };
  clients.push(c);
  const socket = io(LB, {
    auth: { token: userToken(SECRET, tenant) },
    transports: [c.transport],
    withCredentials: true,
    forceNew: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 1000,
    timeout: 5000,
    ...fromAddress(clientAddress(n)),
  });
  socket.on("connect_error", (err) => {
    c.refusals.push(err.data?.code ?? "transport");
    if (!socket.active && running) setTimeout(() => socket.connect(), 100 + Math.random() * 200);
  });
  socket.on("system:drain", (d) => setTimeout(() => socket.io.engine?.close(), d.reconnect_after_ms));
  socket.on("connect", async () => {
    c.connected = true;
    c.connectedAt ??= Date.now();
    try {
      await socket.timeout(5000).emitWithAck("subscribe", { topic: "channel:canary" });
    } catch {}
  });
  setTimeout(() => socket.close(), LIFETIME_MS);
}

const arrivals = (async () => {
  for (let n = 0; running; n++) {
    arrive(n);
    await sleep(1000 / ARRIVALS_PER_S);
  }
})();
const reader = (async () => {
  while (running) {
    const r = await rest(LB, "GET", "/api/v1/projects?limit=1", member);
    requests.push({ t: Date.now(), status: r.status });
    await sleep(1000 / REST_PER_S);
  }
})();

await sleep(500);
console.log("ready");

process.on("SIGTERM", async () => {
  running = false;
  await Promise.all([arrivals, reader]);
  await sleep(LIFETIME_MS + 500);
  const window = { start: Infinity, end: Infinity };
  for (const line of readFileSync(env.WINDOW_FILE, "utf8").split("\n")) {
    const [k, v] = line.split(" ");
    if (k in window) window[k] = Number(v);
  }
  const inside = (t) => t >= window.start && t <= window.end;
  const during = clients.filter((c) => inside(c.t));
  const outside = clients.filter((c) => !inside(c.t));
  const affected = (list) => list.filter((c) => c.refusals.length > 0);
  const codes = {};
  for (const c of clients) for (const r of c.refusals) codes[r] = (codes[r] ?? 0) + 1;
  const failed = (list) => list.filter((r) => r.status < 200 || r.status >= 300);
  const restDuring = requests.filter((r) => inside(r.t));
  const restOutside = requests.filter((r) => !inside(r.t));
  const report = {
    window_s: Number.isFinite(window.end) ? (window.end - window.start) / 1000 : null,
    clients: clients.length,
    clients_during_window: during.length,
    affected_during_window: affected(during).length,
    affected_outside_window: affected(outside).length,
    never_connected: clients.filter((c) => !c.connected).length,
    refusal_codes: codes,
    rest_requests: requests.length,
    rest_during_window: restDuring.length,
    rest_failed_during_window: failed(restDuring).length,
    rest_failed_outside_window: failed(restOutside).length,
  };
  const pct = (a, b) => (b ? ((100 * a) / b).toFixed(1) : "0.0");
  console.log(`
  clients                 ${report.clients} (${ARRIVALS_PER_S}/s, websocket and long-polling), ${report.clients_during_window} arrived while the canary had weight (${report.window_s ?? "-"} s)
  affected (refused)      ${report.affected_during_window} of those (${pct(report.affected_during_window, report.clients_during_window)}%), ${report.affected_outside_window} outside the window; codes ${JSON.stringify(codes)}
  never connected         ${report.never_connected}
  REST reads              ${report.rest_requests}: ${report.rest_failed_during_window} of ${report.rest_during_window} failed in the window (${pct(report.rest_failed_during_window, report.rest_during_window)}%), ${report.rest_failed_outside_window} outside it`);
  console.log(`canary-traffic ${JSON.stringify(report)}`);
  process.exit(0);
});
