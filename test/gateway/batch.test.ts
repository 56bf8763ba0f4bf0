import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness, TEST_MAX_PAYLOAD_BYTES } from "../enqueue/harness.ts";
import { stateOf } from "./support.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ BATCH_MAX_BYTES: String(256 * 1024) });
});
afterAll(async () => {
  await h?.cleanup();
});

function batch(body: unknown) {
  return h.service.app.inject({
    method: "POST",
    url: "/v1/tasks:batch",
    headers: { "content-type": "application/json" },
    payload: typeof body === "string" ? body : JSON.stringify(body),
  });
}

describe("gateway batch - POST /v1/tasks:batch", () => {
  it("stores every task and answers 202 with per-item results in order", async () => {
    const before = await h.tasksCount();
    const res = await batch({
      tasks: [
        { type: "batch.a", payload: { n: 0 }, priority: "urgent" },
        { type: "batch.b", payload: { n: 1 } },
        { type: "batch.a", payload: { n: 2 }, priority: 5, idempotencyKey: "b-2" },
      ],
    });
    expect(res.statusCode).toBe(202);
    const { results } = res.json() as { results: { index: number; id: string; status: string }[] };
    expect(results.map((r) => [r.index, r.status])).toEqual([
      [0, "queued"],
      [1, "queued"],
      [2, "queued"],
    ]);
    expect(await h.tasksCount()).toBe(before + 3);
    expect((await h.lastTask("sluice.tasks.urgent.batch.a"))?.msg).toMatchObject({
      id: results[0]!.id,
      payload: { n: 0 },
    });
    expect((await h.lastTask("sluice.tasks.bulk.batch.a"))?.msg.id).toBe(results[2]!.id);
    expect((await stateOf(h, results[1]!.id)).state).toMatchObject({ type: "batch.b", status: "queued" });
    // the same idempotency key again: the original, marked duplicate
    const again = await batch({ tasks: [{ type: "batch.a", payload: { n: 9 }, idempotencyKey: "b-2" }] });
    expect(again.json().results[0]).toEqual({
      index: 0,
      id: results[2]!.id,
      status: "queued",
      duplicate: true,
    });
  });

  it("refuses the whole batch with per-item errors when one task is invalid, storing nothing", async () => {
    const before = await h.tasksCount();
    const res = await batch({
      tasks: [
        { type: "ok.one" },
        { type: "Bad Type" },
        { type: "ok.two", priority: 9 },
        { type: "ok.three" },
      ],
    });
    expect(res.statusCode).toBe(400);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const body = res.json() as { code: string; detail: string; errors: { index: number; code: string }[] };
    expect(body.code).toBe("invalid_request");
    expect(body.detail).toContain("2 of 4");
    expect(body.errors.map((e) => [e.index, e.code])).toEqual([
      [1, "invalid_task_type"],
      [2, "invalid_priority"],
    ]);
    expect(await h.tasksCount()).toBe(before);
  });

  it("answers 413 when only payload sizes are wrong, and when the body exceeds BATCH_MAX_BYTES", async () => {
    const big = "x".repeat(TEST_MAX_PAYLOAD_BYTES);
    const res = await batch({ tasks: [{ type: "sz.ok" }, { type: "sz.big", payload: big }] });
    expect(res.statusCode).toBe(413);
    expect(res.json().errors).toEqual([expect.objectContaining({ index: 1, code: "payload_too_large" })]);
    const huge = await batch({
      tasks: Array.from({ length: 80 }, () => ({ type: "sz.many", payload: "y".repeat(4000) })),
    });
    expect(huge.statusCode).toBe(413);
  });

  it("accepts 1,000 tasks and refuses 1,001 or none", async () => {
    const before = await h.tasksCount();
    const thousand = await batch({
      tasks: Array.from({ length: 1000 }, (_, n) => ({ type: "batch.k", payload: n })),
    });
    expect(thousand.statusCode).toBe(202);
    expect(new Set(thousand.json().results.map((r: { id: string }) => r.id)).size).toBe(1000);
    expect(await h.tasksCount()).toBe(before + 1000);
    expect(
      (await batch({ tasks: Array.from({ length: 1001 }, () => ({ type: "batch.k" })) })).statusCode,
    ).toBe(400);
    expect((await batch({ tasks: [] })).statusCode).toBe(400);
    expect((await batch([{ type: "batch.k" }])).statusCode).toBe(400);
    expect((await batch({ tasks: [{ type: "batch.k" }], extra: 1 })).statusCode).toBe(400);
    expect((await batch("{not json")).statusCode).toBe(400);
    const text = await h.service.app.inject({
      method: "POST",
      url: "/v1/tasks:batch",
      headers: { "content-type": "text/plain" },
      payload: "hello",
    });
    expect(text.statusCode).toBe(415);
  });

  it("answers 207 when some tasks were stored and others refused (a full queue: 429 per item)", async () => {
    const patch = await h.service.app.inject({
      method: "PATCH",
      url: "/v1/queues/batch.full",
      headers: { "content-type": "application/json" },
      payload: JSON.stringify({ maxDepth: 0 }),
    });
    expect(patch.statusCode).toBe(200);
    // queue configs reach the gateway through a watch: wait until this one refuses
    await expect.poll(async () => (await batch({ tasks: [{ type: "batch.full" }] })).statusCode).toBe(429);
    const res = await batch({ tasks: [{ type: "batch.open" }, { type: "batch.full" }] });
    expect(res.statusCode).toBe(207);
    const [open, full] = res.json().results;
    expect(open).toMatchObject({ index: 0, status: "queued" });
    expect(full).toMatchObject({ index: 1, error: { status: 429, code: "queue_full" } });
    // none stored: the batch takes the items' error, with Retry-After
    const none = await batch({ tasks: [{ type: "batch.full" }] });
    expect(none.statusCode).toBe(429);
    expect(none.headers["retry-after"]).toBeDefined();
  });

  it("answers 503 with Retry-After while NATS is down, and works again when it returns", async () => {
    await h.stopNats();
    try {
      const res = await batch({ tasks: [{ type: "batch.outage" }] });
      expect(res.statusCode).toBe(503);
      expect(res.headers["retry-after"]).toBe("1");
    } finally {
      await h.restartNats();
    }
    await expect
      .poll(async () => (await batch({ tasks: [{ type: "batch.outage" }] })).statusCode, { timeout: 15_000 })
      .toBe(202);
  });
});
