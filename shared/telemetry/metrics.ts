import {
  Counter,
  type CounterConfiguration,
  collectDefaultMetrics,
  Gauge,
  type GaugeConfiguration,
  Histogram,
  type HistogramConfiguration,
  type Registry,
  register,
} from "prom-client";

/**
 * Prometheus helpers shared by the services. Every service uses prom-client's default registry (the
 * one `/metrics` serves); metrics are module-level and registered once, so any module (and any
 * feature built later) can import a service's `metrics.ts` and record without wiring.
 *
 * Label values must stay bounded: a type, a priority, an outcome, an error code — never a task id or
 * anything from a payload. {@link LabelLimiter} guards the one label a caller controls (the type).
 */

/** Buckets for task times (wait, dispatch, run), seconds: 5 ms to 30 min. */
export const TASK_SECONDS_BUCKETS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800,
];

/** Buckets for HTTP request durations, seconds: 1 ms to 10 s. */
export const HTTP_SECONDS_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

let processMetricsFor: string | undefined;

/**
 * Label every metric of the process with `service` and collect the process defaults (CPU, memory,
 * event loop lag, GC). Once per process; a second call with another service name throws.
 */
export function initProcessMetrics(service: string, registry: Registry = register): void {
  if (processMetricsFor === service) return;
  if (processMetricsFor !== undefined)
    throw new Error(`process metrics already set up for ${processMetricsFor}`);
  processMetricsFor = service;
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
}

/** A counter, or the one already registered under its name (modules may be loaded twice in tests). */
export function counter<T extends string>(cfg: CounterConfiguration<T>): Counter<T> {
  return (existing(cfg.name, cfg.registers) as Counter<T> | undefined) ?? new Counter(cfg);
}

/** A gauge, or the one already registered under its name. */
export function gauge<T extends string>(cfg: GaugeConfiguration<T>): Gauge<T> {
  return (existing(cfg.name, cfg.registers) as Gauge<T> | undefined) ?? new Gauge(cfg);
}

/** A histogram, or the one already registered under its name. */
export function histogram<T extends string>(cfg: HistogramConfiguration<T>): Histogram<T> {
  return (existing(cfg.name, cfg.registers) as Histogram<T> | undefined) ?? new Histogram(cfg);
}

function existing(
  name: string,
  registers: readonly { getSingleMetric(n: string): unknown }[] | undefined,
): unknown {
  return (registers?.[0] ?? register).getSingleMetric(name);
}

/**
 * Caps the distinct values a label may take: the first `max` values pass, later new ones become
 * `overflow`. For labels whose values come from callers (task types at the gateway), so a producer
 * inventing types cannot blow up the series count.
 */
export class LabelLimiter {
  readonly #seen = new Set<string>();
  readonly #max: number;
  readonly #overflow: string;

  /** `max` distinct values (default 200), then `overflow` (default `_other`). */
  constructor(max = 200, overflow = "_other") {
    this.#max = max;
    this.#overflow = overflow;
  }

  /** The label value to use for `v`. */
  value(v: string): string {
    if (this.#seen.has(v)) return v;
    if (this.#seen.size >= this.#max) return this.#overflow;
    this.#seen.add(v);
    return v;
  }
}
