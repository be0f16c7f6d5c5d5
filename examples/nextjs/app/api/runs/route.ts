// POST { prompt } creates an agent run for the signed-in user with the
// tenant's API key (which never leaves this server); `Idempotency-Key` makes a
// retried click create one run, not two. The page then subscribes to the run
// and starts the agent (`POST /api/runs/{id}/start`), so it sees every token.
import { NextResponse } from "next/server";
import { createRun } from "@/lib/server/agent";
import { errorResponse, signedInPost } from "@/lib/server/session";
import { SwitchboardError } from "@/lib/server/switchboard";

export const dynamic = "force-dynamic";

export async function POST(request: Request) {
  const caller = await signedInPost(request);
  if (caller instanceof Response) return caller;
  const { config, user } = caller;
  let prompt: unknown;
  try {
    ({ prompt } = await request.json());
  } catch {
    return errorResponse(400, "invalid_payload", "The body must be JSON: { \"prompt\": \"…\" }");
  }
  if (typeof prompt !== "string" || !prompt.trim() || prompt.length > 500) {
    return errorResponse(422, "invalid_payload", "prompt: 1 to 500 characters");
  }
  const key = request.headers.get("idempotency-key");
  if (!key || !/^[A-Za-z0-9_-]{8,100}$/.test(key)) {
    return errorResponse(400, "invalid_payload", "Idempotency-Key: 8 to 100 letters, digits, _ or -");
  }
  try {
    const run = await createRun(config, user, prompt.trim(), `${user.id}:${key}`);
    return NextResponse.json({ run_id: run.id }, { status: 201 });
  } catch (err) {
    if (err instanceof SwitchboardError) return errorResponse(err.status, err.code, err.message);
    throw err;
  }
}
