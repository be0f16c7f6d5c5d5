"use client";
// The conversation: history over REST (newest page first, older pages on
// demand), live `message:new` over the socket, sending with `message:send` and
// an idempotency key (shown at once, settled by the ack, sent again after a
// reconnect without ever doubling), typing indicators with `publish`, and who
// is here with `presence:track` / `presence:list`.
import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { useConnection, useSwitchboard } from "./AppShell";
import { explain } from "@/lib/client/errors";
import { NotConnected, type PresenceEntry, type TopicEvent } from "@/lib/client/realtime";
import { api, ApiError } from "@/lib/client/rest";

type Message = {
  id: string;
  sender_id: string | null;
  sender_kind: string;
  content: string;
  metadata?: { name?: string };
  idempotency_key: string | null;
  created_at: string;
  truncated?: boolean;
};
type Pending = { key: string; content: string; state: "sending" | "queued" | "failed"; error?: string; tries?: number };
type Page = { data: Message[]; next_cursor: string | null };

const PAGE = 20;
const TYPING_MS = 3000;

const byTime = (a: Message, b: Message) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id);

export function Chat() {
  const { rt, tokens, session } = useSwitchboard();
  const { status } = useConnection(rt);
  const me = session.user;
  const conversation = session.conversation_id;
  const topic = `conversation:${conversation}`;

  const [messages, setMessages] = useState<Map<string, Message>>(new Map());
  const [pending, setPending] = useState<Pending[]>([]);
  const pendingRef = useRef<Pending[]>([]);
  const [older, setOlder] = useState<string | null | undefined>(undefined);
  const [history, setHistory] = useState<"loading" | "ready" | "error">("loading");
  const [presence, setPresence] = useState<Map<string, PresenceEntry>>(new Map());
  const [typing, setTyping] = useState<Map<string, { name: string; until: number }>>(new Map());
  const [draft, setDraft] = useState("");
  const lastTyping = useRef(0);
  const [resyncs, setResyncs] = useState(0);

  // Unsent messages outlive a reload (sessionStorage): sent again with their
  // keys, they are stored once whatever happened to the first attempt.
  const pendingKey = `pending:${conversation}`;
  const updatePending = useCallback(
    (f: (p: Pending[]) => Pending[]) => {
      pendingRef.current = f(pendingRef.current);
      sessionStorage.setItem(pendingKey, JSON.stringify(pendingRef.current));
      setPending(pendingRef.current);
    },
    [pendingKey],
  );
  useEffect(() => {
    try {
      const saved: Pending[] = JSON.parse(sessionStorage.getItem(pendingKey) ?? "[]");
      if (saved.length) {
        updatePending(() => saved.map((p) => (p.state === "failed" ? p : { ...p, state: "queued" })));
        if (rt.socket.connected) for (const p of saved) if (p.state !== "failed") void trySendRef.current(p.key);
      }
    } catch {
      /* nothing saved */
    }
  }, [pendingKey, updatePending]);

  const merge = useCallback(
    (list: Message[], reset = false) => {
      setMessages((prev) => {
        const next = reset ? new Map<string, Message>() : new Map(prev);
        for (const m of list) {
          const had = next.get(m.id);
          // A preview (an event over the payload cap) never replaces the whole message.
          if (!had || had.truncated || !m.truncated) next.set(m.id, m);
        }
        return next;
      });
      const keys = new Set(list.map((m) => m.idempotency_key));
      if (pendingRef.current.some((p) => keys.has(p.key))) updatePending((ps) => ps.filter((p) => !keys.has(p.key)));
    },
    [updatePending],
  );

  // The newest page; `reset` drops what is shown (after a gap history no longer covers).
  const loadLatest = useCallback(
    async (reset: boolean) => {
      try {
        const page = await api<Page>(tokens, "GET", `/api/v1/conversations/${conversation}/messages?limit=${PAGE}`);
        merge(page.data, reset);
        if (reset || older === undefined) setOlder(page.next_cursor);
        setHistory("ready");
      } catch (err) {
        setHistory("error");
        rt.tell(explain((err as ApiError).code, (err as Error).message));
      }
    },
    [tokens, conversation, merge, older, rt],
  );
  const loadLatestRef = useRef(loadLatest);
  loadLatestRef.current = loadLatest;

  const trySend = useCallback(
    async (key: string) => {
      const p = pendingRef.current.find((x) => x.key === key);
      if (!p) return;
      updatePending((ps) => ps.map((x) => (x.key === key ? { ...x, state: "sending", error: undefined } : x)));
      let ack;
      try {
        ack = await rt.emit<{ message: Message; replayed: boolean }>("message:send", {
          conversation_id: conversation,
          content: p.content,
          idempotency_key: key,
          metadata: { name: me.name },
        });
      } catch (err) {
        // Not connected, or no ack in time: it goes again (same key) on the next connect.
        updatePending((ps) => ps.map((x) => (x.key === key ? { ...x, state: "queued" } : x)));
        if (!(err instanceof NotConnected)) setTimeout(() => rt.socket.connected && void trySendRef.current(key), 1000);
        return;
      }
      if (ack.ok) return merge([ack.message]);
      const e = explain(ack.error.code, ack.error.message);
      rt.tell(e);
      const tries = (p.tries ?? 0) + 1;
      // Rate limits are waited out as long as they last; other failures are
      // retried a few times with backoff, then left to the user.
      const giveUp = e.action === "tell" || e.action === "stop" || (e.action !== "back_off" && tries >= 5);
      if (giveUp) {
        updatePending((ps) => ps.map((x) => (x.key === key ? { ...x, state: "failed", error: e.text, tries } : x)));
      } else {
        updatePending((ps) => ps.map((x) => (x.key === key ? { ...x, state: "queued", tries } : x)));
        const wait = ack.error.retry_after_ms ?? Math.min(30_000, 1000 * 2 ** (tries - 1));
        setTimeout(() => rt.socket.connected && void trySendRef.current(key), wait);
      }
    },
    [rt, conversation, me.name, merge, updatePending],
  );
  const trySendRef = useRef(trySend);
  trySendRef.current = trySend;

  useEffect(() => {
    const onEvent = (event: string, e: TopicEvent) => {
      switch (event) {
        case "message:new": {
          const m = e.data as Message;
          merge([m]);
          // Whoever just sent has stopped typing.
          if (m.sender_id) {
            setTyping((t) => {
              if (!t.has(m.sender_id!)) return t;
              const n = new Map(t);
              n.delete(m.sender_id!);
              return n;
            });
          }
          break;
        }
        case "typing": {
          const d = e.data as { name?: string; at?: number };
          const user = e.from?.user_id;
          // Replayed after a reconnect, an old typing event means nothing any
          // more (30 s of slack for clocks that disagree); shown for a few
          // seconds from when it arrived.
          if (!user || user === me.id || !d?.at || Date.now() - d.at > 30_000) break;
          setTyping((t) => new Map(t).set(user, { name: String(d.name ?? "Someone"), until: Date.now() + TYPING_MS }));
          break;
        }
        case "presence:join":
          setPresence((p) => new Map(p).set(e.data.conn_id, e.data));
          break;
        case "presence:leave":
          setPresence((p) => {
            const n = new Map(p);
            n.delete(e.data.conn_id);
            return n;
          });
          break;
      }
    };
    return rt.subscribe(topic, {
      presence: { name: me.name },
      onEvent,
      onJoined: ({ first, recovered, presence: entries }) => {
        if (entries) setPresence(new Map(entries.map((x) => [x.conn_id, x])));
        // Subscribed first, then read: nothing falls between the two.
        if (first) void loadLatestRef.current(false);
        else if (recovered === false) {
          setResyncs((n) => n + 1);
          void loadLatestRef.current(true);
        }
        for (const p of pendingRef.current) if (p.state !== "failed") void trySendRef.current(p.key);
      },
    });
  }, [rt, topic, me.id, me.name, merge]);

  // Who is here is known only while connected; the rejoin lists it again.
  useEffect(() => {
    if (status !== "connected") {
      setPresence(new Map());
      setTyping(new Map());
    }
  }, [status]);

  // Typing indicators fade.
  useEffect(() => {
    if (typing.size === 0) return;
    const t = setInterval(() => {
      setTyping((m) => {
        const now = Date.now();
        const n = new Map([...m].filter(([, v]) => v.until > now));
        return n.size === m.size ? m : n;
      });
    }, 500);
    return () => clearInterval(t);
  }, [typing.size]);

  // Stay at the newest message while the reader is there; keep the place when
  // an older page is put above.
  const list = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const heightBeforeOlder = useRef<number | null>(null);
  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    if (heightBeforeOlder.current !== null) {
      el.scrollTop += el.scrollHeight - heightBeforeOlder.current;
      heightBeforeOlder.current = null;
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight;
    }
  }, [messages, pending]);

  const loadOlder = async () => {
    if (!older) return;
    heightBeforeOlder.current = list.current?.scrollHeight ?? null;
    try {
      const page = await api<Page>(
        tokens,
        "GET",
        `/api/v1/conversations/${conversation}/messages?limit=${PAGE}&before=${older}`,
      );
      merge(page.data);
      setOlder(page.next_cursor);
    } catch (err) {
      heightBeforeOlder.current = null;
      rt.tell(explain((err as ApiError).code, (err as Error).message));
    }
  };

  const onDraft = (value: string) => {
    setDraft(value);
    const now = Date.now();
    if (value && now - lastTyping.current > 1500 && rt.socket.connected) {
      lastTyping.current = now;
      rt.emit("publish", { topic, event: "typing", data: { name: me.name, at: now } }).catch(() => {});
    }
  };

  const send = (e: React.FormEvent) => {
    e.preventDefault();
    const content = draft.trim();
    if (!content) return;
    const key = crypto.randomUUID();
    updatePending((ps) => [...ps, { key, content, state: "sending" }]);
    setDraft("");
    lastTyping.current = 0;
    void trySend(key);
  };

  const sorted = useMemo(() => [...messages.values()].sort(byTime), [messages]);
  const online = useMemo(() => {
    const names = new Map<string, string>();
    for (const p of presence.values()) names.set(p.user_id, p.state?.name ?? p.user_id.slice(0, 8));
    return [...names.entries()];
  }, [presence]);
  const typingNames = [...typing.values()].map((t) => t.name);

  return (
    <main className="chat">
      <aside>
        <h2>Here now</h2>
        <ul data-testid="presence">
          {online.map(([id, name]) => (
            <li key={id} data-user={id}>
              <span className="dot" /> {name}
              {id === me.id ? " (you)" : ""}
            </li>
          ))}
        </ul>
      </aside>
      <section>
        <div
          className="messages"
          data-testid="messages"
          data-resyncs={resyncs}
          ref={list}
          onScroll={(e) => {
            const el = e.currentTarget;
            atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
          }}
        >
          {older && (
            <button className="link" data-testid="load-older" onClick={loadOlder}>
              Load older messages
            </button>
          )}
          {older === null && history === "ready" && <p className="muted" data-testid="start">Start of the conversation</p>}
          {history === "loading" && <p className="muted">Loading history…</p>}
          {history === "error" && (
            <button className="link" data-testid="retry-history" onClick={() => void loadLatest(false)}>
              The history did not load. Try again
            </button>
          )}
          {sorted.map((m) => (
            <div
              key={m.id}
              className={`message ${m.sender_id === me.id ? "mine" : ""}`}
              data-testid="message"
              data-id={m.id}
              data-key={m.idempotency_key ?? ""}
            >
              <span className="who">{m.metadata?.name ?? (m.sender_kind === "agent" ? "Agent" : "Someone")}</span>
              <span className="text">{m.content}</span>
              {m.truncated && <span className="muted"> …</span>}
            </div>
          ))}
          {pending.map((p) => (
            <div key={p.key} className={`message mine pending ${p.state}`} data-testid="pending" data-state={p.state} data-key={p.key}>
              <span className="who">{me.name}</span>
              <span className="text">{p.content}</span>
              <span className="muted">
                {p.state === "failed" ? ` not sent: ${p.error}` : p.state === "queued" ? " waiting for the connection…" : " sending…"}
              </span>
              {p.state === "failed" && (
                <>
                  {(p.tries ?? 0) >= 5 && (
                    <button className="link" onClick={() => void trySend(p.key)}>
                      Retry
                    </button>
                  )}
                  <button className="link" onClick={() => updatePending((ps) => ps.filter((x) => x.key !== p.key))}>
                    Remove
                  </button>
                </>
              )}
            </div>
          ))}
        </div>
        <p className="typing" data-testid="typing">
          {typingNames.length > 0 ? `${typingNames.join(", ")} ${typingNames.length > 1 ? "are" : "is"} typing…` : " "}
        </p>
        <form onSubmit={send} className="composer">
          <input
            name="message"
            placeholder={status === "connected" ? "Write a message" : "Not connected: messages are sent when the connection is back"}
            value={draft}
            onChange={(e) => onDraft(e.target.value)}
            autoComplete="off"
          />
          <button type="submit">Send</button>
        </form>
      </section>
    </main>
  );
}
