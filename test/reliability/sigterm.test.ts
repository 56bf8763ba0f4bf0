import { describe, expect, it } from "vitest";
import { runSigtermScenario } from "./scenarios/sigterm.ts";
import { seedFromEnv } from "./support/rng.ts";

/** SIGTERM of every service under load. Runtime on the 2-core reference machine: about 40 s. */
describe("reliability - SIGTERM of each service under load", () => {
  it("stops every service gracefully and completes every accepted task exactly once", async () => {
    const r = await runSigtermScenario({
      tasks: 5_000,
      ratePerS: 200,
      longShare: 0.05,
      longMs: 1_500,
      // 16: the task enqueued as the leader steps down came back to the new leader twice (nats-server
      // 2.9.10), and ran twice until the dispatcher dropped copies (type-dispatcher.ts #onHeld)
      seed: seedFromEnv(16),
      finalTimeoutMs: 60_000,
      verbose: true,
    });
    console.log(JSON.stringify({ scenario: "sigterm", ...r }, null, 1));
    expect(r.load.accepted).toBe(5_000);
    expect(r.stops.map((s) => s.role)).toEqual(["worker", "dispatcher", "enqueue", "worker"]);
    for (const s of r.stops) {
      expect(s.code, `${s.name} exit code`).toBe(0);
      // workers finish what they run (1.5 s at most here); the others have nothing long to wait for
      expect(s.exitMs, `${s.name} exit time`).toBeLessThan(s.role === "worker" ? 10_000 : 5_000);
    }
    expect(r.stops.find((s) => s.role === "dispatcher")!.handoverMs).toBeLessThan(5_000);
    expect(r.audit.violations).toEqual([]);
    expect(r.audit).toMatchObject({ statuses: { completed: 5_000 }, extraRuns: 0, finalWritesNotOnce: 0 });
    expect(r.streams.tasks).toBe(0);
  });
});
