import { describe, expect, it } from "vitest";
import { runHostileScenario } from "./scenarios/hostile.ts";
import { seedFromEnv } from "./support/rng.ts";

/**
 * 10,000 generated hostile HTTP requests and NATS messages (RELIABILITY_HOSTILE scales it,
 * RELIABILITY_SEED replays a run). Runtime on the 2-core reference machine: about a minute.
 */
const CASES = Number(process.env.RELIABILITY_HOSTILE ?? 10_000);

/**
 * Memory bounds; docs/reliability.md ("Hostile input") says why. RSS may grow this much after the
 * warm-up, while V8 enlarges its heap for the largest requests in flight (MiB)...
 */
const RSS_GROWTH_LIMIT_MB = 192;
/**
 * ...but the live heap (the lowest heap in use seen per round) must not climb from the middle third of
 * the run to the last: a leak of more than ~8 KB a request would (MiB).
 */
const HEAP_FLOOR_RISE_LIMIT_MB = 24;

describe("reliability - hostile input", () => {
  it(`refuses ${CASES} malformed, oversized and slow requests cleanly and stores nothing`, async () => {
    const r = await runHostileScenario({
      cases: CASES,
      seed: seedFromEnv(7_331),
      concurrency: { http: 32, slow: 64, nats: 32 },
      verbose: true,
    });
    console.log(JSON.stringify({ scenario: "hostile", ...r }, null, 1));
    expect(r.failures).toEqual([]);
    expect(r.terminated).toBe(r.directPublished);
    const { tasks, state, dlq, delayed, queues, signals, schedules } = r.after;
    expect({ tasks, state, dlq, delayed, queues, signals, schedules }).toEqual(r.before);
    expect(r.alive).toHaveLength(3);
    for (const [name, m] of Object.entries(r.rss)) {
      expect(m.after - m.baseline, `${name} RSS growth`).toBeLessThanOrEqual(RSS_GROWTH_LIMIT_MB);
      const floorOf = (k: number) => r.rounds[k]!.heap[name]!.floorMb;
      const floor = (ks: number[]) => Math.max(...ks.map(floorOf));
      expect(floor([6, 7, 8]) - floor([3, 4, 5]), `${name} heap floor`).toBeLessThanOrEqual(
        HEAP_FLOOR_RISE_LIMIT_MB,
      );
    }
    expect(r.validAfter).toEqual({ sent: 20, completed: 20 });
  });
});
