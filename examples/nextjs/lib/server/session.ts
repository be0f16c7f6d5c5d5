// The signed-in user of a request (the session cookie), and what the browser
// gets to connect to Switchboard with.
import { cookies } from "next/headers";
import { NextResponse } from "next/server";
import { ConfigError, devSecrets, serverConfig, type ServerConfig } from "./config";
import { mintUserToken, openSession } from "./token";

export const SESSION_COOKIE = "sb_session";

export type SessionInfo = {
  token: string;
  expires_at: number;
  user: { id: string; name: string };
  switchboard_url: string;
  tenant_id: string;
  project_id: string;
  conversation_id: string;
};

export function sessionInfo(config: ServerConfig, user: { id: string; name: string }): SessionInfo {
  const { token, expiresAt } = mintUserToken(config, user);
  return {
    token,
    expires_at: expiresAt,
    user,
    switchboard_url: config.publicUrl,
    tenant_id: config.tenantId,
    project_id: config.projectId,
    conversation_id: config.conversationId,
  };
}

export async function currentUser(config: ServerConfig) {
  return openSession(config, (await cookies()).get(SESSION_COOKIE)?.value);
}

/** Errors in the same shape as Switchboard's: `{ error: { code, message } }`. */
export function errorResponse(status: number, code: string, message: string) {
  return NextResponse.json({ error: { code, message } }, { status, headers: { "cache-control": "no-store" } });
}

/** The configuration (with the development sign-in's secrets), or the response that says what is missing. */
export function configOr(): ServerConfig | Response {
  try {
    const config = serverConfig();
    devSecrets(config);
    return config;
  } catch (err) {
    if (err instanceof ConfigError) return errorResponse(501, "not_configured", err.message);
    throw err;
  }
}

/** Only JSON from this app's own pages: a form on another site cannot post here. */
export function fromOwnPage(request: Request): Response | null {
  const type = request.headers.get("content-type") ?? "";
  if (!type.toLowerCase().startsWith("application/json")) {
    return errorResponse(415, "invalid_payload", "The body must be JSON (content-type: application/json)");
  }
  const site = request.headers.get("sec-fetch-site");
  if (site && site !== "same-origin" && site !== "none") {
    return errorResponse(403, "forbidden", "Requests come from this app's own pages only");
  }
  return null;
}

/**
 * The caller of a POST from this app's own pages and who signed in, or the
 * response that refuses it (not configured, not from this app, signed out).
 */
export async function signedInPost(
  request: Request,
): Promise<{ config: ServerConfig; user: { id: string; name: string } } | Response> {
  const config = configOr();
  if (config instanceof Response) return config;
  const refused = fromOwnPage(request);
  if (refused) return refused;
  const user = await currentUser(config);
  if (!user) return errorResponse(401, "signed_out", "Sign in first");
  return { config, user };
}

/** Whether the browser reached this app over HTTPS (directly or through a proxy). */
export function overHttps(request: Request): boolean {
  const proto = request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim();
  return (proto ?? new URL(request.url).protocol.replace(":", "")) === "https";
}
