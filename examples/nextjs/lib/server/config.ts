// What the Next.js server needs to know about Switchboard, from its environment.
// Read on the server only: the JWT secret and the API key never reach a browser.

export type ServerConfig = {
  /** Where this server calls Switchboard's REST API. */
  switchboardUrl: string;
  /** Where browsers connect (REST and Socket.IO); often the same address. */
  publicUrl: string;
  /** Development sign-in (DEV_SIGNIN): this server mints user tokens with Switchboard's secret. */
  devSignIn: boolean;
  jwtSecret?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  tenantId: string;
  projectId: string;
  conversationId: string;
  apiKey?: string;
  /** How long a minted user token lives. */
  sessionTtlSeconds: number;
  /** Signs the session cookie. */
  sessionSecret?: string;
};

// The demo tenant, project and conversation that `./scripts/run` seeds.
const DEMO_TENANT = "5b0a0000-0000-4000-8000-000000000001";
const DEMO_PROJECT = "5b0a0000-0000-4000-8000-000000000002";
const DEMO_CONVERSATION = "5b0a0000-0000-4000-8000-000000000003";

export class ConfigError extends Error {}

export function serverConfig(): ServerConfig {
  const env = process.env;
  const switchboardUrl = (env.SWITCHBOARD_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
  const ttl = Number(env.SESSION_TTL_SECONDS ?? 900);
  if (!Number.isInteger(ttl) || ttl < 5 || ttl > 86400) {
    throw new ConfigError("SESSION_TTL_SECONDS must be a whole number of seconds from 5 to 86400");
  }
  // On by default under `next dev`; a production build needs DEV_SIGNIN=1 to
  // let anyone who reaches it sign in with a name.
  const devSignIn = env.DEV_SIGNIN ? env.DEV_SIGNIN === "1" : env.NODE_ENV !== "production";
  const jwtSecret = env.SWITCHBOARD_JWT_SECRET || undefined;
  return {
    switchboardUrl,
    publicUrl: (env.SWITCHBOARD_PUBLIC_URL ?? switchboardUrl).replace(/\/+$/, ""),
    devSignIn,
    jwtSecret,
    jwtIssuer: env.SWITCHBOARD_JWT_ISSUER || undefined,
    jwtAudience: env.SWITCHBOARD_JWT_AUDIENCE || undefined,
    tenantId: env.SWITCHBOARD_TENANT_ID ?? DEMO_TENANT,
    projectId: env.SWITCHBOARD_PROJECT_ID ?? DEMO_PROJECT,
    conversationId: env.SWITCHBOARD_CONVERSATION_ID ?? DEMO_CONVERSATION,
    apiKey: env.SWITCHBOARD_API_KEY || undefined,
    sessionTtlSeconds: ttl,
    sessionSecret: env.SESSION_SECRET || (jwtSecret ? `session:${jwtSecret}` : undefined),
  };
}

/** The signing secrets of the development sign-in, or why it is not available. */
export function devSecrets(config: ServerConfig): { jwtSecret: string; sessionSecret: string } {
  if (!config.devSignIn) {
    throw new ConfigError("the development sign-in is off (DEV_SIGNIN=1 turns it on; a real app signs people in itself)");
  }
  if (!config.jwtSecret || !config.sessionSecret) {
    throw new ConfigError(
      "SWITCHBOARD_JWT_SECRET is not set: it must be the JWT_SECRET Switchboard verifies tokens with (see README.md)",
    );
  }
  return { jwtSecret: config.jwtSecret, sessionSecret: config.sessionSecret };
}
