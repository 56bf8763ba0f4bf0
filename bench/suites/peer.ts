import type { SendRun } from "../lib/drive.ts";
import { usedRuns } from "../lib/rounds.ts";
import type { RoleHandle } from "../lib/rpc.ts";
import { type ProcUsage, sampleProcesses } from "../lib/sampler.ts";
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

/** What a peer's rounds give its result. */
export type PeerRounds = {
  e2eRun(round: number): Promise<Rate>;
  latencyRun(round: number): Promise<LatencySummary>;
  /** The median end-to-end run and the pooled latency of the `used` rounds, and the processes' usage. */
  figures(used: readonly number[]): Pick<PeerResult, "e2e" | "latency" | "processes">;
};

/**
 * Warm up, then serve the rounds' turns (bench/lib/rounds.ts): an end-to-end turn times `e2eCount`
 * messages from the producer's first send to the consumer's last completion; a latency turn sends at
 * the steady rate and keeps the latencies of the messages after its warm-up part, as the consumer saw
 * them. `pids` are sampled during the turns only.
 */
export async function peerRounds(
  s: Settings,
  prod: RoleHandle,
  cons: RoleHandle,
  pids: Record<string, number>,
  burst: (count: number) => Record<string, unknown>,
  pacedExtra: Record<string, unknown> = {},
): Promise<PeerRounds> {
  const warm = cons.call("waitCount", { target: s.warmupCount });
  await prod.call("burst", burst(s.warmupCount));
  await warm;
  const usage = sampleProcesses(pids);
  usage.pause();
  let consumed = s.warmupCount;
  const e2e = new Map<number, Rate>();
  const latency = new Map<number, { latencies: number[]; sent: number; spanMs: number }>();
  return {
    e2eRun: (round) =>
      usage.during(async () => {
        consumed += s.e2eCount;
        const done = cons.call<{ at: number }>("waitCount", { target: consumed });
        const run = await prod.call<SendRun>("burst", burst(s.e2eCount));
        const { at } = await done;
        const rate = rateOf(s.e2eCount, run.startedAt, at);
        e2e.set(round, rate);
        return rate;
      }),
    latencyRun: (round) =>
      usage.during(async () => {
        await cons.call("takeLatencies");
        const run = await prod.call<SendRun>(
          "paced",
          {
            ...pacedExtra,
            ratePerSec: s.latencyRatePerSec,
            durationMs: s.latencyDurationMs,
            warmupMs: s.latencyWarmupMs,
          },
          s.latencyDurationMs + 60_000,
        );
        consumed += run.sent;
        await cons.call("waitCount", { target: consumed }, 60_000);
        const latencies = await cons.call<number[]>("takeLatencies");
        latency.set(round, { latencies, sent: run.sent, spanMs: run.finishedAt - run.startedAt });
        return summarize(latencies);
      }),
    figures(used) {
      const runs = usedRuns(e2e, used);
      const lat = usedRuns(latency, used);
      const sent = lat.reduce((a, l) => a + l.sent, 0);
      const spanMs = lat.reduce((a, l) => a + l.spanMs, 0);
      return {
        e2e: median(runs),
        latency: {
          ...summarize(lat.flatMap((l) => l.latencies)),
          targetRatePerSec: s.latencyRatePerSec,
          achievedRatePerSec: perSec(sent, spanMs),
        },
        processes: usage.stop(),
      };
    },
  };
}
