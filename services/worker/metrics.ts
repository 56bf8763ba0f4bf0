import { counter, gauge, histogram, TASK_SECONDS_BUCKETS } from "../../shared/telemetry/metrics.ts";

/**
 * The worker's metrics. Attempts are recorded by the execution observer (observer.ts): started when
 * an attempt begins, finished with its outcome when it ends. Slots are read from the worker at scrape
 * time, heartbeats counted by the worker's `onHeartbeat` hook.
 */

/** How an attempt ended, as the metrics count it. */
export const FINISHED_OUTCOMES = ["completed", "failed", "timed_out", "cancelled"] as const;
export type FinishedOutcome = (typeof FINISHED_OUTCOMES)[number];

const started = counter({
  name: "sluice_tasks_started_total",
  help: "Task attempts started on this worker, by type.",
  labelNames: ["type"] as const,
});

const finished = counter({
  name: "sluice_tasks_finished_total",
  help: "Task attempts ended, by type and outcome (completed, failed, timed_out, cancelled); a failed attempt that will be retried counts as failed.",
  labelNames: ["type", "outcome"] as const,
});

const runSeconds = histogram({
  name: "sluice_task_run_seconds",
  help: "Duration of an attempt on the worker, from start to its outcome stored, by type and outcome.",
  labelNames: ["type", "outcome"] as const,
  buckets: TASK_SECONDS_BUCKETS,
});

const waitSeconds = histogram({
  name: "sluice_task_wait_seconds",
  help: "Time from enqueue (or the due time of a delayed task or retry) to the start of an attempt, by type.",
  labelNames: ["type"] as const,
  buckets: TASK_SECONDS_BUCKETS,
});

/** Why a delivery was acked without running its handler. */
export const SKIP_REASONS = ["already_final", "already_retried"] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

const skipped = counter({
  name: "sluice_deliveries_skipped_total",
  help: "Deliveries acked without running the handler because the task's record says the work is done: already_final (a finished task delivered again), already_retried (an attempt already handed to the scheduler), by type.",
  labelNames: ["type", "reason"] as const,
});

const heartbeats = counter({
  name: "sluice_worker_heartbeats_total",
  help: "Registration heartbeats this worker wrote.",
});

/** Slot counts of the worker process being scraped. */
export type SlotSource = {
  /** Slots per type this worker serves. */
  slots(): Record<string, number>;
  /** Busy slots per type. */
  busy(): Record<string, number>;
};

let slotSource: SlotSource | undefined;

gauge({
  name: "sluice_worker_slots",
  help: "Slots of this worker per type.",
  labelNames: ["type"] as const,
  collect() {
    this.reset();
    for (const [type, n] of Object.entries(slotSource?.slots() ?? {})) this.set({ type }, n);
  },
});

gauge({
  name: "sluice_worker_slots_busy",
  help: "Slots of this worker per type running a handler now.",
  labelNames: ["type"] as const,
  collect() {
    this.reset();
    const slots = slotSource?.slots() ?? {};
    const busy = slotSource?.busy() ?? {};
    for (const type of Object.keys(slots)) this.set({ type }, busy[type] ?? 0);
  },
});

/** Report this worker's slots (read at every scrape). */
export function observeSlots(source: SlotSource): void {
  slotSource = source;
}

/** An attempt of `type` started, `waitedMs` after the task was enqueued or became due. */
export function recordStarted(type: string, waitedMs: number): void {
  started.inc({ type });
  waitSeconds.observe({ type }, Math.max(0, waitedMs) / 1000);
}

/** An attempt of `type` ended with `outcome` after `ranMs`. */
export function recordFinished(type: string, outcome: FinishedOutcome, ranMs: number): void {
  finished.inc({ type, outcome });
  runSeconds.observe({ type, outcome }, Math.max(0, ranMs) / 1000);
}

/**
 * A delivery of `type` was acked without running: its record showed the work done (a redelivery
 * after a lost ack, or acked work a crashed server handed out again).
 */
export function recordSkipped(type: string, reason: SkipReason): void {
  skipped.inc({ type, reason });
}

/** Create the attempt series of a type at 0, so a type that ran nothing yet shows a flat line. */
export function primeWorkerSeries(type: string): void {
  started.inc({ type }, 0);
  for (const outcome of FINISHED_OUTCOMES) finished.inc({ type, outcome }, 0);
  for (const reason of SKIP_REASONS) skipped.inc({ type, reason }, 0);
}

/** A heartbeat was written. */
export function recordHeartbeat(): void {
  heartbeats.inc();
}
