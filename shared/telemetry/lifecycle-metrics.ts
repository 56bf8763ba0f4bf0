import type { Counter, Gauge } from "prom-client";
import { counter, gauge } from "./metrics.ts";

/**
 * Metrics of the task lifecycle beyond the happy path — scheduled and retrying tasks, throttling and
 * dead letters — recorded by whichever service does the work (the dispatcher's scheduler and limits,
 * the worker that files a dead letter). Each metric registers on first use, so a process exports only
 * the ones it records or primes with {@link primeLifecycleSeries}.
 */

/** Why a dispatch was held back. */
// The same reasons as the dispatcher's queue limits (services/dispatcher/limits/type-gate.ts).
export const THROTTLE_REASONS = ["rate_limit", "retry_after", "key_concurrency"] as const;
export type ThrottleReason = (typeof THROTTLE_REASONS)[number];

let scheduledGauge: Gauge<"type"> | undefined;
let retryingGauge: Gauge<"type"> | undefined;
let throttledCounter: Counter<"type" | "reason"> | undefined;
let deadLettersCounter: Counter<"type"> | undefined;

const scheduled = () =>
  (scheduledGauge ??= gauge({
    name: "sluice_scheduled_tasks",
    help: "Tasks waiting for their run time (delayed or scheduled), by type.",
    labelNames: ["type"] as const,
  }));

const retrying = () =>
  (retryingGauge ??= gauge({
    name: "sluice_retrying_tasks",
    help: "Failed tasks waiting out their retry backoff, by type.",
    labelNames: ["type"] as const,
  }));

const throttled = () =>
  (throttledCounter ??= counter({
    name: "sluice_throttled_total",
    help: "Times dispatch of a type was held back by a limit, by type and reason (rate_limit, retry_after, key_concurrency).",
    labelNames: ["type", "reason"] as const,
  }));

const deadLetters = () =>
  (deadLettersCounter ??= counter({
    name: "sluice_dead_letters_total",
    help: "Tasks filed in the dead-letter stream after their last attempt, by type.",
    labelNames: ["type"] as const,
  }));

/** Set how many tasks of `type` wait for their run time. */
export function setScheduledTasks(type: string, n: number): void {
  scheduled().set({ type }, n);
}

/** Set how many tasks of `type` wait out a retry backoff. */
export function setRetryingTasks(type: string, n: number): void {
  retrying().set({ type }, n);
}

/** A dispatch of `type` was held back by a limit. */
export function recordThrottled(type: string, reason: ThrottleReason, n = 1): void {
  throttled().inc({ type, reason }, n);
}

/** A task of `type` was filed as a dead letter. */
export function recordDeadLetter(type: string): void {
  deadLetters().inc({ type });
}

/**
 * Create every lifecycle series of `type` at 0 (keeping values already there), so dashboards and
 * alerts see a flat zero instead of no data for a type nothing has happened to yet.
 */
export function primeLifecycleSeries(type: string): void {
  scheduled().inc({ type }, 0);
  retrying().inc({ type }, 0);
  for (const reason of THROTTLE_REASONS) throttled().inc({ type, reason }, 0);
  deadLetters().inc({ type }, 0);
}

/** Zero the lifecycle gauges of `types` (a dispatcher that stopped leading no longer knows them). */
export function zeroLifecycleGauges(types: Iterable<string>): void {
  for (const type of types) {
    scheduled().set({ type }, 0);
    retrying().set({ type }, 0);
  }
}
