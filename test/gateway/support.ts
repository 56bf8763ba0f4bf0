import type { KV } from "@nats-io/kv";
import { Kvm } from "@nats-io/kv";
import { keyEntry, type Scope } from "../../services/enqueue/auth/keys.ts";
import type { TaskState } from "../../shared/task.ts";
import type { Harness } from "../enqueue/harness.ts";

/** Keys for the auth tests: the plaintext key and the SLUICE_API_KEYS entry that admits it. */
export function testKey(name: string, scopes: Scope[]): { key: string; entry: string } {
  const key = `sk_test_${name}_${Math.random().toString(36).slice(2)}`;
  return { key, entry: keyEntry(name, scopes, key) };
}

/** The state record of a task, read through the observer connection. */
export async function stateOf(h: Harness, id: string): Promise<{ state: TaskState; revision: number }> {
  const e = await h.kv.get(id);
  if (!e || e.operation !== "PUT") throw new Error(`no record for ${id}`);
  return { state: e.json<TaskState>(), revision: e.revision };
}

/** Move a task on as a worker would: merge `patch` into its record and store it; returns the revision. */
export async function advance(h: Harness, id: string, patch: Partial<TaskState>): Promise<number> {
  const { state } = await stateOf(h, id);
  return h.kv.put(id, JSON.stringify({ ...state, ...patch, updatedAt: Date.now() }));
}

/** The workers bucket, through the observer connection. */
export function workersKv(h: Harness): Promise<KV> {
  return new Kvm(h.nc).open(h.names.workersBucket);
}

/** One Server-Sent Event. */
export type SseEvent = { id?: string; event?: string; data: string };

/**
 * Open an SSE stream over real HTTP and read its events as they come. `next()` waits for the next
 * event (or rejects after `timeoutMs`); `ended` resolves when the server ends the stream.
 */
export async function openEvents(
  url: string,
  headers: Record<string, string> = {},
): Promise<{
  status: number;
  contentType: string | null;
  retryAfter: string | null;
  next(timeoutMs?: number): Promise<SseEvent>;
  ended: Promise<void>;
  close(): void;
  body(): Promise<string>;
}> {
  const ctrl = new AbortController();
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ctrl.signal });
  const queue: SseEvent[] = [];
  const waiters: ((e: SseEvent) => void)[] = [];
  let buffer = "";
  let endResolve: () => void = () => undefined;
  const ended = new Promise<void>((r) => {
    endResolve = r;
  });
  if (res.status === 200 && res.body) {
    void (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          buffer += decoder.decode(chunk, { stream: true });
          let i = buffer.indexOf("\n\n");
          while (i >= 0) {
            const block = buffer.slice(0, i);
            buffer = buffer.slice(i + 2);
            const ev: SseEvent = { data: "" };
            let hasData = false;
            for (const line of block.split("\n")) {
              if (line.startsWith(":")) continue;
              const [k, ...rest] = line.split(":");
              const v = rest.join(":").replace(/^ /, "");
              if (k === "id") ev.id = v;
              else if (k === "event") ev.event = v;
              else if (k === "data") {
                ev.data += (hasData ? "\n" : "") + v;
                hasData = true;
              }
            }
            if (hasData) {
              const w = waiters.shift();
              if (w) w(ev);
              else queue.push(ev);
            }
            i = buffer.indexOf("\n\n");
          }
        }
      } catch {
        // aborted by close()
      }
      endResolve();
    })();
  } else endResolve();
  return {
    status: res.status,
    contentType: res.headers.get("content-type"),
    retryAfter: res.headers.get("retry-after"),
    ended,
    close: () => ctrl.abort(),
    body: () => res.text(),
    next(timeoutMs = 5_000) {
      const e = queue.shift();
      if (e) return Promise.resolve(e);
      return new Promise((resolve, reject) => {
        const waiter = (ev: SseEvent) => {
          clearTimeout(t);
          resolve(ev);
        };
        // a waiter that gave up must not swallow the next event
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`no event within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(waiter);
      });
    },
  };
}
