import { afterEach, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/** Enqueue `n` test.record tasks over HTTP, 50 requests at a time; returns their ids in order. */
async function enqueueMany(stack: Stack, n: number, start = 0): Promise<string[]> {
  const ids: string[] = [];
  for (let i = start; i < start + n; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, start + n - i) }, (_, k) =>
        stack.post({
          type: "test.record",
          payload: { n: i + k },
          priority: (["urgent", "normal", "bulk"] as const)[k % 3],
        }),
      ),
    );
    for (const r of batch) {
      expect(r.status).toBe(202);
      ids.push(r.body.id as string);
    }
  }
  return ids;
}

/** Wait until every id is final; returns the states. */
async function allFinal(stack: Stack, ids: string[], timeoutMs = 30_000) {
  return waitFor(
    async () => {
      const states = await Promise.all(ids.map((id) => stack.get(id)));
      return states.every((s) => s && ["completed", "failed", "timed_out"].includes(s.status))
        ? states
        : undefined;
    },
    timeoutMs,
    250,
  );
}

describe("pipeline - failures", () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.cleanup();
    stack = undefined;
  });

  it("redelivers the task of a worker killed with SIGKILL mid-task, and it completes", async () => {
    stack = await startStack();
    await stack.dispatcher();
    const doomed = await stack.worker({ WORKER_TYPES: "test.sleep", WORK_ACK_WAIT_MS: "2000" });
    const r = await stack.post({ type: "test.sleep", payload: { ms: 800, tag: "crash" } });
    const id = r.body.id as string;
    await stack.waitForStatus(id, ["running"], 5000);
    await doomed.stop("SIGKILL");
    const survivor = await stack.worker({ WORKER_TYPES: "test.sleep", WORK_ACK_WAIT_MS: "2000" });
    const s = await stack.waitForStatus(id, ["completed"], 15_000);
    expect(s.attempts).toBe(2);
    const runs = stack.runs().filter((x) => x.id === id);
    expect(runs.map((x) => x.pid)).toEqual([doomed.child.pid, survivor.child.pid]);
    expect(runs.map((x) => x.attempt)).toEqual([1, 2]);
  });

  it("completes every task exactly once when the dispatcher is killed and restarted under load", async () => {
    stack = await startStack();
    const first = await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.record", WORKER_CONCURRENCY: "20" });
    const enqueued = enqueueMany(stack, 600);
    // kill it while work is flowing; enqueueing goes on with no dispatcher at all
    await waitFor(() => stack!.runs().length >= 100, 15_000, 10);
    await first.stop("SIGKILL");
    const ids = await enqueued;
    expect(stack.runs().length).toBeLessThan(600);
    await stack.dispatcher();
    const states = await allFinal(stack, ids);
    expect(states.every((s) => s!.status === "completed")).toBe(true);
    const runs = stack.runs();
    const perId = new Map<string, number>();
    for (const r of runs) perId.set(r.id, (perId.get(r.id) ?? 0) + 1);
    expect(perId.size).toBe(ids.length);
    expect([...perId.values()].filter((c) => c !== 1)).toEqual([]);
  });

  it("hands leadership to a standby dispatcher when the leader dies", async () => {
    stack = await startStack();
    const a = await stack.dispatcher({ DISPATCHER_ID: "a" });
    await a.waitForLog((l) => l.msg === "became leader");
    const b = await stack.dispatcher({ DISPATCHER_ID: "b" });
    await stack.worker({ WORKER_TYPES: "test.record" });
    const ids = await enqueueMany(stack, 100);
    await allFinal(stack, ids);
    expect(b.logs.some((l) => l.msg === "became leader")).toBe(false);
    await a.stop("SIGKILL");
    await b.waitForLog((l) => l.msg === "became leader", 10_000);
    const more = await enqueueMany(stack, 100, 100);
    const states = await allFinal(stack, more);
    expect(states.every((s) => s!.status === "completed")).toBe(true);
    const counts = new Map<string, number>();
    for (const r of stack.runs()) counts.set(r.id, (counts.get(r.id) ?? 0) + 1);
    expect([...counts.values()].every((c) => c === 1)).toBe(true);
  });

  it("loses nothing when a worker is stopped with SIGTERM under load", async () => {
    stack = await startStack();
    await stack.dispatcher();
    const w1 = await stack.worker({ WORKER_TYPES: "test.sleep", WORKER_CONCURRENCY: "4" });
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await stack.post({ type: "test.sleep", payload: { ms: 300, tag: `t${i}` } });
      ids.push(r.body.id as string);
    }
    await waitFor(() => stack!.runs().length >= 4);
    const code = await w1.stop("SIGTERM");
    expect(code).toBe(0);
    // the tasks it had started finished before it exited
    const started = new Set(stack.runs().map((r) => r.id));
    for (const id of started) expect((await stack.get(id))?.status).toBe("completed");
    await stack.worker({ WORKER_TYPES: "test.sleep", WORKER_CONCURRENCY: "4" });
    const states = await allFinal(stack, ids);
    expect(states.every((s) => s!.status === "completed")).toBe(true);
    expect(stack.runs().length).toBe(12);
  });

  it("hands back a task whose handler outlives the shutdown grace, and another worker completes it", async () => {
    stack = await startStack();
    await stack.dispatcher();
    const w1 = await stack.worker({ WORKER_TYPES: "test.sleep", SHUTDOWN_GRACE_MS: "200" });
    const r = await stack.post({ type: "test.sleep", payload: { ms: 3000 } });
    const id = r.body.id as string;
    await stack.waitForStatus(id, ["running"], 5000);
    expect(await w1.stop("SIGTERM")).toBe(0);
    expect((await stack.get(id))?.status).toBe("queued");
    await stack.worker({ WORKER_TYPES: "test.sleep" });
    const s = await stack.waitForStatus(id, ["completed"], 15_000);
    // handed back, not crashed: it ran twice but the second run is still attempt 1
    expect(s.attempts).toBe(1);
    expect(stack.runs().filter((x) => x.id === id)).toHaveLength(2);
  });
});
