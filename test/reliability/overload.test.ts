import { describe, expect, it } from "vitest";
import { runOverloadScenario } from "./scenarios/overload.ts";
import { seedFromEnv } from "./support/rng.ts";

/**
 * A minute of enqueueing at three times the processing rate (RELIABILITY_OVERLOAD_MS shortens it).
 * Runtime on the 2-core reference machine: about 70 s.
 */
const DURATION_MS = Number(process.env.RELIABILITY_OVERLOAD_MS ?? 60_000);

/** p99 of the urgent tasks' wait from enqueue to start that we accept under overload, ms. */
const URGENT_P99_BOUND_MS = 1_000;

describe("reliability - overload at 3x the processing rate", () => {
  it(`refuses with 429 beyond maxDepth for ${DURATION_MS / 1000} s, keeps urgent tasks prompt and loses nothing`, async () => {
    const r = await runOverloadScenario({
      slots: 4,
      taskMs: 50,
      factor: 3,
      durationMs: DURATION_MS,
      maxDepth: 200,
      urgentShare: 0.1,
      seed: seedFromEnv(3),
      verbose: true,
    });
    console.log(JSON.stringify({ scenario: "overload", ...r }, null, 1));
    expect(Object.keys(r.statuses).sort()).toEqual(["202", "429"]);
    expect(r.offeredRatePerS).toBeGreaterThan(2.5 * r.processingRatePerS);
    // about 2/3 of what is offered cannot be processed: it must be refused, not queued
    expect(r.statuses["429"]!).toBeGreaterThan(0.5 * (r.statuses["202"]! + r.statuses["429"]!));
    expect(r.retryAfter).toEqual({ "1": r.statuses["429"] });
    // the depth was read throughout: every read answered
    expect(r.depthReads).toBeGreaterThan(0);
    expect(r.depthReadsFailed).toEqual({});
    expect(r.maxDepthSeen).toBeLessThanOrEqual(200);
    expect(r.notCompleted).toBe(0);
    expect(r.waits.urgent.n).toBeGreaterThan(0);
    expect(r.waits.urgent.p99).toBeLessThan(URGENT_P99_BOUND_MS);
    // priority, not luck: urgent tasks start long before the bulk backlog does
    expect(r.waits.urgent.p99).toBeLessThan(r.waits.bulk.p50);
  });
});
