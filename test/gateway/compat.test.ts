import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LEGACY_ENQUEUED_MESSAGE } from "../../services/enqueue/compat/legacy.ts";
import type { WorkerRecord } from "../../shared/workers.ts";
import { type Harness, startHarness } from "../enqueue/harness.ts";
import { advance, stateOf, workersKv } from "./support.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

function legacyEnqueue(body: unknown) {
  return h.service.app.inject({
    method: "POST",
    url: "/tasks/enqueue",
    headers: { "content-type": "application/json" },
    payload: JSON.stringify(body),
  });
}

describe("compatibility - POST /tasks/enqueue (SureUp worker API)", () => {
  it("answers 202 {task_id, status: pending, message} and stores the task with task_data as payload", async () => {
    const res = await legacyEnqueue({
      task_type: "mistake_analyzer",
      task_data: { record_data: { $id: "record-id", userId: "user-id", analysisStatus: "pending" } },
      priority: 5,
    });
    expect(res.statusCode).toBe(202);
    const body = res.json() as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["message", "status", "task_id"]);
    expect(body.status).toBe("pending");
    expect(body.message).toBe(LEGACY_ENQUEUED_MESSAGE);
    expect(body.task_id).toMatch(/^[0-9a-f-]{36}$/);
    const stored = await h.lastTask("sluice.tasks.normal.mistake_analyzer");
    expect(stored?.msg).toMatchObject({
      id: body.task_id,
      type: "mistake_analyzer",
      payload: { record_data: { $id: "record-id", userId: "user-id", analysisStatus: "pending" } },
    });
  });

  it("maps priorities 1-10 (smaller is more urgent) onto the five levels", async () => {
    const expected = ["urgent", "high", "high", "normal", "normal", "normal", "low", "low", "bulk", "bulk"];
    for (let p = 1; p <= 10; p++) {
      const res = await legacyEnqueue({ task_type: "legacy.prio", task_data: { p }, priority: p });
      expect(res.statusCode).toBe(202);
      const stored = await h.lastTask(`sluice.tasks.${expected[p - 1]}.legacy.prio`);
      expect(stored?.msg.id, `priority ${p}`).toBe(res.json().task_id);
    }
  });

  it("defaults priority to 5 and task_data to {}, coerces numeric strings, and ignores unknown fields", async () => {
    const res = await legacyEnqueue({ task_type: "legacy.defaults", client: "old-app" });
    expect(res.statusCode).toBe(202);
    expect((await h.lastTask("sluice.tasks.normal.legacy.defaults"))?.msg).toMatchObject({
      id: res.json().task_id,
      payload: {},
    });
    const str = await legacyEnqueue({ task_type: "legacy.str", priority: "1" });
    expect((await h.lastTask("sluice.tasks.urgent.legacy.str"))?.msg.id).toBe(str.json().task_id);
  });

  it("refuses bad priorities and types with 400 problems, storing nothing", async () => {
    const before = await h.tasksCount();
    for (const [body, code] of [
      [{ task_type: "legacy.bad", priority: 0 }, "invalid_priority"],
      [{ task_type: "legacy.bad", priority: 11 }, "invalid_priority"],
      [{ task_type: "legacy.bad", priority: 2.5 }, "invalid_priority"],
      [{ task_type: "Bad Type" }, "invalid_task_type"],
      [{ task_data: {} }, "invalid_task_type"],
    ] as const) {
      const res = await legacyEnqueue(body);
      expect(res.statusCode, JSON.stringify(body)).toBe(400);
      expect(res.json().code).toBe(code);
    }
    expect(await h.tasksCount()).toBe(before);
  });
});

describe("compatibility - GET /tasks/:task_id", () => {
  it("answers the legacy shape, field by field, through the lifecycle", async () => {
    const id = (await legacyEnqueue({ task_type: "legacy.get", task_data: { x: 1 } })).json()
      .task_id as string;
    const get = async () =>
      (await h.service.app.inject({ url: `/tasks/${id}` })).json() as Record<string, unknown>;
    const { state } = await stateOf(h, id);
    const queued = await get();
    expect(queued).toEqual({
      task_id: id,
      task_type: "legacy.get",
      status: "pending",
      enqueued_at: new Date(state.enqueuedAt).toISOString(),
      started_at: null,
      completed_at: null,
      result: null,
      error: null,
    });
    const startedAt = Date.now();
    await advance(h, id, { status: "running", startedAt });
    expect(await get()).toMatchObject({
      status: "processing",
      started_at: new Date(startedAt).toISOString(),
      completed_at: null,
    });
    const finishedAt = startedAt + 1234;
    await advance(h, id, { status: "completed", finishedAt, result: { questions: 3 } });
    expect(await get()).toMatchObject({
      status: "completed",
      completed_at: new Date(finishedAt).toISOString(),
      result: { questions: 3 },
      error: null,
    });
  });

  it("folds every unsuccessful end into failed with the error message, and waiting states into pending", async () => {
    const cases: [string, string][] = [
      ["failed", "failed"],
      ["timed_out", "failed"],
      ["cancelled", "failed"],
      ["dead", "failed"],
      ["retrying", "pending"],
      ["scheduled", "pending"],
      ["paused", "pending"],
    ];
    for (const [ours, legacy] of cases) {
      const id = (await legacyEnqueue({ task_type: "legacy.fold" })).json().task_id as string;
      await advance(h, id, {
        status: ours as never,
        error: { code: "x", message: `why ${ours}` },
        finishedAt: Date.now(),
      });
      const got = (await h.service.app.inject({ url: `/tasks/${id}` })).json() as Record<string, unknown>;
      expect(got.status, ours).toBe(legacy);
      if (legacy === "failed") expect(got.error).toBe(`why ${ours}`);
      if (legacy === "pending") expect(got.completed_at).toBeNull();
    }
  });

  it("answers 404 with a detail for unknown ids", async () => {
    const res = await h.service.app.inject({ url: "/tasks/unknown-id" });
    expect(res.statusCode).toBe(404);
    expect(typeof res.json().detail).toBe("string");
  });
});

describe("compatibility - stats and worker types", () => {
  it("reports queue, running and finished counts in both legacy shapes", async () => {
    const kv = await workersKv(h);
    const now = Date.now();
    const w: WorkerRecord = {
      id: "legacy-w1",
      hostname: "h",
      pid: 1,
      version: "x",
      state: "running",
      startedAt: now,
      heartbeatAt: now,
      heartbeatMs: 2000,
      types: { mistake_analyzer: { slots: 100, busy: 2 }, "doc.chunk": { slots: 8, busy: 1 } },
    };
    await kv.put(w.id, JSON.stringify(w));
    // outcomes as workers announce them (best-effort notices on <prefix>.events.<status>.<type>): a
    // batch standing for three tasks, as workers send now, and per-task notices of older workers
    const batch = { type: "mistake_analyzer", status: "completed", n: 3, ids: ["a", "b", "c"], at: now };
    h.nc.publish("sluice.events.completed.mistake_analyzer", JSON.stringify(batch));
    for (const [status, n] of [
      ["completed", 2],
      ["failed", 2],
      ["timed_out", 1],
      ["dead", 1],
      ["retrying", 4],
    ] as const) {
      for (let i = 0; i < n; i++) h.nc.publish(`sluice.events.${status}.mistake_analyzer`, "{}");
    }
    await h.nc.flush();
    const queued = await h.tasksCount();
    // the counters are fed by a subscription: poll until the notices are in
    await expect
      .poll(async () => (await h.service.app.inject({ url: "/queue/stats" })).json().completed, {
        timeout: 5_000,
      })
      .toBe(5);
    // the live part is cached for a second
    await new Promise((r) => setTimeout(r, 1100));
    const stats = (await h.service.app.inject({ url: "/queue/stats" })).json();
    expect(stats).toEqual({
      total: queued + 3 + 5 + 4,
      pending: queued,
      processing: 3,
      completed: 5,
      failed: 4,
    });
    expect((await h.service.app.inject({ url: "/workers/types" })).json()).toEqual({
      worker_types: ["doc.chunk", "mistake_analyzer"],
      concurrency: 108,
    });
    expect((await h.service.app.inject({ url: "/api/queue/stats" })).json()).toEqual({
      total_processed: 9,
      total_success: 5,
      total_failed: 3,
      total_timeout: 1,
      current_processing: 3,
      queue_size: queued,
      max_workers: 108,
      max_queue_size: -1,
      is_running: true,
    });
  });
});
