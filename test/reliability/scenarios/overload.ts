import type { Priority } from "../../../shared/priority.ts";
import { percentile, runLoad } from "../support/load.ts";
import { createRng } from "../support/rng.ts";
import { RELIABLE_TYPE, System } from "../support/system.ts";

/** Options of {@link runOverloadScenario}. */
export type OverloadOptions = {
  /** Worker slots and handler time: the processing rate is `slots × 1000 / taskMs` tasks/s. */
  slots: number;
  taskMs: number;
  /** Enqueue rate as a multiple of the processing rate. */
  factor: number;
  /** How long to enqueue, ms. */
  durationMs: number;
  /** The type's maxDepth. */
  maxDepth: number;
  /** Share of urgent tasks; the rest are bulk. */
  urgentShare: number;
  seed: number;
  verbose?: boolean;
};

/** Waits (startedAt − enqueuedAt) of one priority, ms. */
export type WaitStats = { n: number; p50: number; p99: number; max: number };

/** What an overload run measured. */
export type OverloadReport = {
  seed: number;
  processingRatePerS: number;
  offeredRatePerS: number;
  statuses: Record<string, number>;
  /** Retry-After values of the 429s. */
  retryAfter: Record<string, number>;
  /** 429s per priority. */
  refusedByPriority: Record<string, number>;
  accepted: number;
  completed: number;
  /** Accepted tasks without a final `completed` after the drain. */
  notCompleted: number;
  /** Largest queue depth seen (GET /v1/queues/:type, every 250 ms). */
  maxDepthSeen: number;
  /** Reads of the depth that were answered (0 would make `maxDepthSeen` say nothing). */
  depthReads: number;
  /** Reads not answered 200 within 5 s: each is a gap in what `maxDepthSeen` covers. */
  depthReadsFailed: Record<string, number>;
  waits: Record<"urgent" | "bulk", WaitStats>;
  /** Completions per second over the enqueue period. */
  throughputPerS: number;
  durationMs: number;
};

/**
 * Enqueue at `factor` × the processing rate of a type with a maxDepth: the gateway must answer 429
 * with Retry-After beyond the depth, accepted urgent tasks must still start promptly (priority), and
 * every accepted task must complete.
 */
export async function runOverloadScenario(o: OverloadOptions): Promise<OverloadReport> {
  const sys = await System.start({ verbose: o.verbose });
  try {
    const gw = await sys.gateway();
    await sys.dispatcher();
    await sys.worker({ WORKER_CONCURRENCY: String(o.slots) });
    const url = sys.url(gw);
    const patch = await fetch(`${url}/v1/queues/${RELIABLE_TYPE}`, {
      method: "PATCH",
      headers: { "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ maxDepth: o.maxDepth }),
    });
    if (patch.status !== 200) throw new Error(`PATCH /v1/queues answered ${patch.status}`);
    // the gateway applies it from its own watch of the bucket: wait until its view says so
    for (let i = 0; i < 50; i++) {
      const q = (await (await fetch(`${url}/v1/queues/${RELIABLE_TYPE}`)).json()) as {
        config: { maxDepth?: number };
      };
      if (q.config.maxDepth === o.maxDepth) break;
      await new Promise((r) => setTimeout(r, 100));
    }

    const processingRatePerS = (o.slots * 1000) / o.taskMs;
    const ratePerS = processingRatePerS * o.factor;
    let maxDepthSeen = 0;
    let depthReads = 0;
    const depthReadsFailed: Record<string, number> = {};
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const sentAt = Date.now();
        const q = await fetch(`${url}/v1/queues/${RELIABLE_TYPE}`, { signal: AbortSignal.timeout(5_000) })
          .then(async (r) =>
            r.status === 200 ? ((await r.json()) as { depth?: { total?: unknown } }) : `status ${r.status}`,
          )
          .catch((err: unknown) => `${(err as Error).name ?? "error"}`);
        if (typeof q === "object" && typeof q.depth?.total === "number") {
          depthReads++;
          maxDepthSeen = Math.max(maxDepthSeen, q.depth.total);
        } else {
          const why = typeof q === "string" ? q : "no depth.total";
          depthReadsFailed[why] = (depthReadsFailed[why] ?? 0) + 1;
          sys.note(`GET /v1/queues/${RELIABLE_TYPE}: ${why} after ${Date.now() - sentAt} ms`);
        }
        await new Promise((r) => setTimeout(r, 250));
      }
    })();

    const priorityOf = (i: number): Priority =>
      createRng(o.seed * 13 + i).chance(o.urgentShare) ? "urgent" : "bulk";
    const t0 = Date.now();
    const l = await runLoad({
      urls: () => [url],
      count: Math.round((ratePerS * o.durationMs) / 1000),
      ratePerS,
      retry: false,
      keyPrefix: `overload-${o.seed}`,
      maxInFlight: 512,
      body: (i) => ({ type: RELIABLE_TYPE, payload: { n: i, ms: o.taskMs }, priority: priorityOf(i) }),
    });
    const sendMs = Date.now() - t0;
    sys.note(`sent ${l.sent} in ${sendMs} ms: ${JSON.stringify(l.statuses)}`);
    const completedDuring = (await sys.states(l.accepted.map((a) => a.id))).values();
    let doneInWindow = 0;
    for (const s of completedDuring)
      if (s?.status === "completed" && (s.finishedAt ?? 0) <= t0 + sendMs) doneInWindow++;
    const ids = l.accepted.map((a) => a.id);
    const states = await sys.waitAllFinal(ids, 60_000 + (o.maxDepth / processingRatePerS) * 2000);
    sampling = false;
    await sampler;

    const waits: Record<"urgent" | "bulk", number[]> = { urgent: [], bulk: [] };
    let completed = 0;
    for (const a of l.accepted) {
      const s = states.get(a.id);
      if (s?.status !== "completed") continue;
      completed++;
      if (s.startedAt !== undefined)
        waits[a.priority === "urgent" ? "urgent" : "bulk"].push(s.startedAt - s.enqueuedAt);
    }
    const refusedByPriority: Record<string, number> = {};
    const acceptedSet = new Set(l.accepted.map((a) => a.i));
    for (let i = 0; i < l.sent; i++) {
      if (acceptedSet.has(i)) continue;
      const p = priorityOf(i);
      refusedByPriority[p] = (refusedByPriority[p] ?? 0) + 1;
    }
    const stats = (v: number[]): WaitStats => ({
      n: v.length,
      p50: percentile(v, 50),
      p99: percentile(v, 99),
      max: v.length ? Math.max(...v) : 0,
    });
    return {
      seed: o.seed,
      processingRatePerS,
      offeredRatePerS: Math.round((l.sent / sendMs) * 10_000) / 10,
      statuses: l.statuses,
      retryAfter: l.retryAfter,
      refusedByPriority,
      accepted: l.accepted.length,
      completed,
      notCompleted: l.accepted.length - completed,
      maxDepthSeen,
      depthReads,
      depthReadsFailed,
      waits: { urgent: stats(waits.urgent), bulk: stats(waits.bulk) },
      throughputPerS: Math.round((doneInWindow / sendMs) * 10_000) / 10,
      durationMs: Date.now() - t0,
    };
  } finally {
    await sys.cleanup();
  }
}
