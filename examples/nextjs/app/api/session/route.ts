// Development sign-in (on under `next dev`; DEV_SIGNIN=1 elsewhere). POST
// { name } signs in (a session cookie that lasts a week) and answers a
// Switchboard token; GET answers a fresh token for the signed-in user (the
// browser calls it before a token expires and after Switchboard refuses an
// expired one); DELETE signs out.
import { randomUUID } from "node:crypto";
import { NextResponse } from "next/server";
import { SESSION_COOKIE, configOr, currentUser, errorResponse, fromOwnPage, overHttps, sessionInfo } from "@/lib/server/session";
import { SESSION_SECONDS, sealSession } from "@/lib/server/token";

export const dynamic = "force-dynamic";

export async function GET() {
  const config = configOr();
  if (config instanceof Response) return config;
  const user = await currentUser(config);
  if (!user) return errorResponse(401, "signed_out", "Sign in first");
  return NextResponse.json(sessionInfo(config, user), { headers: { "cache-control": "no-store" } });
}

export async function POST(request: Request) {
  const config = configOr();
  if (config instanceof Response) return config;
  const refused = fromOwnPage(request);
  if (refused) return refused;
  let name: unknown;
  try {
    ({ name } = await request.json());
  } catch {
    return errorResponse(400, "invalid_payload", "The body must be JSON: { \"name\": \"…\" }");
  }
  if (typeof name !== "string" || !name.trim() || name.trim().length > 40) {
    return errorResponse(422, "invalid_payload", "name: 1 to 40 characters");
  }
  const user = { id: randomUUID(), name: name.trim() };
  const res = NextResponse.json(sessionInfo(config, user), { headers: { "cache-control": "no-store" } });
  res.cookies.set(SESSION_COOKIE, sealSession(config, user), {
    httpOnly: true,
    sameSite: "lax",
    path: "/",
    secure: overHttps(request),
    maxAge: SESSION_SECONDS,
  });
  return res;
}

export async function DELETE() {
  const res = new NextResponse(null, { status: 204 });
  res.cookies.delete(SESSION_COOKIE);
  return res;
}
