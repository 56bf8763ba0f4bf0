import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runLoad } from "../reliability/support/load.ts";
import { RELIABLE_TYPE, System } from "../reliability/support/system.ts";

/**
 * A leader killed while workers are busy and tasks back up leaves messages nobody holds: the ones it
 * held, and ones delivered to its pull requests. They still await their ack in the tasks consumer, so
 * consumer info counts them in flight until their ack wait passes and a pull request of the new leader
 * takes them back. Taking that count as a limit stopped dispatch for good: the new leader's windows
 * were full, it asked for nothing more, so nothing came back, and the few slots stayed idle
 * (2 slots: 38 of 200 tasks done, then nothing for 45 s). Every task must finish.
 */
describe("dispatcher - failover with a backlog", () => {
  let sys: System;
  beforeAll(async () => {
    sys = await System.start({ verbose: process.env.RELIABILITY_VERBOSE === "1" });
  });
  afterAll(async () => {
    await sys?.cleanup();
  });

  it("runs every task after the leader is killed holding some", { timeout: 90_000 }, async () => {
    const gw = await sys.gateway();
    await sys.dispatcher();
    await sys.dispatcher();
    await sys.worker({ WORKER_CONCURRENCY: "2" });
    const load = await runLoad({
      urls: () => [sys.url(gw)],
      count: 200,
      ratePerS: 400,
      retry: true,
      keyPrefix: "orphan",
      body: (i) => ({ type: RELIABLE_TYPE, payload: { n: i, ms: 100 }, priority: "normal" }),
    });
    expect(load.accepted.length).toBe(200);
    // about 30 done, the rest waiting, some held by the leader
    await sleep(1500);
    const leader = sys.leader();
    expect(leader).toBeDefined();
    await sys.kill(leader!);
    const states = await sys.waitAllFinal(
      load.accepted.map((a) => a.id),
      60_000,
    );
    const done = [...states.values()].filter((s) => s?.status === "completed").length;
    if (done < 200) await sys.diagnose();
    expect(done).toBe(200);
    expect(await sys.unfinished()).toEqual({ pending: 0, ackPending: 0 });
  });
});
