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

async function request(body: unknown, subject: string = h.names.enqueueSubject): Promise<Reply> {
  const data = typeof body !== "string" ? JSON.stringify(body) : body.includes("\xff") ? latin1(body) : body;
  const m = await h.nc.request(subject, data, { timeout: 5000 });
  return m.json<Reply>();
}

/** The bytes of a string whose characters are all below 256: "\xff" stays the byte 0xFF (not UTF-8). */
const latin1 = (s: string) => new Uint8Array(Buffer.from(s, "latin1"));

/**
 * Bodies HTTP refuses with 400 invalid_json (fastify's prototype-poisoning guard): a `__proto__` key, or
 * a `constructor` object with a `prototype` key, at the top, in the payload, in an array, or with the
 * key spelled with \u escapes.
 */
const PROTO_BODIES = [
  '{"type":"ok","__proto__":{"x":1}}',
  '{"type":"ok","payload":{"a":{"__proto__":{"admin":true}}}}',
  '{"type":"ok","payload":[1,{"__proto__" : null}]}',
  '{"type":"ok","payload":{"\\u005f_proto__":{}}}',
  '{"type":"ok","payload":{"constructor":{"prototype":{"x":1}}}}',
  '{"type":"ok","payload":{"a":[{"\\u0063onstructor":{"prototyp\\u0065":1}}]}}',
];

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
    { name: "invalid UTF-8", body: '{"type":"ok","payload":"\xff"}', status: 400, code: "invalid_json" },
    ...PROTO_BODIES.map((body, i) => ({
      name: `prototype key #${i + 1}`,
      body,
      status: 400,
      code: "invalid_json",
    })),
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

describe("enqueue nats api - prototype keys", () => {
  const SAFE = [
    '{"type":"ok","payload":{"constructor":"x","proto":1,"__proto":2,"prototype":{}}}',
    '{"type":"ok","payload":{"constructor":{"name":"y"},"s":"\\"__proto__\\": 1"}}',
  ];

  const postRaw = (body: string) =>
    h.service.app.inject({
      method: "POST",
      url: "/v1/tasks",
      headers: { "content-type": "application/json" },
      payload: body,
    });

  it("refuses them as HTTP does, with the same status and code", async () => {
    for (const body of PROTO_BODIES) {
      const http = await postRaw(body);
      expect(http.statusCode, body).toBe(400);
      const nats = await request(body);
      expect(nats.error, body).toMatchObject({ status: 400, code: http.json().code });
    }
  });

  it("accepts the same look-alikes HTTP accepts", async () => {
    for (const body of SAFE) {
      const http = await postRaw(body);
      expect(http.statusCode, body).toBe(202);
      const nats = await request(body);
      expect(nats.status, body).toBe("queued");
      const stored = await h.kv.get(nats.id!);
      expect(stored, body).toBeTruthy();
    }
  });

  it("refuses them in a batch, and writes none of its tasks", async () => {
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    const body = `{"tasks":[{"type":"ok","payload":1},${PROTO_BODIES[1]}]}`;
    const r = await request(body, h.names.apiSubject("tasks", "batch"));
    expect(r.error).toMatchObject({ status: 400, code: "invalid_json" });
    const http = await h.service.app.inject({
      method: "POST",
      url: "/v1/tasks:batch",
      headers: { "content-type": "application/json" },
      payload: body,
    });
    expect(http.statusCode).toBe(400);
    expect(http.json().code).toBe("invalid_json");
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
  });

  it("refuses them on the schedule and queue APIs, which change nothing", async () => {
    const create = await request(
      '{"name":"proto-sched","every":"1h","task":{"type":"ok","payload":{"__proto__":{"x":1}}}}',
      h.names.apiSubject("schedules", "create"),
    );
    expect(create.error).toMatchObject({ status: 400, code: "invalid_json" });
    const got = await request({ name: "proto-sched" }, h.names.apiSubject("schedules", "get"));
    expect(got.error).toMatchObject({ status: 404 });

    const patch = await request(
      '{"type":"proto.q","constructor":{"prototype":{"paused":true}}}',
      h.names.apiSubject("queues", "patch"),
    );
    expect(patch.error).toMatchObject({ status: 400, code: "invalid_json" });
    const q = (await request({ type: "proto.q" }, h.names.apiSubject("queues", "get"))) as Reply & {
      config?: { paused?: boolean };
    };
    expect(q.config?.paused).not.toBe(true);
  });
});
