import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TaskState } from "../../shared/task.ts";
import { type Harness, startHarness, TEST_MAX_PAYLOAD_BYTES } from "./harness.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

type Reply = {
  id?: string;
  status?: string;
  duplicate?: boolean;
  error?: { status: number; code: string; message: string; errors?: unknown };
};

async function request(body: unknown): Promise<Reply> {
  const data = typeof body === "string" ? body : JSON.stringify(body);
  const m = await h.nc.request(h.names.enqueueSubject, data, { timeout: 5000 });
  return m.json<Reply>();
}

describe("enqueue nats api - request/reply", () => {
  it("enqueues a task and replies with its id and status", async () => {
    const r = await request({ type: "nats.job", payload: { a: 1 }, priority: 2 });
    expect(r.error).toBeUndefined();
    expect(r.status).toBe("queued");
    const stored = await h.lastTask("sluice.tasks.high.nats.job");
    expect(stored?.msg).toMatchObject({ id: r.id, type: "nats.job", priority: "high", payload: { a: 1 } });
    const st = (await h.kv.get(r.id!))!.json<TaskState>();
    expect(st).toMatchObject({ id: r.id, status: "queued", priority: "high" });
  });

  it("answers an idempotent duplicate with the original id", async () => {
    const body = { type: "nats.idem", idempotencyKey: "same" };
    const a = await request(body);
    const b = await request(body);
    expect(b).toEqual({ id: a.id, status: "queued", duplicate: true });
  });

  it("handles many requests at once", async () => {
    const before = await h.tasksCount();
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) => request({ type: "nats.many", payload: i })),
    );
    expect(replies.every((r) => r.status === "queued")).toBe(true);
    expect(new Set(replies.map((r) => r.id)).size).toBe(200);
    expect(await h.tasksCount()).toBe(before + 200);
  });

  it.each([
    { name: "malformed JSON", body: "{nope", status: 400, code: "invalid_json" },
    { name: "empty body", body: "", status: 400, code: "invalid_json" },
    { name: "bad type", body: { type: "UPPER" }, status: 400, code: "invalid_task_type" },
    { name: "bad priority", body: { type: "ok", priority: 0 }, status: 400, code: "invalid_priority" },
    { name: "unknown field", body: { type: "ok", extra: true }, status: 400, code: "invalid_request" },
    {
      name: "payload over the limit",
      body: { type: "ok", payload: "x".repeat(TEST_MAX_PAYLOAD_BYTES + 1) },
      status: 413,
      code: "payload_too_large",
    },
  ])("replies {error} with $code for $name and stores nothing", async ({ body, status, code }) => {
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    const r = await request(body);
    expect(r.id).toBeUndefined();
    expect(r.error).toMatchObject({ status, code });
    expect(typeof r.error?.message).toBe("string");
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
  });
});
