import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceProcess } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/** Completions per second over a window, from the fixture run log. */
function rate(stack: Stack, fromMs: number, toMs: number): number {
  const n = stack.runs().filter((r) => r.at >= fromMs && r.at < toMs).length;
  return n / ((toMs - fromMs) / 1000);
}

describe("scale - workers scaled out and back in under a backlog", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
  });
  afterAll(() => stack?.cleanup());

  it("raises throughput with more workers, loses nothing, runs nothing twice, and drains on scale-down", {
    timeout: 90_000,
  }, async () => {
    // 100 ms tasks, 4 slots per worker: one worker does ~40/s, so a backlog of 1,600 lasts while three
    // more workers start, even when starting them takes seconds on a loaded machine
    const workerEnv = { WORKER_TYPES: "test.sleep", WORKER_CONCURRENCY: "4", SHUTDOWN_GRACE_MS: "10000" };
    const first = await stack.worker(workerEnv);
    const ids: string[] = [];
    for (let i = 0; i < 1600; i += 100) {
      const batch = await Promise.all(
        Array.from({ length: 100 }, (_, k) =>
          stack.post({ type: "test.sleep", payload: { ms: 100, tag: `s${i + k}` } }),
        ),
      );
      for (const r of batch) ids.push(r.body.id as string);
    }
    await new Promise((r) => setTimeout(r, 2500));
    const t1 = Date.now();
    const one = rate(stack, t1 - 2000, t1);

    const more: ServiceProcess[] = await Promise.all([1, 2, 3].map(() => stack.worker(workerEnv)));
    expect(stack.runs().length).toBeLessThan(ids.length / 2);
    await new Promise((r) => setTimeout(r, 2500));
    const t2 = Date.now();
    const four = rate(stack, t2 - 2000, t2);
    expect(four).toBeGreaterThan(one * 2.5);

    // scale back in while tasks run: each stopping worker finishes what it holds and exits cleanly
    const codes = await Promise.all(more.map((w) => w.stop("SIGTERM")));
    expect(codes).toEqual([0, 0, 0]);
    // every task, not just the last posted: a batch's 100 posts race, so its order in the stream is not
    // the order of `ids`
    const deadline = Date.now() + 60_000;
    let unfinished = ids;
    let last: unknown[] = [];
    while (unfinished.length > 0 && Date.now() < deadline) {
      const states = await Promise.all(unfinished.map((id) => stack.get(id)));
      last = states.filter((s) => s?.status !== "completed");
      unfinished = unfinished.filter((_, i) => states[i]?.status !== "completed");
      if (unfinished.length > 0) await new Promise((r) => setTimeout(r, 250));
    }
    expect(last).toEqual([]);
    const runs = stack.runs();
    const perId = new Map<string, number>();
    for (const r of runs) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
    expect(perId.size).toBe(ids.length);
    expect([...perId.values()].every((c) => c === 1)).toBe(true);
    expect(first.child.exitCode).toBeNull();
    console.log(`scale test: ${one.toFixed(0)}/s with 1 worker, ${four.toFixed(0)}/s with 4`);
  });
});
