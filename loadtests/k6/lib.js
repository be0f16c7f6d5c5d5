// Shared by the k6 scripts: where to aim, tokens signed like the server's
// (HS256 with JWT_SECRET), and a tenant made for the run with PLATFORM_KEY.
import http from "k6/http";
import { hmac } from "k6/crypto";
import encoding from "k6/encoding";
import { fail } from "k6";

export const BASE_URL = __ENV.BASE_URL || "http://127.0.0.1:18180";
export const WS_URL = BASE_URL.replace(/^http/, "ws");

/** A number from the environment, or `fallback`. */
export function envNumber(name, fallback) {
  const v = __ENV[name];
  return v === undefined || v === "" ? fallback : Number(v);
}

export function uuid() {
  const h = "0123456789abcdef";
  let s = "";
  for (let i = 0; i < 32; i++) {
    let d = Math.floor(Math.random() * 16);
    if (i === 12) d = 4;
    if (i === 16) d = (d & 3) | 8;
    s += h[d];
    if (i === 7 || i === 11 || i === 15 || i === 19) s += "-";
  }
  return s;
}

/** An HS256 user token for `tenant` (a random user unless given). */
export function userToken(tenant, role = "member", user = uuid(), ttl = 3600) {
  const secret = __ENV.JWT_SECRET || fail("JWT_SECRET is required");
  const head = encoding.b64encode(JSON.stringify({ alg: "HS256", typ: "JWT" }), "rawurl");
  const claims = { sub: user, tenant_id: tenant, tenant_role: role, exp: Math.floor(Date.now() / 1000) + ttl };
  const body = encoding.b64encode(JSON.stringify(claims), "rawurl");
  return `${head}.${body}.${hmac("sha256", secret, `${head}.${body}`, "base64rawurl")}`;
}

export function headers(token, extra = {}) {
  return { headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...extra } };
}

/** A tenant whose limits leave room for the load (PLATFORM_KEY); its id. */
export function createTenant(name) {
  const key = __ENV.PLATFORM_KEY || fail("PLATFORM_KEY is required");
  const limits = {
    max_connections: 100000,
    events_per_second: 100000,
    http_requests_per_second: 100000,
    max_topics_per_socket: 100,
  };
  const res = http.post(`${BASE_URL}/api/v1/tenants`, JSON.stringify({ name, limits }), headers(key));
  if (res.status !== 201) fail(`tenant not created: ${res.status} ${res.body}`);
  return res.json("id");
}
