import { describe, expect, it } from "vitest";
import { parseDurationMs, runSoak } from "./scenarios/soak.ts";
import { seedFromEnv } from "./support/rng.ts";

/**
 * The soak in the reliability suite: two minutes by default. SOAK_DURATION=30m runs longer (the test
 * timeout follows); `npx node test/reliability/soak.ts --duration 10m` runs it outside vitest.
 */
const DURATION_MS = parseDurationMs(process.env.SOAK_DURATION ?? "2m");

describe("reliability - soak", () => {
  it(`runs ${DURATION_MS / 1000} s of steady load with kills, and memory stays flat`, {
    timeout: DURATION_MS + 5 * 60_000,
  }, async () => {
    const r = await runSoak({
      durationMs: DURATION_MS,
      ratePerS: 100,
      killEveryMs: [20_000, 40_000],
      sampleEveryMs: 5_000,
      growthLimitMb: 32,
      seed: seedFromEnv(1),
    });
    const { rss, ...summary } = r;
    console.log(JSON.stringify({ scenario: "soak", ...summary, rss }, null, 1));
    expect(r.problems).toEqual([]);
    expect(r.audit.statuses).toEqual({ completed: r.load.accepted });
    expect(r.kills.length).toBeGreaterThanOrEqual(Math.floor(DURATION_MS / 40_000) - 1);
    expect(rss.filter((v) => v.judged).map((v) => v.label)).toContain("enqueue-1");
  });
});
