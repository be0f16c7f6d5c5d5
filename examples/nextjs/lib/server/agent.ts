// A stand-in agent worker, so the example has something to watch. A real one
// runs elsewhere (a queue consumer, a serverless job) and calls the same
// routes with its own API key: it moves the run, records steps and tool calls,
// and streams tokens as `run:delta` events while it writes.
import type { ServerConfig } from "./config";
import { SwitchboardError, callSwitchboard, sleep } from "./switchboard";

type Run = { id: string; status: string };

/** What the demo agent will answer to `prompt`: the text it streams, word by word. */
export function answerFor(prompt: string): string {
  const topic = prompt.trim().replace(/\s+/g, " ").slice(0, 80) || "your question";
  return (
    `Here is what I found about "${topic}". Switchboard streams each token of this answer ` +
    "as a run:delta event with its own offset, so a page that reloads in the middle " +
    "subscribes again with the last offset it saw and gets exactly the tokens it missed: " +
    "nothing lost and nothing repeated. When the text is complete the worker stores it " +
    "as a step, which is what a late visitor reads over REST. Done."
  );
}

/** Creates a run for `user` in the configured project (queued: nothing works on it yet). */
export async function createRun(
  config: ServerConfig,
  user: { id: string; name: string },
  prompt: string,
  key: string,
): Promise<Run> {
  return callSwitchboard<Run>(
    config,
    "POST",
    "/api/v1/runs",
    { project_id: config.projectId, agent: "demo-agent", input: { prompt, requested_by: user.id } },
    `start:${key}`,
  );
}

// Runs this process has started working on (a second start is a no-op).
const started = new Set<string>();

/**
 * Sets the agent to work on `runId` once its page is listening, so the page
 * sees every token. Only a queued run that `user` asked for starts; the answer
 * is how many tokens the agent will stream.
 */
export async function startRun(
  config: ServerConfig,
  user: { id: string },
  runId: string,
  opts: { deltaEveryMs: number },
): Promise<{ deltas: number; started: boolean }> {
  const run = await callSwitchboard<Run & { input: { prompt?: string; requested_by?: string } }>(
    config,
    "GET",
    `/api/v1/runs/${runId}`,
  );
  if (run.input?.requested_by !== user.id) throw new SwitchboardError(404, "not_found", "No such run of yours");
  const prompt = String(run.input.prompt ?? "");
  const words = answerFor(prompt).split(/(?<= )/);
  if (run.status !== "queued" || started.has(runId)) return { deltas: words.length, started: false };
  started.add(runId);
  work(config, runId, prompt, words, opts).catch(async (err) => {
    // Another worker moved it first (409): not this one's to fail.
    if (err instanceof SwitchboardError && err.status === 409) return;
    console.error(`demo agent: run ${runId} failed: ${err.message}`);
    await callSwitchboard(config, "PATCH", `/api/v1/runs/${runId}`, { status: "failed", error: String(err.message) }).catch(
      () => {},
    );
  });
  return { deltas: words.length, started: true };
}

async function work(
  config: ServerConfig,
  runId: string,
  prompt: string,
  words: string[],
  opts: { deltaEveryMs: number },
): Promise<void> {
  const call = <T>(method: string, path: string, body: unknown, key?: string) =>
    callSwitchboard<T>(config, method, `/api/v1/runs/${runId}${path}`, body, key && `${runId}:${key}`);
  await call("PATCH", "", { status: "running" });
  await call("POST", "/steps", { kind: "thought", content: `Looking up "${prompt}" in the project's notes.` }, "step-1");
  const started = Date.now();
  await sleep(150);
  await call(
    "POST",
    "/tool-calls",
    {
      name: "search_notes",
      arguments: { query: prompt },
      result: { hits: 3 },
      status: "succeeded",
      latency_ms: Date.now() - started,
      step: 1,
    },
    "tool-1",
  );
  // Tokens for step 2, two at a time, each batch sent once (its key).
  for (let i = 0; i < words.length; i += 2) {
    const deltas = words.slice(i, i + 2).map((text) => ({ text }));
    await call("POST", "/deltas", { step: 2, deltas }, `delta-${i}`);
    await sleep(opts.deltaEveryMs);
  }
  const text = words.join("");
  await call("POST", "/steps", { kind: "message", content: text, tokens_out: words.length }, "step-2");
  await call("PATCH", "", { status: "succeeded", output: { text } });
}

