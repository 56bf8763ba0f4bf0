import type { SendRun } from "../lib/drive.ts";
import type { RoleHandle } from "../lib/rpc.ts";
import type { ProcUsage } from "../lib/sampler.ts";
import { sampleProcesses } from "../lib/sampler.ts";
import type { Settings } from "../lib/settings.ts";
import { type LatencySummary, perSec, round, summarize } from "../lib/stats.ts";

/**
 * The measures every system gets, driven the same way: a producer role and a consumer role (separate
 * processes) that both speak `burst`/`paced` and `waitCount`/`takeLatencies`. The consumer's count is
 * cumulative, so "when did it reach n" never races the producer.
 */

/** A rate over a counted span. */
export type Rate = { count: number; seconds: number; perSec: number };

/** Repeated runs of one measure: the median run's figures, plus every run's rate. */
export type RepeatedRate = Rate & { runsPerSec: number[] };

/** Latency at a steady rate: the summary plus the rate actually achieved. */
export type LatencyResult = LatencySummary & { targetRatePerSec: number; achievedRatePerSec: number };

/** What the peers report. */
export type PeerResult = {
  enqueue: Rate;
  e2e: RepeatedRate;
  latency: LatencyResult;
  /** RSS and CPU of every process during the end-to-end and latency measures. */
  processes: Record<string, ProcUsage>;
  settings: Record<string, unknown>;
};

/** The rate of a finished send run. */
export function rateOf(count: number, startedAt: number, finishedAt: number): Rate {
  const ms = finishedAt - startedAt;
  return { count, seconds: round(ms / 1000, 2), perSec: perSec(count, ms) };
}

/** The run with the median rate (the lower middle one for an even count), with every run's rate. */
export function median(runs: Rate[]): RepeatedRate {
  const sorted = [...runs].sort((a, b) => a.perSec - b.perSec);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  return { ...mid, runsPerSec: runs.map((r) => r.perSec) };
}

/**
 * Warm up, then `e2eRuns` times: time `e2eCount` messages from the producer's first send to the
 * consumer's last completion. Returns the median run.
 */
export async function measureE2e(
  s: Settings,
  prod: RoleHandle,
  cons: RoleHandle,
  burst: (count: number) => Record<string, unknown>,
): Promise<RepeatedRate> {
  const warm = cons.call("waitCount", { target: s.warmupCount });
  await prod.call("burst", burst(s.warmupCount));
  await warm;
  const runs: Rate[] = [];
  for (let i = 1; i <= s.e2eRuns; i++) {
    const done = cons.call<{ at: number }>("waitCount", { target: s.warmupCount + i * s.e2eCount });
    const run = await prod.call<SendRun>("burst", burst(s.e2eCount));
    const { at } = await done;
    runs.push(rateOf(s.e2eCount, run.startedAt, at));
  }
  return median(runs);
}

/** Send at the steady rate; latencies of the messages after the warm-up part, as the consumer saw them. */
export async function measureLatency(
  s: Settings,
  prod: RoleHandle,
  cons: RoleHandle,
  extra: Record<string, unknown> = {},
): Promise<LatencyResult> {
  const before = await cons.call<{ count: number }>("waitCount", { target: 0 });
  await cons.call("takeLatencies");
  const run = await prod.call<SendRun>(
    "paced",
    {
      ...extra,
      ratePerSec: s.latencyRatePerSec,
      durationMs: s.latencyDurationMs,
      warmupMs: s.latencyWarmupMs,
    },
    s.latencyDurationMs + 60_000,
  );
  await cons.call("waitCount", { target: before.count + run.sent }, 60_000);
  const lat = await cons.call<number[]>("takeLatencies");
  return {
    ...summarize(lat),
    targetRatePerSec: s.latencyRatePerSec,
    achievedRatePerSec: perSec(run.sent, run.finishedAt - run.startedAt),
  };
}

/** Run `fn` while sampling `pids`; returns its result and the usage. */
export async function sampled<T>(
  pids: Record<string, number>,
  fn: () => Promise<T>,
): Promise<[T, Record<string, ProcUsage>]> {
  const sampler = sampleProcesses(pids);
  try {
    const r = await fn();
    return [r, sampler.stop()];
  } catch (e) {
    sampler.stop();
    throw e;
  }
}
