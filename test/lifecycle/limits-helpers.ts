import type { ServiceProcess } from "../support/processes.ts";
import type { Stack } from "../support/stack.ts";

/** Helpers of the limits, fairness and pause-type suites (real processes, the run log of the span fixtures). */

/** One run of a span fixture: when its handler started and ended, on which process. */
export type Span = { id: string; tag: string; pid: number; start: number; end?: number };

/** An HTTP call to the gateway; the body is parsed JSON (problem+json on errors). */
export async function call(
  stack: Stack | { url: string },
  method: string,
  path: string,
  body?: unknown,
  contentType = "application/json",
): Promise<{ status: number; headers: Headers; body: Record<string, unknown> }> {
  const res = await fetch(`${stack.url}${path}`, {
    method,
    headers: body === undefined ? {} : { "content-type": contentType },
    body: body === undefined ? undefined : JSON.stringify(body),
    // a hung request should fail the test with its path, not run into the test timeout
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
  };
}

/**
 * PATCH a type's queue config and insist on success; with `dispatcher`, also wait until that
 * dispatcher has the new config (its "queue config changed" line), so the next step of a test does not
 * race the KV watch.
 */
export async function patchQueue(
  stack: Stack,
  type: string,
  patch: Record<string, unknown>,
  dispatcher?: ServiceProcess,
): Promise<{ updatedAt: number }> {
  const r = await call(stack, "PATCH", `/v1/queues/${type}`, patch);
  if (r.status !== 200) throw new Error(`PATCH ${type}: ${r.status} ${JSON.stringify(r.body)}`);
  const config = r.body.config as { updatedAt: number };
  if (dispatcher) await applied(dispatcher, type, config.updatedAt);
  return config;
}

/** Resolves once `dispatcher` has applied the config of `type` written at `updatedAt`. */
export async function applied(dispatcher: ServiceProcess, type: string, updatedAt: number): Promise<void> {
  await dispatcher.waitForLog(
    (l) =>
      l.msg === "queue config changed" &&
      l.type === type &&
      (l.config as { updatedAt?: number } | undefined)?.updatedAt === updatedAt,
    5000,
  );
}

/** Enqueue tasks of a span type, a few requests at a time, in the given order per batch; returns ids. */
export async function enqueueSpans(
  stack: Stack,
  type: string,
  items: { tag: string; ms: number; priority?: string; concurrencyKey?: string }[],
  parallel = 1,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < items.length; i += parallel) {
    const batch = items.slice(i, i + parallel);
    const rs = await Promise.all(
      batch.map(({ tag, ms, priority, concurrencyKey }) =>
        stack.post({
          type,
          payload: { ms, tag },
          ...(priority ? { priority } : {}),
          ...(concurrencyKey ? { concurrencyKey } : {}),
        }),
      ),
    );
    for (const r of rs) {
      if (r.status !== 202) throw new Error(`enqueue: ${r.status} ${JSON.stringify(r.body)}`);
      ids.push(r.body.id as string);
    }
  }
  return ids;
}

/** Spans recorded so far whose tag starts with `prefix`, in start order (run log line order breaks ties). */
export function spans(stack: Stack, prefix: string): Span[] {
  const byId = new Map<string, Span>();
  for (const r of stack.runs() as (ReturnType<Stack["runs"]>[number] & { phase?: string })[]) {
    if (!r.tag?.startsWith(prefix)) continue;
    if (r.phase === "start") byId.set(r.id, { id: r.id, tag: r.tag, pid: r.pid, start: r.at });
    else if (r.phase === "end") {
      const s = byId.get(r.id);
      if (s) s.end = r.at;
    }
  }
  return [...byId.values()];
}

/** Most spans running at once; an end and a start at the same ms count as a hand-over, not overlap. */
export function maxOverlap(list: Span[]): number {
  const events: [number, number][] = [];
  for (const s of list) {
    events.push([s.start, 1]);
    events.push([s.end ?? Number.POSITIVE_INFINITY, -1]);
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let cur = 0;
  let max = 0;
  for (const [, d] of events) {
    cur += d;
    max = Math.max(max, cur);
  }
  return max;
}

/** Poll until `n` spans with the prefix have ended (or fail after `timeoutMs`). */
export async function waitForEnded(
  stack: Stack,
  prefix: string,
  n: number,
  timeoutMs = 15_000,
): Promise<Span[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const list = spans(stack, prefix);
    if (list.filter((s) => s.end !== undefined).length >= n) return list;
    if (Date.now() > deadline) {
      throw new Error(`${prefix}: ${list.filter((s) => s.end).length} of ${n} ended after ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
