// Switchboard's REST API from the browser, with the user's own token (the
// server answers only what that user may see). An expired token is refreshed
// and the request sent once more; a 429 says how long to wait.
import type { Tokens } from "./session";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

export async function api<T>(tokens: Tokens, method: string, path: string, body?: unknown): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(tokens.session.switchboard_url + path, {
      method,
      headers: {
        authorization: `Bearer ${await tokens.token()}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const json = await res.json().catch(() => null);
    if (res.ok) return json as T;
    const code = json?.error?.code ?? "error";
    if (res.status === 401 && attempt === 1) {
      await tokens.refresh();
      continue;
    }
    const after = Number(res.headers.get("retry-after") ?? NaN);
    throw new ApiError(res.status, code, json?.error?.message ?? res.statusText, Number.isFinite(after) ? after * 1000 : undefined);
  }
}
