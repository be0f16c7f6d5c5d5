// What a person sees for each refusal Switchboard can answer, and what the app
// does about it. Codes are those of `connect_error` (err.data.code), of event
// acks (ack.error.code), of the socket's `error` event and of REST errors.

export type Action =
  /** Get a fresh token and connect again (nothing for the user to do). */
  | "refresh"
  /** Try again after a pause, with backoff. */
  | "retry"
  /** Wait `retry_after_ms`, then try again. */
  | "back_off"
  /** Stop: the user has to do something (sign in again, contact an admin). */
  | "stop"
  /** Nothing to retry: tell the user. */
  | "tell";

export type Explained = { code: string; title: string; text: string; action: Action };

const TEXT: Record<string, Omit<Explained, "code">> = {
  token_expired: { title: "Session refreshed", text: "Your session expired; reconnecting with a fresh one.", action: "refresh" },
  token_missing: { title: "Signed out", text: "You are not signed in. Sign in to continue.", action: "stop" },
  token_invalid: { title: "Signed out", text: "Your sign-in is no longer valid. Sign in again.", action: "stop" },
  signed_out: { title: "Signed out", text: "You are not signed in. Sign in to continue.", action: "stop" },
  tenant_required: { title: "No workspace", text: "This account does not belong to a workspace.", action: "stop" },
  tenant_unknown: { title: "No workspace", text: "This workspace no longer exists.", action: "stop" },
  tenant_suspended: {
    title: "Workspace suspended",
    text: "This workspace is suspended. Ask its administrator to reactivate it; the page reconnects when it is.",
    action: "stop",
  },
  tenant_connection_limit: {
    title: "Workspace is full",
    text: "Too many people are connected to this workspace right now. Retrying shortly.",
    action: "retry",
  },
  node_draining: { title: "Reconnecting", text: "The server is restarting; moving you to another one.", action: "retry" },
  unavailable: { title: "Reconnecting", text: "The service is briefly unavailable. Retrying.", action: "retry" },
  rate_limited: { title: "Slow down", text: "You are sending too fast. Trying again in a moment.", action: "back_off" },
  quota_exceeded: { title: "Workspace quota reached", text: "This workspace has used its message quota for now. Try again later.", action: "back_off" },
  payload_too_large: { title: "Too large", text: "That message is too long to send.", action: "tell" },
  invalid_payload: { title: "Not sent", text: "That message could not be sent as written.", action: "tell" },
  forbidden: { title: "Not allowed", text: "You are not allowed to do that here.", action: "tell" },
  not_found: { title: "Not found", text: "This conversation no longer exists or is not visible to you.", action: "tell" },
  not_subscribed: { title: "Reconnecting", text: "Rejoining the conversation.", action: "retry" },
  conflict: { title: "Not sent", text: "A different message was already sent with this key.", action: "tell" },
  internal: { title: "Something went wrong", text: "The server had a problem. Retrying.", action: "retry" },
  unknown_topic: { title: "Not found", text: "That conversation does not exist.", action: "tell" },
};

export function explain(code: string | undefined, fallback?: string): Explained {
  const known = code ? TEXT[code] : undefined;
  if (known) return { code: code as string, ...known };
  return { code: code ?? "error", title: "Something went wrong", text: fallback ?? "Please try again.", action: "retry" };
}
