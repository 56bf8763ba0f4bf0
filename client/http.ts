import { SluiceClientError } from "./errors.ts";
import type { Op, Task, TaskEvent, Transport } from "./types.ts";

/** Options of the HTTP transport. */
export type HttpOptions = {
  /** Base URL of the gateway, e.g. `http://127.0.0.1:8080`. */
  url: string;
  /** API key, sent as a bearer token. */
  apiKey?: string | undefined;
  /** Timeout of one request (not of event streams), ms (default 30000). */
  timeoutMs?: number;
  /** `fetch` to use (default the global one). */
  fetch?: typeof fetch;
};

type Call = { method: string; path: string; query?: Record<string, unknown>; body?: unknown };

const enc = encodeURIComponent;
const str = (v: unknown) => String(v);

/** Every operation as an HTTP request. */
const ROUTES: Record<Op, (b: Record<string, unknown>) => Call> = {
  enqueue: (b) => ({ method: "POST", path: "/v1/tasks", body: b }),
  batch: (b) => ({ method: "POST", path: "/v1/tasks:batch", body: b }),
  get: (b) => ({ method: "GET", path: `/v1/tasks/${enc(str(b.id))}` }),
  list: (b) => ({ method: "GET", path: "/v1/tasks", query: b }),
  cancel: (b) => ({ method: "POST", path: `/v1/tasks/${enc(str(b.id))}/cancel` }),
  pause: (b) => ({ method: "POST", path: `/v1/tasks/${enc(str(b.id))}/pause` }),
  resume: (b) => ({ method: "POST", path: `/v1/tasks/${enc(str(b.id))}/resume` }),
  retry: (b) => ({ method: "POST", path: `/v1/tasks/${enc(str(b.id))}/retry` }),
  workers: (b) => ({ method: "GET", path: "/v1/workers", query: b }),
  "queues.list": () => ({ method: "GET", path: "/v1/queues" }),
  "queues.get": (b) => ({ method: "GET", path: `/v1/queues/${enc(str(b.type))}` }),
  "queues.patch": ({ type, ...patch }) => ({
    method: "PATCH",
    path: `/v1/queues/${enc(str(type))}`,
    body: patch,
  }),
  "queues.pause": (b) => ({ method: "POST", path: `/v1/queues/${enc(str(b.type))}/pause` }),
  "queues.resume": (b) => ({ method: "POST", path: `/v1/queues/${enc(str(b.type))}/resume` }),
  "dlq.list": (b) => ({ method: "GET", path: "/v1/dlq", query: b }),
  "dlq.get": (b) => ({ method: "GET", path: `/v1/dlq/${enc(str(b.id))}` }),
  "dlq.replay": (b) => ({ method: "POST", path: "/v1/dlq/replay", body: b }),
  "dlq.purge": (b) =>
    Array.isArray(b.ids) && b.ids.length === 1 && b.type === undefined && b.all === undefined
      ? { method: "DELETE", path: `/v1/dlq/${enc(str(b.ids[0]))}` }
      : { method: "DELETE", path: "/v1/dlq", query: { type: b.type, all: b.all } },
  "schedules.list": () => ({ method: "GET", path: "/v1/schedules" }),
  "schedules.get": (b) => ({ method: "GET", path: `/v1/schedules/${enc(str(b.name))}` }),
  "schedules.create": (b) => ({ method: "POST", path: "/v1/schedules", body: b }),
  "schedules.pause": (b) => ({ method: "POST", path: `/v1/schedules/${enc(str(b.name))}/pause` }),
  "schedules.resume": (b) => ({ method: "POST", path: `/v1/schedules/${enc(str(b.name))}/resume` }),
  "schedules.delete": (b) => ({ method: "DELETE", path: `/v1/schedules/${enc(str(b.name))}` }),
};

/** The HTTP transport: JSON requests, problem+json errors, Server-Sent Events for `events`. */
export function httpTransport(o: HttpOptions): Transport {
  const base = o.url.replace(/\/+$/, "");
  const doFetch = o.fetch ?? fetch;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const auth: Record<string, string> = o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {};

  async function send(
    c: Call,
    signal: AbortSignal,
    accept = "application/json",
    extra: Record<string, string> = {},
  ): Promise<Response> {
    const url = base + c.path + queryString(c.query);
    const headers: Record<string, string> = { accept, ...auth, ...extra };
    if (c.body !== undefined) headers["content-type"] = "application/json";
    let res: Response;
    try {
      res = await doFetch(url, {
        method: c.method,
        headers,
        body: c.body === undefined ? undefined : JSON.stringify(c.body),
        signal,
      });
    } catch (err) {
      if (signal.aborted && (signal.reason as Error)?.name !== "TimeoutError") throw err;
      throw new SluiceClientError(0, "unreachable", `cannot reach ${base}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (res.status >= 400) throw await problemError(res);
    return res;
  }

  return {
    async request(op, body) {
      const res = await send(ROUTES[op](body), AbortSignal.timeout(timeoutMs));
      const text = await res.text();
      const value = text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
      // a batch's outcome is in its status (202 all stored, 207 some)
      return op === "batch" ? { status: res.status, ...value } : value;
    },
    async *events(target, signal) {
      const call: Call =
        "task" in target
          ? { method: "GET", path: `/v1/tasks/${enc(target.task)}/events` }
          : {
              method: "GET",
              path: "/v1/events",
              query: { type: list(target.type), status: list(target.status) },
            };
      const extra: Record<string, string> =
        target.after !== undefined ? { "last-event-id": String(target.after) } : {};
      const res = await send(call, signal, "text/event-stream", extra);
      if (!res.body) return;
      yield* parseSse(res.body as AsyncIterable<Uint8Array>);
    },
    async close() {},
  };
}

function list(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(",") : v;
}

function queryString(q: Record<string, unknown> | undefined): string {
  if (!q) return "";
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v === undefined || v === null) continue;
    p.set(k, Array.isArray(v) ? v.join(",") : String(v));
  }
  const s = p.toString();
  return s ? `?${s}` : "";
}

async function problemError(res: Response): Promise<SluiceClientError> {
  const text = await res.text().catch(() => "");
  let p: { code?: string; detail?: string; errors?: unknown } = {};
  try {
    p = JSON.parse(text) as typeof p;
  } catch {
    // not a problem body (a proxy's error page): keep the status
  }
  const ra = Number(res.headers.get("retry-after"));
  return new SluiceClientError(
    res.status,
    p.code ?? `http_${res.status}`,
    p.detail ?? (text.slice(0, 200) || res.statusText),
    {
      errors: p.errors,
      retryAfterS: Number.isFinite(ra) && ra > 0 ? ra : undefined,
    },
  );
}

/** Parse a Server-Sent Events body into task events. */
export async function* parseSse(body: AsyncIterable<Uint8Array>): AsyncGenerator<TaskEvent> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of body) {
    buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, "\n");
    let i = buffer.indexOf("\n\n");
    while (i >= 0) {
      const block = buffer.slice(0, i);
      buffer = buffer.slice(i + 2);
      i = buffer.indexOf("\n\n");
      let id: string | undefined;
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line === "" || line.startsWith(":")) continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? "" : line.slice(c + 1).replace(/^ /, "");
        if (field === "id") id = value;
        else if (field === "event") event = value;
        else if (field === "data") data.push(value);
      }
      if (event === "error" || event === "overflow") {
        // the server lost its source or we fell behind: the caller resumes from the last id
        throw new SluiceClientError(503, "stream_interrupted", `event stream interrupted (${event})`);
      }
      if (data.length === 0 || id === undefined) continue;
      yield { id: Number(id), event: event as TaskEvent["event"], task: JSON.parse(data.join("\n")) as Task };
    }
  }
}
