// One Socket.IO connection to Switchboard per page, with what an app needs
// around socket.io-client: a token that is fetched for every (re)connect and
// renewed before it expires, topics that are joined again after a reconnect
// with the last offset seen (so nothing is missed and nothing repeats), the
// drain and lagging notices honoured, and every refusal turned into something
// a person can read (errors.ts).
import { io, type Socket } from "socket.io-client";
import { explain, type Explained } from "./errors";
import { SignedOut, type Tokens } from "./session";

export type TopicEvent<T = any> = {
  topic: string;
  offset?: string;
  data: T;
  from?: { kind: string; user_id?: string };
};

export type Refusal = { code: string; message: string; retry_after_ms?: number };
export type Ack<T = object> = ({ ok: true } & T) | { ok: false; error: Refusal };

export type PresenceEntry = { user_id: string; conn_id: string; state: any };

export type Joined = {
  /** `false`: Switchboard's history no longer covers the gap; reload over REST. */
  recovered?: boolean;
  /** True on the first join of this subscription. */
  first: boolean;
  presence?: PresenceEntry[];
};

export type Status = "connecting" | "connected" | "reconnecting" | "stopped";

type Sub = {
  topic: string;
  last?: string;
  joins: number;
  presence?: unknown;
  onEvent: (event: string, e: TopicEvent) => void;
  onJoined?: (j: Joined) => void;
};

export class NotConnected extends Error {}

/** How often a page of a suspended tenant tries again. */
const SUSPENDED_RETRY_MS = 10_000;

export class Realtime {
  readonly socket: Socket;
  status: Status = "connecting";
  notice: Explained | null = null;
  /** Connections made, for display. */
  connects = 0;
  private subs = new Map<string, Sub>();
  private listeners = new Set<() => void>();
  private timers = new Set<ReturnType<typeof setTimeout>>();
  private refreshTimer?: ReturnType<typeof setTimeout>;
  private refusals = 0;
  private closed = false;
  private suspended = false;

  constructor(readonly tokens: Tokens) {
    this.socket = io(tokens.session.switchboard_url, {
      // Called for every connection attempt: a reconnect always brings a current token.
      auth: (cb) => {
        tokens.token().then(
          (token) => cb({ token }),
          // Signed out: no token (the server says token_missing). The app's
          // server briefly unreachable: the token held, which the server takes
          // or refuses as expired (then refreshed with backoff).
          (err) => cb(err instanceof SignedOut ? {} : { token: tokens.session.token }),
        );
      },
      // Sends the balancer's affinity cookie with long-polling requests.
      withCredentials: true,
      reconnectionDelay: 300,
      reconnectionDelayMax: 5000,
      timeout: 10_000,
      autoConnect: false,
    });
    const s = this.socket;
    s.on("connect", () => {
      this.connects += 1;
      this.refusals = 0;
      this.suspended = false;
      this.set("connected", this.notice?.action === "tell" ? this.notice : null);
      this.scheduleRefresh();
      for (const sub of this.subs.values()) void this.join(sub);
    });
    s.on("disconnect", (reason) => {
      clearTimeout(this.refreshTimer);
      if (this.closed || reason === "io client disconnect") return this.set("stopped");
      // The server closed the session itself (the tenant was suspended, an
      // admin disconnected the user): socket.io-client will not come back on its own.
      if (reason === "io server disconnect") {
        if (this.suspended) {
          // Try now and then: the page comes back by itself when the tenant is reactivated.
          this.later(() => this.socket.connect(), SUSPENDED_RETRY_MS);
          return this.set("stopped");
        }
        this.later(() => this.socket.connect(), 1000);
      }
      this.set("reconnecting");
    });
    s.on("connect_error", (err: Error & { data?: Refusal }) => {
      if (this.closed) return;
      // No data: the transport failed (offline, server gone); socket.io-client retries.
      if (!err.data?.code) return this.set("reconnecting");
      const e = explain(err.data.code, err.data.message);
      this.refusals += 1;
      const backoff = Math.min(30_000, 500 * 2 ** Math.min(this.refusals, 6)) * (0.5 + Math.random());
      switch (e.action) {
        case "refresh":
          this.set("reconnecting", e);
          this.tokens.refresh().then(
            // Once at once; again (a clock far off, say) only with backoff.
            () => (this.refusals > 1 ? this.later(() => this.socket.connect(), backoff) : this.socket.connect()),
            (err) =>
              err instanceof SignedOut
                ? this.set("stopped", explain("signed_out"))
                : this.later(() => this.socket.connect(), backoff),
          );
          break;
        case "retry":
        case "back_off":
          this.set("reconnecting", e);
          this.later(() => this.socket.connect(), err.data.retry_after_ms ?? backoff);
          break;
        default:
          if (e.code === "tenant_suspended") {
            this.suspended = true;
            this.later(() => this.socket.connect(), SUSPENDED_RETRY_MS);
          }
          this.set("stopped", e);
      }
    });
    // The server says why before it closes a socket.
    s.on("error", (e: Refusal) => {
      const x = explain(e?.code, e?.message);
      if (x.code === "token_expired") void this.tokens.refresh().catch(() => {});
      if (x.code === "tenant_suspended") this.suspended = true;
      this.set(this.status, x);
    });
    s.on("system:drain", ({ reconnect_after_ms }: { reconnect_after_ms: number }) => {
      this.later(() => this.socket.io.engine?.close(), reconnect_after_ms);
    });
    s.on("system:lagging", ({ topic }: { topic: string }) => {
      const sub = this.subs.get(topic);
      if (sub) void this.join(sub);
    });
    s.onAny((event: string, payload: TopicEvent) => {
      const sub = payload && typeof payload === "object" ? this.subs.get(payload.topic) : undefined;
      if (!sub) return;
      if (payload.offset) sub.last = payload.offset;
      sub.onEvent(event, payload);
    });
  }

  start() {
    // The browser knows it lost the network long before a missed ping would
    // tell (up to 45 s): drop the dead transport now, reconnect when back.
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    this.socket.connect();
  }

  close() {
    this.closed = true;
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.refreshTimer);
    for (const t of this.timers) clearTimeout(t);
    this.socket.disconnect();
  }

  /**
   * Joins `topic` now (when connected) and after every reconnect, from the
   * last offset seen (or `since` the first time). Returns the unsubscribe.
   */
  subscribe(
    topic: string,
    opts: Pick<Sub, "onEvent" | "onJoined" | "presence"> & { since?: string },
  ): () => void {
    const sub: Sub = { topic, last: opts.since, joins: 0, ...opts };
    this.subs.set(topic, sub);
    if (this.socket.connected) void this.join(sub);
    return () => {
      if (this.subs.get(topic) !== sub) return;
      this.subs.delete(topic);
      if (this.socket.connected) this.socket.emit("unsubscribe", { topic }, () => {});
    };
  }

  /** Sends a client event and waits for its ack; throws NotConnected or on timeout. */
  async emit<T = object>(event: string, payload: unknown, timeoutMs = 8000): Promise<Ack<T>> {
    if (!this.socket.connected) throw new NotConnected(event);
    return this.socket.timeout(timeoutMs).emitWithAck(event, payload);
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Shows a refusal of an event (rate limited, too large, …) until the next one. */
  tell(notice: Explained | null) {
    this.set(this.status, notice);
  }

  private async join(sub: Sub) {
    let ack: Ack<{ offset: string; recovered?: boolean }>;
    const again = () => this.later(() => this.socket.connected && void this.join(sub), 1000);
    try {
      ack = await this.emit("subscribe", { topic: sub.topic, ...(sub.last ? { since: sub.last } : {}) });
    } catch {
      // Disconnected meanwhile (the next connect joins again), or no answer in time: ask again.
      if (this.socket.connected) again();
      return;
    }
    if (this.subs.get(sub.topic) !== sub) return;
    if (!ack.ok) {
      const e = explain(ack.error.code, ack.error.message);
      this.tell(e);
      if (e.action === "retry" || e.action === "back_off") {
        this.later(() => this.socket.connected && void this.join(sub), ack.error.retry_after_ms ?? 1000);
      }
      return;
    }
    sub.last ??= ack.offset;
    const first = sub.joins++ === 0;
    let presence: PresenceEntry[] | undefined;
    if (sub.presence !== undefined) {
      try {
        await this.emit("presence:track", { topic: sub.topic, state: sub.presence });
        const list = await this.emit<{ entries: PresenceEntry[] }>("presence:list", { topic: sub.topic });
        if (list.ok) presence = list.entries;
      } catch {
        /* presence is shown again on the next join; the topic itself is joined */
      }
    }
    sub.onJoined?.({ recovered: ack.recovered, first, presence });
  }

  // Renews the token over the open socket before it expires (`auth:refresh`),
  // so the socket outlives it; if that fails the server closes the socket at
  // expiry and the reconnect fetches a fresh token.
  private scheduleRefresh() {
    const ttl = this.tokens.session.expires_at - Date.now() / 1000;
    // A minute before expiry, or at three quarters of a short-lived token's life.
    this.refreshIn(Math.max(1, Math.max(ttl * 0.75, ttl - 60)) * 1000);
  }

  private refreshIn(ms: number) {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(async () => {
      try {
        const s = await this.tokens.refresh();
        const ack = await this.emit("auth:refresh", { token: s.token });
        if (ack.ok) {
          this.scheduleRefresh();
          this.set(this.status);
          return;
        }
      } catch {
        /* tried again below */
      }
      // Refused or unanswered: again in a few seconds while the token lasts
      // (after it, the reconnect fetches a fresh one anyway).
      if (this.tokens.session.expires_at - Date.now() / 1000 > 5) this.refreshIn(3000);
    }, ms);
  }

  private onOffline = () => {
    if (this.socket.connected) this.socket.io.engine?.close();
    this.set("reconnecting");
  };

  private onOnline = () => {
    if (!this.socket.connected && !this.closed && !this.suspended) this.socket.connect();
  };

  private later(f: () => void, ms: number) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.closed) f();
    }, ms);
    this.timers.add(t);
  }

  private set(status: Status, notice: Explained | null = this.notice) {
    this.status = status;
    this.notice = notice;
    for (const l of this.listeners) l();
  }
}
