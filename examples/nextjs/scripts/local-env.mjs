// Writes .env.local for running this example against the Switchboard that
// `./scripts/run` serves from this checkout: the development JWT secret it
// made (.data/jwt_secret) and an API key of the demo tenant for the agent
// route, created once (as the demo tenant's owner) and reused while it works.
import { createHmac, randomUUID } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const APP_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const ROOT = path.resolve(APP_DIR, "../..");
const ENV_FILE = path.join(APP_DIR, ".env.local");
const url = (process.env.SWITCHBOARD_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const DEMO_TENANT = "5b0a0000-0000-4000-8000-000000000001";
const DEMO_OWNER = "5b0a0000-0000-4000-8000-0000000000aa";

const fail = (msg) => {
  console.error(`local-env: ${msg}`);
  process.exit(1);
};

const secretFile = path.join(ROOT, ".data/jwt_secret");
const secret = process.env.SWITCHBOARD_JWT_SECRET ?? (existsSync(secretFile) ? readFileSync(secretFile, "utf8").trim() : "");
if (!secret) fail(`no ${secretFile}: start Switchboard with ./scripts/run first (or set SWITCHBOARD_JWT_SECRET)`);

try {
  const ready = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(3000) });
  if (!ready.ok) fail(`${url}/health/ready answered ${ready.status}`);
} catch (err) {
  fail(`Switchboard is not answering at ${url} (${err.message}): start it with ./scripts/run`);
}

const current = existsSync(ENV_FILE)
  ? Object.fromEntries(
      readFileSync(ENV_FILE, "utf8")
        .split("\n")
        .filter((l) => l.includes("=") && !l.startsWith("#"))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    )
  : {};

async function keyWorks(key) {
  if (!key) return false;
  const res = await fetch(`${url}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } });
  return res.ok;
}

let apiKey = process.env.SWITCHBOARD_API_KEY ?? current.SWITCHBOARD_API_KEY;
if (!(await keyWorks(apiKey))) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub: DEMO_OWNER, tenant_id: DEMO_TENANT, tenant_role: "owner", exp: Math.floor(Date.now() / 1000) + 60 });
  const owner = `${head}.${body}.${createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url")}`;
  const res = await fetch(`${url}/api/v1/api-keys`, {
    method: "POST",
    headers: { authorization: `Bearer ${owner}`, "content-type": "application/json", "idempotency-key": randomUUID() },
    body: JSON.stringify({ name: "nextjs-example", scopes: ["read", "write"] }),
  });
  const created = await res.json().catch(() => null);
  if (res.status !== 201) fail(`could not create an API key: ${res.status} ${JSON.stringify(created)}`);
  apiKey = created.key;
  console.error(`local-env: created API key ${created.prefix ?? ""}… for the demo tenant`);
}

writeFileSync(
  ENV_FILE,
  [
    "# Written by scripts/local-env.mjs for the Switchboard of ./scripts/run. Not committed.",
    `SWITCHBOARD_URL=${url}`,
    `SWITCHBOARD_JWT_SECRET=${secret}`,
    `SWITCHBOARD_API_KEY=${apiKey}`,
    "",
  ].join("\n"),
  { mode: 0o600 },
);
console.error(`local-env: wrote ${ENV_FILE}`);
