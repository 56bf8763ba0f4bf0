import { setTimeout as sleep } from "node:timers/promises";
import type { Priority } from "../../../shared/priority.ts";

/** A task the gateway accepted (202). */
export type Accepted = { i: number; id: string; priority: Priority; sentAt: number; acceptedAt: number };

/** What a load run saw. */
export type LoadResult = {
  accepted: Accepted[];
  /** Final answers by status (`net` for a request that never got one). */
  statuses: Record<string, number>;
  /** Attempts answered 503 or failed on the network and sent again (same idempotency key). */
  retries: number;
  /** 429 answers and their Retry-After header values. */
  retryAfter: Record<string, number>;
  /** Requests started. */
  sent: number;
  durationMs: number;
};

/** Options of {@link runLoad}. */
export type LoadOptions = {
  /** Gateways to spread requests over, asked per request (a restarted gateway keeps its URL). */
  urls: () => string[];
  /** Tasks to send; the run ends when all are answered. */
  count: number;
  /** Open-loop send rate, requests per second (request i is due at i / rate s). */
  ratePerS: number;
  /** The enqueue body of task i (the idempotency key is added). */
  body: (i: number) => { type: string; payload: unknown; priority: Priority };
  /**
   * Retry a request that failed on the network or got 503, with the same idempotency key, until it is
   * answered otherwise: what a careful client does through an outage or a gateway restart.
   */
  retry: boolean;
  /** Most requests in flight; the schedule waits beyond it (default 256). */
  maxInFlight?: number;
  /** Prefix of the idempotency keys (unique per run). */
  keyPrefix: string;
};

/**
 * Send `count` enqueue requests at a steady rate over real HTTP and record every answer. Each carries
 * an idempotency key, so a retry after an answer that never arrived (a gateway that died mid-request)
 * cannot create a second task.
 */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const res: LoadResult = { accepted: [], statuses: {}, retries: 0, retryAfter: {}, sent: 0, durationMs: 0 };
  const t0 = Date.now();
  const maxInFlight = o.maxInFlight ?? 256;
  let inFlight = 0;
  let rr = 0;
  const pending: Promise<void>[] = [];
  const count = (k: string) => {
    res.statuses[k] = (res.statuses[k] ?? 0) + 1;
  };

  const one = async (i: number): Promise<void> => {
    const b = o.body(i);
    const body = JSON.stringify({ ...b, idempotencyKey: `${o.keyPrefix}-${i}` });
    const sentAt = Date.now();
    for (;;) {
      const urls = o.urls();
      const url = urls[rr++ % urls.length]!;
      let status: number | "net" = "net";
      let json: { id?: string } | undefined;
      let retryAfter: string | null = null;
      try {
        const r = await fetch(`${url}/v1/tasks`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
          signal: AbortSignal.timeout(15_000),
        });
        status = r.status;
        retryAfter = r.headers.get("retry-after");
        json = (await r.json().catch(() => undefined)) as { id?: string } | undefined;
      } catch {
        status = "net";
      }
      if (o.retry && (status === "net" || status === 503)) {
        res.retries++;
        await sleep(200);
        continue;
      }
      count(String(status));
      if (status === 202 && json?.id) {
        res.accepted.push({ i, id: json.id, priority: b.priority, sentAt, acceptedAt: Date.now() });
      }
      if (status === 429) res.retryAfter[String(retryAfter)] = (res.retryAfter[String(retryAfter)] ?? 0) + 1;
      return;
    }
  };

  for (let i = 0; i < o.count; i++) {
    const due = t0 + (i * 1000) / o.ratePerS;
    const wait = due - Date.now();
    if (wait > 1) await sleep(wait);
    while (inFlight >= maxInFlight) await sleep(5);
    inFlight++;
    res.sent++;
    pending.push(
      one(i).finally(() => {
        inFlight--;
      }),
    );
  }
  await Promise.all(pending);
  res.durationMs = Date.now() - t0;
  return res;
}

/** The p-th percentile (0–100) of a list of numbers (nearest rank); 0 for an empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const v = [...values].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))]!;
}
