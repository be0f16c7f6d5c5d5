"use client";
// An agent run as it happens: start one (through this app's server, which holds
// the API key), then watch `run:updated`, `run:step` and the streamed
// `run:delta` text. The run's id is in the address and the stream's place (the
// last offset and the text so far) in sessionStorage, so a reload picks the
// stream up where it stopped: the missed tokens are replayed once, none twice.
import { useRouter, useSearchParams } from "next/navigation";
import { useCallback, useEffect, useRef, useState } from "react";
import { useSwitchboard } from "./AppShell";
import { explain } from "@/lib/client/errors";
import type { TopicEvent } from "@/lib/client/realtime";
import { api, type ApiError } from "@/lib/client/rest";

type Step = { seq: number; kind: string; content: string };
type ToolCall = { id: string; name: string; status: string; latency_ms: number | null; arguments: unknown };
type Run = { id: string; status: string; agent: string; input: { prompt?: string }; tokens_out: number };
type Detail = Run & { steps: Step[]; tool_calls: ToolCall[] };
type Stream = { offset?: string; text: Record<number, string>; deltas: number };

const saved = (id: string): Stream | null => {
  try {
    return JSON.parse(sessionStorage.getItem(`run:${id}`) ?? "null");
  } catch {
    return null;
  }
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function RunView() {
  const params = useSearchParams();
  const runId = params.get("run");
  if (!runId) return <StartRun />;
  if (!UUID.test(runId)) return <p className="banner error">There is no such run.</p>;
  return <WatchRun key={runId} runId={runId} start={params.get("start") === "1"} />;
}

function StartRun() {
  const router = useRouter();
  const [prompt, setPromptText] = useState("How do I resume a stream after a reload?");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // One key per intent: a double click or a retry creates one run; another
  // prompt is another intent.
  const key = useRef(crypto.randomUUID());
  const setPrompt = (p: string) => {
    key.current = crypto.randomUUID();
    setPromptText(p);
  };
  return (
    <main className="runs">
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          const res = await fetch("/api/runs", {
            method: "POST",
            headers: { "content-type": "application/json", "idempotency-key": key.current },
            body: JSON.stringify({ prompt }),
          }).catch((err) => err as Error);
          if (res instanceof Error) {
            setBusy(false);
            return setError(`Could not reach the app's server: ${res.message}`);
          }
          const body = await res.json().catch(() => null);
          if (!res.ok) {
            setBusy(false);
            return setError(explain(body?.error?.code, body?.error?.message).text + (body?.error?.message ? ` (${body.error.message})` : ""));
          }
          router.push(`/runs?run=${body.run_id}&start=1`);
        }}
      >
        <h2>Ask the demo agent</h2>
        <input name="prompt" value={prompt} onChange={(e) => setPrompt(e.target.value)} maxLength={500} />
        <button type="submit" disabled={busy}>
          Start run
        </button>
        {error && <p className="banner error">{error}</p>}
      </form>
    </main>
  );
}

function WatchRun({ runId, start }: { runId: string; start: boolean }) {
  const { rt, tokens } = useSwitchboard();
  const router = useRouter();
  const startRef = useRef(start);
  const seq = useRef(0);
  const [detail, setDetail] = useState<Detail | null>(null);
  const [stream, setStream] = useState<Stream>(() => saved(runId) ?? { text: {}, deltas: 0 });
  const [gap, setGap] = useState(false);
  const streamRef = useRef(stream);

  const refresh = useCallback(async () => {
    const mine = ++seq.current;
    try {
      const d = await api<Detail>(tokens, "GET", `/api/v1/runs/${runId}`);
      // An older read answering late must not undo a newer one.
      if (mine === seq.current) setDetail(d);
    } catch (err) {
      rt.tell(explain((err as ApiError).code, (err as Error).message));
    }
  }, [tokens, runId, rt]);

  useEffect(() => {
    const onEvent = (event: string, e: TopicEvent) => {
      if (event === "run:delta") {
        const { step, text } = e.data as { step: number; text: string };
        const s = streamRef.current;
        const next: Stream = {
          offset: e.offset,
          text: { ...s.text, [step]: (s.text[step] ?? "") + text },
          deltas: s.deltas + 1,
        };
        streamRef.current = next;
        sessionStorage.setItem(`run:${runId}`, JSON.stringify(next));
        setStream(next);
      } else if (event === "run:step" || event === "run:updated") {
        void refresh();
      }
    };
    return rt.subscribe(`run:${runId}`, {
      since: streamRef.current.offset,
      onEvent,
      // Subscribed first, then read, so no change falls between the two.
      onJoined: ({ recovered }) => {
        if (recovered === false) setGap(true);
        void refresh();
        // Listening now: set the agent to work (once; the address forgets it).
        if (startRef.current) {
          startRef.current = false;
          fetch(`/api/runs/${runId}/start`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })
            .then(async (res) => {
              if (!res.ok) rt.tell(explain((await res.json().catch(() => null))?.error?.code));
            })
            .catch(() => rt.tell(explain("unavailable")));
          router.replace(`/runs?run=${runId}`);
        }
      },
    });
  }, [rt, runId, refresh, router]);

  if (!detail) return <p className="muted">Loading run…</p>;
  const answer = detail.steps.find((s) => s.kind === "message");
  const live = stream.text[2] ?? "";
  return (
    <main className="runs">
      <h2>
        Run <code>{runId.slice(0, 8)}</code>{" "}
        <span className={`badge ${detail.status}`} data-testid="run-status">
          {detail.status}
        </span>
      </h2>
      <p className="muted">Asked: {detail.input?.prompt}</p>
      <ol className="steps" data-testid="steps">
        {detail.steps
          .filter((s) => s !== answer)
          .map((s) => (
            <li key={s.seq} data-testid="step" data-seq={s.seq}>
              <em>{s.kind}</em> {s.content}
            </li>
          ))}
        {detail.tool_calls.map((t) => (
          <li key={t.id} data-testid="tool-call">
            <em>tool</em> <code>{t.name}</code> {t.status}
            {t.latency_ms != null ? ` in ${t.latency_ms} ms` : ""}
          </li>
        ))}
      </ol>
      <div className="answer" data-testid="answer" data-stored={answer ? "yes" : "no"}>
        {answer ? answer.content : live}
        {!answer && detail.status === "running" && <span className="caret">▍</span>}
      </div>
      <details data-testid="stream" data-deltas={stream.deltas} data-gap={gap ? "yes" : "no"}>
        <summary>
          Streamed {stream.deltas} tokens
          {answer && live ? (live === answer.content ? " · the same as the stored answer" : " · differs from the stored answer") : ""}
          {gap ? " · some tokens were gone from history; showing the stored answer" : ""}
        </summary>
        <pre data-testid="streamed-text">{live}</pre>
      </details>
      <p>
        <a href="/runs">Start another run</a>
      </p>
    </main>
  );
}
