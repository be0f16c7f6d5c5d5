// Switchboard's REST API as this server calls it, with the tenant's API key
// (a service credential: it stays on the server).
import type { ServerConfig } from "./config";

export class SwitchboardError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export async function callSwitchboard<T>(
  config: ServerConfig,
  method: string,
  path: string,
  body?: unknown,
  idempotencyKey?: string,
): Promise<T> {
  if (!config.apiKey) {
    throw new SwitchboardError(503, "not_configured", "SWITCHBOARD_API_KEY is not set (see README.md)");
  }
  const headers: Record<string, string> = { authorization: `Bearer ${config.apiKey}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  // A retry with the same Idempotency-Key is safe: Switchboard stores it once.
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    try {
      res = await fetch(config.switchboardUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(10_000),
      });
    } catch (err) {
      if (attempt < 4 && idempotencyKey) {
        await sleep(200 * attempt);
        continue;
      }
      throw new SwitchboardError(503, "unavailable", `Switchboard did not answer: ${(err as Error).message}`);
    }
    const text = await res.text();
    let json: any = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON: a balancer's error page, say. The status decides what follows.
    }
    if (res.ok) return json as T;
    const retryable = res.status === 429 || res.status === 503;
    if (retryable && attempt < 4 && (idempotencyKey || method === "GET")) {
      const after = Number(res.headers.get("retry-after") ?? 0);
      await sleep(Math.max(after * 1000, 200 * attempt));
      continue;
    }
    throw new SwitchboardError(res.status, json?.error?.code ?? "error", json?.error?.message ?? res.statusText);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
