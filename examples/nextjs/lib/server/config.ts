// What the Next.js server needs to know about Switchboard, from its environment.
// Read on the server only: the JWT secret and the API key never reach a browser.

export type ServerConfig = {
  /** Where this server calls Switchboard's REST API. */
  switchboardUrl: string;
  /** Where browsers connect (REST and Socket.IO); often the same address. */
  publicUrl: string;
  jwtSecret: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  tenantId: string;
  projectId: string;
  conversationId: string;
  apiKey?: string;
  /** How long a minted user token lives. */
  sessionTtlSeconds: number;
  /** Signs the session cookie. */
  sessionSecret: string;
};

// The demo tenant, project and conversation that `./scripts/run` seeds.
const DEMO_TENANT = "5b0a0000-0000-4000-8000-000000000001";
const DEMO_PROJECT = "5b0a0000-0000-4000-8000-000000000002";
const DEMO_CONVERSATION = "5b0a0000-0000-4000-8000-000000000003";

export class ConfigError extends Error {}

export function serverConfig(): ServerConfig {
  const env = process.env;
  const jwtSecret = env.SWITCHBOARD_JWT_SECRET ?? "";
  if (!jwtSecret) {
    throw new ConfigError(
      "SWITCHBOARD_JWT_SECRET is not set: it must be the JWT_SECRET Switchboard verifies tokens with (see README.md)",
    );
  }
  const switchboardUrl = (env.SWITCHBOARD_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  const ttl = Number(env.SESSION_TTL_SECONDS ?? 900);
  if (!Number.isInteger(ttl) || ttl < 5 || ttl > 86400) {
    throw new ConfigError("SESSION_TTL_SECONDS must be a whole number of seconds from 5 to 86400");
  }
  return {
    switchboardUrl,
    publicUrl: (env.SWITCHBOARD_PUBLIC_URL ?? switchboardUrl).replace(/\/+$/, ""),
    jwtSecret,
    jwtIssuer: env.SWITCHBOARD_JWT_ISSUER || undefined,
    jwtAudience: env.SWITCHBOARD_JWT_AUDIENCE || undefined,
    tenantId: env.SWITCHBOARD_TENANT_ID ?? DEMO_TENANT,
    projectId: env.SWITCHBOARD_PROJECT_ID ?? DEMO_PROJECT,
    conversationId: env.SWITCHBOARD_CONVERSATION_ID ?? DEMO_CONVERSATION,
    apiKey: env.SWITCHBOARD_API_KEY || undefined,
    sessionTtlSeconds: ttl,
    sessionSecret: env.SESSION_SECRET || `session:${jwtSecret}`,
  };
}
