"use client";
// Signs in (or finds the session), opens the one Socket.IO connection of the
// page, and shows the connection's state and any refusal above the content.
import Link from "next/link";
import { createContext, useContext, useEffect, useState, useSyncExternalStore, type ReactNode } from "react";
import { Realtime } from "@/lib/client/realtime";
import { SignedOut, Tokens, fetchSession, signIn, signOut, type Session } from "@/lib/client/session";

type Ctx = { rt: Realtime; tokens: Tokens; session: Session };
const SwitchboardContext = createContext<Ctx | null>(null);

export function useSwitchboard(): Ctx {
  const ctx = useContext(SwitchboardContext);
  if (!ctx) throw new Error("useSwitchboard outside AppShell");
  return ctx;
}

/** Re-renders on every change of the connection's status or notice. */
export function useConnection(rt: Realtime) {
  const version = useSyncExternalStore(
    (l) => rt.onChange(l),
    () => `${rt.status}|${rt.notice?.code ?? ""}|${rt.notice?.text ?? ""}|${rt.connects}|${rt.tokens.refreshes}`,
    () => "connecting||",
  );
  return { status: rt.status, notice: rt.notice, version };
}

export function AppShell({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session | null | "signed-out" | Error>(null);
  const [ctx, setCtx] = useState<Ctx | null>(null);

  useEffect(() => {
    fetchSession().then(setSession, (e) => setSession(e instanceof SignedOut ? "signed-out" : e));
  }, []);

  useEffect(() => {
    if (!session || typeof session === "string" || session instanceof Error) return;
    const tokens = new Tokens(session);
    const rt = new Realtime(tokens);
    setCtx({ rt, tokens, session });
    rt.start();
    return () => rt.close();
  }, [session]);

  if (session === null) return <p className="muted">Loading…</p>;
  if (session instanceof Error) return <p className="banner error">Sign-in is not available: {session.message}</p>;
  if (session === "signed-out") return <SignIn onSignedIn={setSession} />;
  if (!ctx) return <p className="muted">Connecting…</p>;
  return (
    <SwitchboardContext.Provider value={ctx}>
      <Header ctx={ctx} />
      {children}
    </SwitchboardContext.Provider>
  );
}

function Header({ ctx }: { ctx: Ctx }) {
  const { status, notice } = useConnection(ctx.rt);
  // Sign out, then start again at the sign-in form.
  const leave = async () => {
    ctx.rt.close();
    await signOut();
    location.reload();
  };
  const label = { connecting: "Connecting…", connected: "Connected", reconnecting: "Reconnecting…", stopped: "Disconnected" }[
    status
  ];
  return (
    <header>
      <nav>
        <strong>Switchboard demo</strong>
        <Link href="/">Chat</Link>
        <Link href="/runs">Agent runs</Link>
        <span className="spacer" />
        <span data-testid="me">{ctx.session.user.name}</span>
        <span
          className={`status ${status}`}
          data-testid="connection"
          data-status={status}
          data-connects={ctx.rt.connects}
          data-refreshes={ctx.tokens.refreshes}
        >
          {label}
        </span>
        <button
          className="link"
          onClick={leave}
        >
          Sign out
        </button>
      </nav>
      {notice && (
        <div className={`banner ${notice.action === "stop" ? "error" : "warn"}`} role="alert" data-testid="notice" data-code={notice.code}>
          <strong>{notice.title}.</strong> {notice.text}
          {notice.action === "stop" && notice.code !== "tenant_suspended" && (
            <button
              className="link"
              onClick={leave}
            >
              Sign in again
            </button>
          )}
          {notice.action === "tell" && (
            <button className="link" aria-label="Dismiss" onClick={() => ctx.rt.tell(null)}>
              Dismiss
            </button>
          )}
        </div>
      )}
    </header>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (s: Session) => void }) {
  const [name, setName] = useState("");
  const [error, setError] = useState<string | null>(null);
  return (
    <form
      className="signin"
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        try {
          onSignedIn(await signIn(name));
        } catch (err) {
          setError((err as Error).message);
        }
      }}
    >
      <h1>Sign in</h1>
      <p className="muted">
        Development sign-in: this app's server mints a short-lived Switchboard token for the demo workspace. A real app signs
        people in with its identity provider instead.
      </p>
      <label>
        Your name <input name="name" value={name} onChange={(e) => setName(e.target.value)} maxLength={40} required autoFocus />
      </label>
      <button type="submit">Sign in</button>
      {error && <p className="banner error">{error}</p>}
    </form>
  );
}
