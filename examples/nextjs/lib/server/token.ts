// Development identity: user tokens minted here, signed with the secret
// Switchboard verifies (HS256). This is the one place a real app replaces:
// with Supabase Auth (Switchboard verifies Supabase's tokens as they are) or
// its own identity provider (JWT_JWKS_URL on Switchboard), the browser gets its
// token from there and nothing here signs anything.
import { createHmac, timingSafeEqual } from "node:crypto";
import { devSecrets, type ServerConfig } from "./config";

const b64 = (v: string | Buffer) => Buffer.from(v).toString("base64url");

function hs256(secret: string, data: string): string {
  return createHmac("sha256", secret).update(data).digest("base64url");
}

/** A user token for Switchboard: the tenant comes from the token, never the request. */
export function mintUserToken(
  config: ServerConfig,
  user: { id: string; name: string },
  now = Math.floor(Date.now() / 1000),
): { token: string; expiresAt: number } {
  const expiresAt = now + config.sessionTtlSeconds;
  const claims: Record<string, unknown> = {
    sub: user.id,
    tenant_id: config.tenantId,
    tenant_role: "member",
    name: user.name,
    iat: now,
    exp: expiresAt,
  };
  if (config.jwtIssuer) claims.iss = config.jwtIssuer;
  if (config.jwtAudience) claims.aud = config.jwtAudience;
  const head = b64(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64(JSON.stringify(claims));
  const { jwtSecret } = devSecrets(config);
  return { token: `${head}.${body}.${hs256(jwtSecret, `${head}.${body}`)}`, expiresAt };
}

/** How long a sign-in lasts before the name has to be given again. */
export const SESSION_SECONDS = 7 * 24 * 3600;

/** The session cookie's value: who signed in and until when, signed so the browser cannot change it. */
export function sealSession(config: ServerConfig, user: { id: string; name: string }): string {
  const exp = Math.floor(Date.now() / 1000) + SESSION_SECONDS;
  const body = b64(JSON.stringify({ id: user.id, name: user.name, exp }));
  return `${body}.${hs256(devSecrets(config).sessionSecret, body)}`;
}

export function openSession(config: ServerConfig, value: string | undefined): { id: string; name: string } | null {
  if (!value) return null;
  const [body, sig] = value.split(".");
  if (!body || !sig) return null;
  const want = Buffer.from(hs256(devSecrets(config).sessionSecret, body));
  const got = Buffer.from(sig);
  if (want.length !== got.length || !timingSafeEqual(want, got)) return null;
  try {
    const s = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
    const fresh = typeof s?.exp === "number" && s.exp > Date.now() / 1000;
    return fresh && typeof s.id === "string" && typeof s.name === "string" ? { id: s.id, name: s.name } : null;
  } catch {
    return null;
  }
}
