// The browser's side of sign-in: the Switchboard token from this app's
// `/api/session`, refreshed before it expires and whenever Switchboard says it
// has (`token_expired`).
import type { SessionInfo } from "../server/session";

/** What `/api/session` answers (a type only: nothing of the server's code reaches the browser). */
export type Session = SessionInfo;

export class SignedOut extends Error {}

export async function fetchSession(): Promise<Session> {
  const res = await fetch("/api/session", { cache: "no-store" });
  if (res.status === 401) throw new SignedOut("signed out");
  if (!res.ok) {
    const body = await res.json().catch(() => null);
    throw new Error(body?.error?.message ?? `sign-in service answered ${res.status}`);
  }
  return res.json();
}

export async function signIn(name: string): Promise<Session> {
  const res = await fetch("/api/session", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await res.json().catch(() => null);
  if (!res.ok) throw new Error(body?.error?.message ?? `sign-in failed (${res.status})`);
  return body;
}

export async function signOut(): Promise<void> {
  await fetch("/api/session", { method: "DELETE" });
}

/** Holds the current token; `token()` refreshes one that is about to expire. */
export class Tokens {
  refreshes = 0;
  private pending: Promise<Session> | null = null;

  private margin: number;

  constructor(public session: Session) {
    this.margin = Tokens.marginOf(session);
  }

  // Renew 30 s before expiry, or at three quarters of a shorter token's life.
  private static marginOf(s: Session): number {
    return Math.min(30, Math.max(1, (s.expires_at - Date.now() / 1000) / 4));
  }

  async token(): Promise<string> {
    if (this.session.expires_at - Date.now() / 1000 < this.margin) await this.refresh();
    return this.session.token;
  }

  /** A fresh token from the app's server (one request however many ask at once). */
  refresh(): Promise<Session> {
    this.pending ??= fetchSession()
      .then((s) => {
        this.session = s;
        this.margin = Tokens.marginOf(s);
        this.refreshes += 1;
        return s;
      })
      .finally(() => {
        this.pending = null;
      });
    return this.pending;
  }
}
