import type { Priority } from "../../shared/priority.ts";
import { counter, gauge, histogram, TASK_SECONDS_BUCKETS } from "../../shared/telemetry/metrics.ts";

/**
 * The dispatcher's metrics. Counters are recorded as things happen ({@link recordDispatch} from the
 * dispatcher's `onDispatch` hook); the gauges are written by the sampler in queue-depth.ts. The
 * lifecycle metrics (scheduled, retrying, throttled, dead letters) live in
 * shared/telemetry/lifecycle-metrics.ts, re-exported here for the dispatcher's scheduler and limits.
 */

export {
  primeLifecycleSeries,
  recordDeadLetter,
  recordThrottled,
  setRetryingTasks,
  setScheduledTasks,
  THROTTLE_REASONS,
  type ThrottleReason,
} from "../../shared/telemetry/lifecycle-metrics.ts";

/** Tasks waiting per type and priority: the leader's view (followers export none). */
export const queueDepth = gauge({
  name: "sluice_queue_depth",
  help: "Tasks waiting to be dispatched, by type and priority: num_pending of the (priority, type) tasks consumer plus the messages the dispatcher holds. Exported by the leader only.",
  labelNames: ["type", "priority"] as const,
});

const dispatched = counter({
  name: "sluice_dispatched_total",
  help: "Tasks moved to the work stream, by type and priority.",
  labelNames: ["type", "priority"] as const,
});

const dispatchWait = histogram({
  name: "sluice_dispatch_wait_seconds",
  help: "Time from enqueue to dispatch, by type and priority.",
  labelNames: ["type", "priority"] as const,
  buckets: TASK_SECONDS_BUCKETS,
});

const leftoversRemoved = counter({
  name: "sluice_stream_leftovers_removed_total",
  help: "Messages removed from a work-queue stream below their consumer's ack floor: acked, but kept by a server crash (not work).",
  labelNames: ["stream"] as const,
});

/** `n` acked leftovers removed from `stream` (leftovers.ts). */
export function recordLeftoversRemoved(stream: string, n: number): void {
  leftoversRemoved.inc({ stream }, n);
}

const strandedEnded = counter({
  name: "sluice_stranded_records_ended_total",
  help: "Queued task records whose task message was never stored (an interrupted enqueue, never accepted), ended as failed by retention.",
  labelNames: ["type"] as const,
});

/** `n` stranded `queued` records of `type` ended by retention (stranded.ts). */
export function recordStrandedEnded(type: string, n: number): void {
  strandedEnded.inc({ type }, n);
}

/** 1 on the replica holding the dispatcher lease, 0 on standbys. */
export const leader = gauge({
  name: "sluice_dispatcher_leader",
  help: "1 while this dispatcher replica holds the leader lease, else 0.",
});

/** Live workers per type, from the worker registry every replica watches. */
export const workersLive = gauge({
  name: "sluice_workers_live",
  help: "Workers with a recent heartbeat serving the type (as this dispatcher replica sees the registry).",
  labelNames: ["type"] as const,
});

/** Capacity per type, from the registry. */
export const workerSlotsTotal = gauge({
  name: "sluice_worker_slots_total",
  help: "Slots of live workers per type: the capacity the dispatcher fills.",
  labelNames: ["type"] as const,
});

/** One task dispatched, `waitedMs` after it was enqueued. */
export function recordDispatch(type: string, priority: Priority, waitedMs: number): void {
  dispatched.inc({ type, priority });
  dispatchWait.observe({ type, priority }, Math.max(0, waitedMs) / 1000);
}

/** Create the dispatch series of a type at 0, so a type nothing was dispatched for yet shows a flat line. */
export function primeDispatchSeries(type: string, priorities: readonly Priority[]): void {
  for (const priority of priorities) dispatched.inc({ type, priority }, 0);
}
