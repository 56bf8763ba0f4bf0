import { nanos } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PRIORITIES } from "../../shared/priority.ts";
import { idForIdempotencyKey, type TaskState } from "../../shared/task.ts";
import { type Harness, postTask, startHarness } from "./harness.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

describe("enqueue http - accepting tasks", () => {
  it("answers 202 with the id, and GET shows the queued state record", async () => {
    const before = Date.now();
    const res = await postTask(h, {
      type: "doc.chunk",
      payload: { doc: 7, text: "héllo" },
      priority: "high",
      timeoutMs: 5000,
      maxAttempts: 3,
    });
    expect(res.statusCode).toBe(202);
    const body = res.json() as { id: string; status: string; duplicate?: boolean };
    expect(body.status).toBe("queued");
    expect(body.duplicate).toBeUndefined();
    expect(body.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.headers.location).toBe(`/v1/tasks/${body.id}`);

    const got = await h.service.app.inject({ method: "GET", url: `/v1/tasks/${body.id}` });
    expect(got.statusCode).toBe(200);
    const st = got.json() as TaskState;
    expect(st).toMatchObject({
      id: body.id,
      type: "doc.chunk",
      priority: "high",
      status: "queued",
      attempts: 0,
      timeoutMs: 5000,
      maxAttempts: 3,
    });
    expect(st.enqueuedAt).toBeGreaterThanOrEqual(before);
    expect(st.enqueuedAt).toBeLessThanOrEqual(Date.now());
  });

  it("stores the task message in the tasks stream on sluice.tasks.<priority>.<type> with msg id = task id", async () => {
    const res = await postTask(h, { type: "webhook.deliver", payload: { url: "x" }, priority: "low" });
    const { id } = res.json() as { id: string };
    const stored = await h.lastTask("sluice.tasks.low.webhook.deliver");
    expect(stored?.msgId).toBe(id);
    expect(stored?.msg).toMatchObject({
      id,
      type: "webhook.deliver",
      priority: "low",
      payload: { url: "x" },
    });
    expect(h.names.tasksStream).toBe("SLUICE_TASKS");
  });

  it("maps priorities 1-5 to urgent..bulk and defaults to normal", async () => {
    for (let n = 1; n <= 5; n++) {
      const res = await postTask(h, { type: "prio.num", payload: n, priority: n });
      expect(res.statusCode).toBe(202);
      const { id } = res.json() as { id: string };
      const name = PRIORITIES[n - 1]!;
      const stored = await h.lastTask(`sluice.tasks.${name}.prio.num`);
      expect(stored?.msg.id).toBe(id);
      const st = (await h.service.app.inject({ url: `/v1/tasks/${id}` })).json() as TaskState;
      expect(st.priority).toBe(name);
    }
    const res = await postTask(h, { type: "prio.default" });
    const { id } = res.json() as { id: string };
    const stored = await h.lastTask("sluice.tasks.normal.prio.default");
    expect(stored?.msg).toMatchObject({ id, priority: "normal", payload: null });
  });

  it("accepts a payload of exactly the limit, counted in UTF-8 bytes of its JSON", async () => {
    // "é" is 2 bytes: the limit is on bytes, not characters
    const payload = "é".repeat((4096 - 2) / 2);
    expect(Buffer.byteLength(JSON.stringify(payload))).toBe(4096);
    expect((await postTask(h, { type: "size.edge", payload })).statusCode).toBe(202);
    const over = await postTask(h, { type: "size.edge", payload: `${payload}x` });
    expect(over.statusCode).toBe(413);
  });

  it("accepts a POST over a real HTTP connection", async () => {
    const res = await fetch(`${h.url}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json; charset=utf-8" },
      body: JSON.stringify({ type: "noop" }),
    });
    expect(res.status).toBe(202);
    expect(((await res.json()) as { status: string }).status).toBe("queued");
  });
});

describe("enqueue http - idempotency keys", () => {
  it("gives a sequential duplicate the original id and status without storing a second message", async () => {
    const body = { type: "idem.seq", payload: { n: 1 }, idempotencyKey: "order-42" };
    const first = (await postTask(h, body)).json() as { id: string; duplicate?: boolean };
    const count = await h.tasksCount();
    const states = await h.stateCount();
    const second = await postTask(h, { ...body, payload: { n: 2 } });
    expect(second.statusCode).toBe(202);
    expect(second.json()).toEqual({ id: first.id, status: "queued", duplicate: true });
    expect(first.duplicate).toBeUndefined();
    expect(await h.tasksCount()).toBe(count);
    expect(await h.stateCount()).toBe(states);
    // the same key on another type is another task
    const other = (await postTask(h, { ...body, type: "idem.other" })).json() as { id: string };
    expect(other.id).not.toBe(first.id);
  });

  it("settles 20 concurrent duplicates on one id and one stream message", async () => {
    const count = await h.tasksCount();
    const states = await h.stateCount();
    const body = { type: "idem.burst", idempotencyKey: "burst-1" };
    const results = await Promise.all(Array.from({ length: 20 }, () => postTask(h, body)));
    expect(results.map((r) => r.statusCode)).toEqual(Array(20).fill(202));
    const bodies = results.map((r) => r.json() as { id: string; status: string; duplicate?: boolean });
    expect(new Set(bodies.map((b) => b.id)).size).toBe(1);
    expect(bodies.every((b) => b.status === "queued")).toBe(true);
    expect(bodies.filter((b) => b.duplicate !== true)).toHaveLength(1);
    expect(await h.tasksCount()).toBe(count + 1);
    expect(await h.stateCount()).toBe(states + 1);
  });

  it("finds the original by its state record once the stream's duplicate window has passed", async () => {
    const body = { type: "idem.late", idempotencyKey: "late-1" };
    const { id } = (await postTask(h, body)).json() as { id: string };
    const info = await h.jsm.streams.info(h.names.tasksStream);
    const window = info.config.duplicate_window;
    // shrink the window so the stream itself no longer remembers the msg id, and age the record as
    // that much time would have (a young record gets its message stored again: the next test)
    await h.jsm.streams.update(h.names.tasksStream, { ...info.config, duplicate_window: nanos(100) });
    const st = (await h.kv.get(id))!.json<TaskState>();
    const past = Date.now() - 3 * 60_000;
    await h.kv.put(id, JSON.stringify({ ...st, enqueuedAt: past, updatedAt: past }));
    try {
      await new Promise((r) => setTimeout(r, 300));
      const count = await h.tasksCount();
      const again = await postTask(h, body);
      expect(again.json()).toEqual({ id, status: "queued", duplicate: true });
      expect(await h.tasksCount()).toBe(count);
    } finally {
      await h.jsm.streams.update(h.names.tasksStream, { ...info.config, duplicate_window: window });
    }
  });

  it("stores the task message of a young queued record that has none (a crash between the two writes)", async () => {
    const body = { type: "idem.orphan", payload: { n: 1 }, idempotencyKey: "orphan-1", priority: "high" };
    const id = idForIdempotencyKey(body.type, body.idempotencyKey);
    // what a gateway that died after its record was stored, and before its task message was, leaves
    const now = Date.now();
    const orphan: TaskState = {
      id,
      type: body.type,
      priority: "high",
      status: "queued",
      attempts: 0,
      enqueuedAt: now - 30_000,
      updatedAt: now - 30_000 + 2,
      idempotencyKey: body.idempotencyKey,
    };
    await h.kv.put(id, JSON.stringify(orphan));
    expect(await h.lastTask("sluice.tasks.high.idem.orphan")).toBeUndefined();
    const count = await h.tasksCount();
    const again = await postTask(h, body);
    expect(again.statusCode).toBe(202);
    expect(again.json()).toEqual({ id, status: "queued", duplicate: true });
    const stored = await h.lastTask("sluice.tasks.high.idem.orphan");
    expect(stored?.msgId).toBe(id);
    expect(stored?.msg).toMatchObject({
      id,
      type: body.type,
      priority: "high",
      enqueuedAt: orphan.enqueuedAt,
    });
    // a further retry is dropped by the stream as a repeat: one message, so one run
    await postTask(h, body);
    expect(await h.tasksCount()).toBe(count + 1);
    // a record that was resumed, handed back or dispatched since is not a fresh one: left as it is
    const moved = { ...body, idempotencyKey: "orphan-2" };
    const movedId = idForIdempotencyKey(moved.type, moved.idempotencyKey);
    await h.kv.put(movedId, JSON.stringify({ ...orphan, id: movedId, attempts: 1, updatedAt: now }));
    await postTask(h, moved);
    expect(await h.tasksCount()).toBe(count + 1);
  });

  it("reports the current status of an existing record instead of overwriting it", async () => {
    const body = { type: "idem.moved", idempotencyKey: "moved-1" };
    const { id } = (await postTask(h, body)).json() as { id: string };
    // the pipeline moved the task on (as a worker would)
    const kv = h.kv;
    const st = (await kv.get(id))!.json<TaskState>();
    await kv.put(id, JSON.stringify({ ...st, status: "completed", updatedAt: Date.now() }));
    const again = await postTask(h, body);
    expect(again.json()).toEqual({ id, status: "completed", duplicate: true });
    expect(((await kv.get(id))!.json() as TaskState).status).toBe("completed");
  });
});

describe("enqueue http - reading tasks and health", () => {
  it("answers 404 task_not_found for unknown and impossible ids", async () => {
    for (const id of [
      "does-not-exist",
      "a.b",
      "a..b",
      ".hidden",
      "trailing.",
      "a%20b",
      "x*",
      encodeURIComponent(">"),
    ]) {
      const res = await h.service.app.inject({ method: "GET", url: `/v1/tasks/${id}` });
      expect(res.statusCode, id).toBe(404);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(res.json().code, id).toBe("task_not_found");
    }
  });

  it("answers 404 not_found problems for unknown routes", async () => {
    const res = await h.service.app.inject({ method: "GET", url: "/v2/nothing" });
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({
      status: 404,
      code: "not_found",
      type: "urn:sluice:problem:not_found",
    });
  });

  it("reports healthz and readyz 200 while NATS is up", async () => {
    expect((await h.service.app.inject({ url: "/healthz" })).statusCode).toBe(200);
    const ready = await fetch(`${h.url}/readyz`);
    expect(ready.status).toBe(200);
  });
});
