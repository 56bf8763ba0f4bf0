import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/** Lease TTL the stack's dispatchers run with (test/support/stack.ts). */
const LEASE_TTL_MS = 2_000;

describe("schedules - leader failover", () => {
  let stack: Stack;
  let a: ServiceProcess;
  let b: ServiceProcess;
  beforeAll(async () => {
    stack = await startStack();
    a = await stack.dispatcher({ DISPATCHER_ID: "sched-a" });
    await a.waitForLog((l) => l.msg === "became leader");
    b = await stack.dispatcher({ DISPATCHER_ID: "sched-b" });
    await stack.worker({ WORKER_TYPES: "test.record" });
  });
  afterAll(() => stack?.cleanup());

  it("fires a cron schedule with seconds once per tick while the leader is SIGKILLed", async () => {
    const res = await fetch(`${stack.url}/v1/schedules`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        name: "every-second",
        cron: "*/1 * * * * *",
        task: { type: "test.record", payload: { n: 777 } },
      }),
    });
    expect(res.status).toBe(201);
    const runs = () => stack.runs().filter((r) => r.n === 777);
    await waitFor(() => runs().length >= 3, 6_000);

    const killedAt = Date.now();
    await a.stop("SIGKILL");
    await b.waitForLog((l) => l.msg === "became leader", 10_000);
    const leadAt = Date.now();
    await waitFor(() => runs().filter((r) => r.at > leadAt).length >= 3, 8_000);
    await fetch(`${stack.url}/v1/schedules/every-second`, { method: "DELETE" });
    await sleep(500);

    const all = runs();
    // no tick ran twice: one run per task id, one task id per tick
    expect(new Set(all.map((r) => r.id)).size).toBe(all.length);
    const states = await Promise.all(all.map((r) => stack.get(r.id)));
    const ticksOf = states.map((s) =>
      Number(String(s?.idempotencyKey).replace("schedule:every-second:", "")),
    );
    const ticks = [...ticksOf];
    expect(ticks.every((t) => Number.isInteger(t) && t % 1000 === 0)).toBe(true);
    expect(new Set(ticks).size).toBe(ticks.length);
    ticks.sort((x, y) => x - y);
    expect(ticks.length).toBeGreaterThanOrEqual(6);
    // consecutive ticks while a leader lives; one gap, no longer than the failover, where the
    // missed ticks were folded into one catch-up run (policy "once")
    const gaps = ticks.slice(1).map((t, i) => t - ticks[i]!);
    const long = gaps.filter((g) => g > 1000);
    expect(long.length).toBeLessThanOrEqual(1);
    for (const g of long) expect(g).toBeLessThanOrEqual(leadAt - killedAt + LEASE_TTL_MS + 1000);
    // the catch-up tick is the latest one missed (not the earliest), fired at once by the new leader
    const enqueuedAt = new Map(states.map((st, k) => [ticksOf[k]!, st?.enqueuedAt ?? 0]));
    const firstByB = ticks.find((t) => (enqueuedAt.get(t) ?? 0) >= leadAt - 50);
    expect(firstByB).toBeDefined();
    expect(leadAt - firstByB!).toBeLessThan(1500);
    expect(enqueuedAt.get(firstByB!)! - leadAt).toBeLessThan(1000);
  });
});
