import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TaskMessage, TaskState } from "../../shared/task.ts";
import type { WorkerRecord } from "../../shared/workers.ts";
import { type Harness, postTask, startHarness } from "../enqueue/harness.ts";
import { advance, stateOf, workersKv } from "./support.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ WAIT_MAX_MS: "1500" });
});
afterAll(async () => {
  await h?.cleanup();
});

function post(query: string, body: unknown) {
  return h.service.app.inject({
    method: "POST",
    url: `/v1/tasks${query}`,
    headers: { "content-type": "application/json" },
    payload: JSON.stringify(body),
  });
}

/** Finish a task as a worker would, as soon as its record appears (the watch is open when this resolves). */
async function finishSoon(
  type: string,
  after: number,
  patch: Partial<TaskState>,
): Promise<{ done: Promise<void> }> {
  const iter = await h.kv.watch({ key: ">", include: "updates" });
  const done = (async () => {
    for await (const e of iter) {
      if (e.operation !== "PUT") continue;
      const s = e.json<TaskState>();
      if (s.type !== type || s.status !== "queued") continue;
      await new Promise((r) => setTimeout(r, after));
      await advance(h, s.id, patch);
      iter.stop();
    }
  })();
  return { done };
}

describe("gateway wait - POST /v1/tasks?wait=", () => {
  it("answers 200 with the final record when the task finishes in time", async () => {
    const finisher = await finishSoon("wait.fast", 150, {
      status: "completed",
      finishedAt: Date.now(),
      result: { answer: 42 },
    });
    const res = await post("?wait=5s", { type: "wait.fast", payload: {} });
    await finisher.done;
    expect(res.statusCode).toBe(200);
    const st = res.json() as TaskState;
    expect(st).toMatchObject({ type: "wait.fast", status: "completed", result: { answer: 42 } });
    expect(res.headers.location).toBe(`/v1/tasks/${st.id}`);
  });

  it("answers 200 for a failure too: the caller reads the status", async () => {
    const finisher = await finishSoon("wait.fail", 50, {
      status: "failed",
      error: { code: "handler_failed", message: "boom" },
    });
    const res = await post("?wait=2000ms", { type: "wait.fail" });
    await finisher.done;
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ status: "failed", error: { message: "boom" } });
  });

  it("answers 202 as usual when the task is not done in time, capped at WAIT_MAX_MS", async () => {
    const t0 = Date.now();
    const res = await post("?wait=30s", { type: "wait.slow" });
    const took = Date.now() - t0;
    expect(res.statusCode).toBe(202);
    expect(res.json()).toMatchObject({ status: "queued" });
    expect(took).toBeGreaterThanOrEqual(1400);
    expect(took).toBeLessThan(4000);
  });

  it("answers a waiting request 202 at once when the service stops, instead of holding the shutdown", async () => {
    const other = await startHarness({ WAIT_MAX_MS: "30000" });
    try {
      const pending = fetch(`${other.url}/v1/tasks?wait=30s`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ type: "wait.shutdown" }),
      });
      await expect.poll(() => other.tasksCount(), { timeout: 10_000 }).toBe(1);
      const t0 = Date.now();
      await other.service.stop();
      const res = await pending;
      expect(res.status).toBe(202);
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      await other.cleanup();
    }
  });

  it("refuses an unreadable wait with 400 before storing anything", async () => {
    const before = await h.tasksCount();
    const res = await post("?wait=soon", { type: "wait.bad" });
    expect(res.statusCode).toBe(400);
    expect(await h.tasksCount()).toBe(before);
  });
});

describe("gateway retry - POST /v1/tasks/:id/retry", () => {
  async function finished(
    type: string,
    status: TaskState["status"],
    keepTask: boolean,
  ): Promise<{ id: string; msg: TaskMessage }> {
    const res = await postTask(h, {
      type,
      payload: { doc: 7 },
      priority: "high",
      idempotencyKey: `k-${type}`,
      maxAttempts: 3,
    });
    const id = (res.json() as { id: string }).id;
    const msg = (await h.lastTask(`sluice.tasks.high.${type}`))!.msg;
    await advance(h, id, {
      status,
      attempts: 3,
      finishedAt: Date.now(),
      error: { code: "handler_failed", message: "no" },
      ...(keepTask ? { task: { ...msg, attempt: 3, runAt: Date.now() + 60_000 } } : {}),
    });
    return { id, msg };
  }
  const retry = (id: string) => h.service.app.inject({ method: "POST", url: `/v1/tasks/${id}/retry` });

  it("enqueues a copy under a new id linked both ways, attempt 1, no delay, no idempotency key", async () => {
    const { id, msg } = await finished("retry.dead", "dead", true);
    const res = await retry(id);
    expect(res.statusCode).toBe(202);
    const r = res.json() as { id: string; status: string; replayOf: string };
    expect(r).toMatchObject({ status: "queued", replayOf: id });
    expect(r.id).not.toBe(id);
    expect(res.headers.location).toBe(`/v1/tasks/${r.id}`);
    const stored = (await h.lastTask("sluice.tasks.high.retry.dead"))!;
    expect(stored.msgId).toBe(r.id);
    expect(stored.msg).toMatchObject({
      id: r.id,
      type: "retry.dead",
      payload: msg.payload,
      maxAttempts: 3,
      attempt: 1,
      replayOf: id,
    });
    expect(stored.msg.runAt).toBeUndefined();
    expect(stored.msg.idempotencyKey).toBeUndefined();
    expect((await stateOf(h, r.id)).state).toMatchObject({
      status: "queued",
      replayOf: id,
      priority: "high",
    });
    expect((await stateOf(h, id)).state.replayedBy).toBe(r.id);

    // again: the same retry, not a second copy
    const count = await h.tasksCount();
    const again = await retry(id);
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual({ id: r.id, status: "queued", replayOf: id, duplicate: true });
    expect(await h.tasksCount()).toBe(count);
  });

  it("stores one copy when two retries race", async () => {
    const { id } = await finished("retry.race", "failed", true);
    const count = await h.tasksCount();
    const [a, b] = await Promise.all([retry(id), retry(id)]);
    expect([a.statusCode, b.statusCode]).toEqual([202, 202]);
    expect(a.json().id).toBe(b.json().id);
    expect(await h.tasksCount()).toBe(count + 1);
  });

  it("answers 409 for tasks that are not finished, completed, or keep no task message; 404 for unknown ids", async () => {
    const running = (await postTask(h, { type: "retry.running" })).json().id as string;
    await advance(h, running, { status: "running" });
    const r1 = await retry(running);
    expect(r1.statusCode).toBe(409);
    expect(r1.json().code).toBe("task_not_finished");
    const { id: done } = await finished("retry.done", "completed", true);
    expect((await retry(done)).json()).toMatchObject({ status: 409, code: "task_not_retryable" });
    const { id: bare } = await finished("retry.bare", "timed_out", false);
    const r3 = await retry(bare);
    expect(r3.statusCode).toBe(409);
    expect(r3.json().detail).toMatch(/task message/);
    expect((await retry("no-such-task")).statusCode).toBe(404);
    expect((await retry("bad..id")).statusCode).toBe(404);
  });
});

describe("gateway workers - GET /v1/workers", () => {
  it("shows live workers with their types, slots, busy slots and heartbeat age; ?all=true adds stale and draining ones", async () => {
    const kv = await workersKv(h);
    const now = Date.now();
    const rec = (id: string, o: Partial<WorkerRecord>): WorkerRecord => ({
      id,
      hostname: "host-1",
      pid: 100,
      version: "1.2.3",
      state: "running",
      startedAt: now - 60_000,
      heartbeatAt: now,
      heartbeatMs: 2000,
      types: { "doc.chunk": { slots: 4, busy: 1 } },
      ...o,
    });
    await kv.put("w-1", JSON.stringify(rec("w-1", {})));
    await kv.put(
      "w-2",
      JSON.stringify(
        rec("w-2", { types: { "doc.chunk": { slots: 2, busy: 2 }, noop: { slots: 10, busy: 0 } } }),
      ),
    );
    await kv.put("w-stale", JSON.stringify(rec("w-stale", { heartbeatAt: now - 60_000 })));
    await kv.put("w-drain", JSON.stringify(rec("w-drain", { state: "draining" })));
    const live = (await h.service.app.inject({ url: "/v1/workers" })).json() as {
      workers: {
        id: string;
        live: boolean;
        slots: number;
        busy: number;
        version: string;
        heartbeatAgeMs: number;
      }[];
      types: Record<string, { workers: number; slots: number; busy: number }>;
    };
    expect(live.workers.map((w) => w.id)).toEqual(["w-1", "w-2"]);
    expect(live.workers[1]).toMatchObject({ live: true, slots: 12, busy: 2, version: "1.2.3" });
    expect(live.workers[0]!.heartbeatAgeMs).toBeGreaterThanOrEqual(0);
    expect(live.types).toEqual({
      "doc.chunk": { workers: 2, slots: 6, busy: 3 },
      noop: { workers: 1, slots: 10, busy: 0 },
    });
    const all = (await h.service.app.inject({ url: "/v1/workers?all=true" })).json() as {
      workers: { id: string; live: boolean }[];
    };
    expect(all.workers.map((w) => [w.id, w.live])).toEqual([
      ["w-1", true],
      ["w-2", true],
      ["w-drain", false],
      ["w-stale", false],
    ]);
  });
});
