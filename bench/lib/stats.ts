/** Summaries of latency samples and rates, rounded for reports. */

/** Percentiles of a latency sample, ms. */
export type LatencySummary = {
  samples: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  meanMs: number;
};

/** Summarise latencies (ms); nearest-rank percentiles on a sorted copy. */
export function summarize(values: readonly number[]): LatencySummary {
  if (values.length === 0) throw new Error("no latency samples");
  const s = Float64Array.from(values).sort();
  const at = (q: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
  let sum = 0;
  for (const v of s) sum += v;
  return {
    samples: s.length,
    p50Ms: round(at(0.5), 2),
    p90Ms: round(at(0.9), 2),
    p99Ms: round(at(0.99), 2),
    maxMs: round(s[s.length - 1]!, 2),
    meanMs: round(sum / s.length, 2),
  };
}

/** Count per second over a span given in ms. */
export function perSec(count: number, spanMs: number): number {
  return spanMs > 0 ? Math.round((count * 1000) / spanMs) : 0;
}

/** Round to `digits` decimals. */
export function round(v: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

/** `a / b` to 2 decimals, or null when either side is missing. */
export function ratio(a: number | undefined, b: number | undefined): number | null {
  if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b) || b === 0)
    return null;
  return round(a / b, 2);
}
