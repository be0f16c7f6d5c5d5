// POST starts the demo agent on a queued run the signed-in user created
// (a second call, or one for a run already under way, starts nothing).
import { NextResponse } from "next/server";
import { startRun } from "@/lib/server/agent";
import { errorResponse, signedInPost } from "@/lib/server/session";
import { SwitchboardError } from "@/lib/server/switchboard";

export const dynamic = "force-dynamic";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function POST(request: Request, { params }: { params: Promise<{ id: string }> }) {
  const caller = await signedInPost(request);
  if (caller instanceof Response) return caller;
  const { config, user } = caller;
  const { id } = await params;
  if (!UUID.test(id)) return errorResponse(404, "not_found", "No such run");
  const deltaEveryMs = Number(process.env.DEMO_AGENT_DELTA_MS ?? 120);
  try {
    return NextResponse.json(await startRun(config, user, id, { deltaEveryMs }));
  } catch (err) {
    if (err instanceof SwitchboardError) return errorResponse(err.status, err.code, err.message);
    throw err;
  }
}
