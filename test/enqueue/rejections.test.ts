import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Gateway } from "../../services/enqueue/gateway.ts";
import { buildApp } from "../../services/enqueue/http/app.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { type Harness, startHarness, TEST_MAX_PAYLOAD_BYTES } from "./harness.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

type Case = {
  name: string;
  body?: string;
  contentType?: string | null;
  status: number;
  code: string;
  /** The `errors` list must name this path. */
  path?: string;
};

const json = (v: unknown) => JSON.stringify(v);
const nested = (depth: number) => `{"type":"deep","payload":${"[".repeat(depth)}${"]".repeat(depth)}}`;

const cases: Case[] = [
  { name: "malformed JSON", body: '{"type": "noop",', status: 400, code: "invalid_json" },
  { name: "empty JSON body", body: "", status: 400, code: "invalid_json" },
  { name: "__proto__ key", body: '{"type":"noop","__proto__":{"x":1}}', status: 400, code: "invalid_json" },
  {
    name: "unknown priority name",
    body: json({ type: "noop", priority: "asap" }),
    status: 400,
    code: "invalid_priority",
    path: "priority",
  },
  {
    name: "priority 0",
    body: json({ type: "noop", priority: 0 }),
    status: 400,
    code: "invalid_priority",
    path: "priority",
  },
  {
    name: "priority 6",
    body: json({ type: "noop", priority: 6 }),
    status: 400,
    code: "invalid_priority",
    path: "priority",
  },
  {
    name: "priority 2.5",
    body: json({ type: "noop", priority: 2.5 }),
    status: 400,
    code: "invalid_priority",
    path: "priority",
  },
  {
    name: "priority as numeric string",
    body: json({ type: "noop", priority: "1" }),
    status: 400,
    code: "invalid_priority",
    path: "priority",
  },
  { name: "missing type", body: json({ payload: 1 }), status: 400, code: "invalid_task_type", path: "type" },
  {
    name: "uppercase type",
    body: json({ type: "Doc.Chunk" }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type too long",
    body: json({ type: "a".repeat(65) }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type with leading dot",
    body: json({ type: ".doc" }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type with trailing dot",
    body: json({ type: "doc." }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type with empty segment",
    body: json({ type: "doc..chunk" }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type with wildcard",
    body: json({ type: "doc.*" }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type with space",
    body: json({ type: "doc chunk" }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  {
    name: "type not a string",
    body: json({ type: 42 }),
    status: 400,
    code: "invalid_task_type",
    path: "type",
  },
  { name: "unknown field", body: json({ type: "noop", color: "red" }), status: 400, code: "invalid_request" },
  {
    name: "several bad fields",
    body: json({ type: "X", priority: 9 }),
    status: 400,
    code: "invalid_request",
    path: "priority",
  },
  {
    name: "timeoutMs 0",
    body: json({ type: "noop", timeoutMs: 0 }),
    status: 400,
    code: "invalid_request",
    path: "timeoutMs",
  },
  {
    name: "maxAttempts too high",
    body: json({ type: "noop", maxAttempts: 1000 }),
    status: 400,
    code: "invalid_request",
    path: "maxAttempts",
  },
  {
    name: "empty idempotencyKey",
    body: json({ type: "noop", idempotencyKey: "" }),
    status: 400,
    code: "invalid_request",
    path: "idempotencyKey",
  },
  { name: "array body", body: "[]", status: 400, code: "invalid_request" },
  { name: "string body", body: '"noop"', status: 400, code: "invalid_request" },
  { name: "number body", body: "42", status: 400, code: "invalid_request" },
  { name: "null body", body: "null", status: 400, code: "invalid_request" },
  { name: "payload nested too deep", body: nested(300), status: 400, code: "invalid_request" },
  { name: "payload nested absurdly deep", body: nested(30_000), status: 400, code: "invalid_request" },
  {
    name: "payload over the limit",
    body: json({ type: "noop", payload: "x".repeat(TEST_MAX_PAYLOAD_BYTES) }),
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "body over the body limit",
    body: json({ type: "noop", payload: "x".repeat(TEST_MAX_PAYLOAD_BYTES + 70 * 1024) }),
    status: 413,
    code: "payload_too_large",
  },
  {
    name: "text/plain body",
    body: json({ type: "noop" }),
    contentType: "text/plain",
    status: 415,
    code: "unsupported_media_type",
  },
  {
    name: "form body",
    body: "type=noop",
    contentType: "application/x-www-form-urlencoded",
    status: 415,
    code: "unsupported_media_type",
  },
  {
    name: "no content type",
    body: json({ type: "noop" }),
    contentType: null,
    status: 415,
    code: "unsupported_media_type",
  },
  { name: "no content type, no body", contentType: null, status: 415, code: "unsupported_media_type" },
  {
    name: "invalid content type",
    body: json({ type: "noop" }),
    contentType: "json",
    status: 415,
    code: "unsupported_media_type",
  },
];

describe("enqueue http - rejected input", () => {
  it.each(cases)("rejects $name with $status $code and stores nothing", async (c) => {
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    const headers: Record<string, string> = {};
    if (c.contentType !== null) headers["content-type"] = c.contentType ?? "application/json";
    const res = await h.service.app.inject({
      method: "POST",
      url: "/v1/tasks",
      headers,
      ...(c.body !== undefined ? { payload: c.body } : {}),
    });
    expect(res.statusCode).toBe(c.status);
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    const p = res.json() as Record<string, unknown>;
    expect(p).toMatchObject({ status: c.status, code: c.code, type: `urn:sluice:problem:${c.code}` });
    expect(typeof p.title).toBe("string");
    expect(typeof p.detail).toBe("string");
    if (c.path !== undefined) {
      expect(p.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path: c.path })]));
      for (const e of p.errors as { message: unknown }[]) expect(typeof e.message).toBe("string");
    }
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
  });

  it("keeps the problem small when a body is full of unknown fields", async () => {
    const body: Record<string, unknown> = { type: "noop" };
    for (let i = 0; i < 500; i++) body[`field_${i}_${"k".repeat(100)}`] = i;
    const res = await h.service.app.inject({
      method: "POST",
      url: "/v1/tasks",
      headers: { "content-type": "application/json" },
      payload: json(body),
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().code).toBe("invalid_request");
    expect(res.body.length).toBeLessThan(3000);
    expect(res.json().detail).toMatch(/500 in all/);
  });

  it("still serves after every bad input", async () => {
    const res = await h.service.app.inject({
      method: "POST",
      url: "/v1/tasks",
      headers: { "content-type": "application/json" },
      payload: json({ type: "noop" }),
    });
    expect(res.statusCode).toBe(202);
  });
});

describe("enqueue http - unexpected failures", () => {
  it("answers 500 internal_error without leaking the error's message or stack", async () => {
    // a gateway whose NATS side throws something nobody anticipated (a programming error)
    const gateway = new Gateway({
      link: {
        session() {
          throw new TypeError("secret internal detail at /srv/app.ts:12");
        },
      },
      names: names("sluice"),
      maxPayloadBytes: 1024,
    });
    const app = buildApp({
      gateway,
      isReady: () => true,
      log: createLogger({ service: "enqueue", level: "silent", format: "json" }),
      maxPayloadBytes: 1024,
      requestTimeoutMs: 5000,
    });
    try {
      const res = await app.inject({
        method: "POST",
        url: "/v1/tasks",
        headers: { "content-type": "application/json" },
        payload: json({ type: "noop" }),
      });
      expect(res.statusCode).toBe(500);
      expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
      expect(res.json()).toMatchObject({ status: 500, code: "internal_error" });
      expect(res.body).not.toMatch(/secret|srv|TypeError|stack/);
    } finally {
      await app.close();
    }
  });
});
