import { describe, expect, it } from "vitest";
import { runKillScenario } from "./scenarios/kills.ts";
import { seedFromEnv } from "./support/rng.ts";

/**
 * 10,000 tasks while workers and dispatchers are SIGKILLed at random moments and replaced. Runtime on
 * the 2-core reference machine: about 50 s (40 s of load, then the 5-s ack wait of the tasks a killed
 * leader held or a killed worker ran). TASKS scales it (RELIABILITY_TASKS), RELIABILITY_SEED replays a run.
 */
const TASKS = Number(process.env.RELIABILITY_TASKS ?? 10_000);

describe("reliability - SIGKILL of workers and dispatchers under load", () => {
  it(`completes ${TASKS} tasks exactly once; a handler reruns only where its worker was killed`, async () => {
    const seed = seedFromEnv(20_251_122);
    const r = await runKillScenario({
      tasks: TASKS,
      ratePerS: 250,
      workers: 3,
      dispatchers: 2,
      workerConcurrency: 16,
      taskMs: [5, 80],
      workerKills: Math.max(3, Math.round(TASKS / 800)),
      dispatcherKills: Math.max(1, Math.round(TASKS / 3000)),
      seed,
      finalTimeoutMs: 120_000,
      verbose: true,
    });
    console.log(
      JSON.stringify({ scenario: "kills", ...r, kills: r.kills.length, killLog: r.kills }, null, 1),
    );
    expect(r.load.accepted).toBe(TASKS);
    expect(r.audit.violations).toEqual([]);
    expect(r.audit.statuses).toEqual({ completed: TASKS });
    expect(r.audit.finalWritesNotOnce).toBe(0);
    expect(r.kills.filter((k) => k.role === "worker").length).toBeGreaterThanOrEqual(3);
    expect(r.kills.filter((k) => k.role === "dispatcher" && k.leader).length).toBeGreaterThanOrEqual(1);
    // the kills did land mid-handler: the redelivery path was exercised, not just the happy path
    expect(r.audit.explained).toBeGreaterThan(0);
    // the tasks stream holds exactly the unfinished tasks (there is no work stream): none
    expect(r.streams.tasks + r.streams.dlq).toBe(0);
    expect(r.unexpectedExits).toEqual([]);
  });
});
