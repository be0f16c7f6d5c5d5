// The signed-in user of a request (the session cookie), and what the browser
// gets to connect to Switchboard with.
import { cookies } from "next/headers";
import { NextResponse } from "next/server";
import { ConfigError, serverConfig, type ServerConfig } from "./config";
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

/** The configuration, or the response that says what is missing. */
export function configOr(): ServerConfig | Response {
  try {
    return serverConfig();
  } catch (err) {
    if (err instanceof ConfigError) return errorResponse(500, "not_configured", err.message);
    throw err;
  }
}
