import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openApiPath } from "../../services/enqueue/http/openapi.ts";
import { type Harness, startHarness } from "../enqueue/harness.ts";
import { testKey } from "./support.ts";

type Doc = {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<
    string,
    Record<
      string,
      {
        operationId: string;
        responses: Record<string, unknown>;
        requestBody?: unknown;
        "x-sluice-scope"?: string;
        security?: unknown[];
      }
    >
  >;
  components: { schemas: Record<string, unknown>; securitySchemes?: Record<string, unknown> };
};

const producer = testKey("p", ["enqueue"]);
let h: Harness;
let doc: Doc;
beforeAll(async () => {
  h = await startHarness({
    AUTH_ENABLED: "true",
    AUTH_EXEMPT_PATHS: "/openapi.json,/docs",
    SLUICE_API_KEYS: producer.entry,
  });
  const res = await h.service.app.inject({ url: "/openapi.json" });
  expect(res.statusCode).toBe(200);
  doc = res.json() as Doc;
});
afterAll(async () => {
  await h?.cleanup();
});

describe("gateway OpenAPI - /openapi.json", () => {
  it("is OpenAPI 3.1 and lists every route the app serves, including other modules' routes", () => {
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.info.version).toMatch(/^\d+\.\d+\.\d+/);
    const expected = [
      "post /v1/tasks",
      "post /v1/tasks:batch",
      "get /v1/tasks",
      "get /v1/tasks/{id}",
      "post /v1/tasks/{id}/retry",
      "post /v1/tasks/{id}/cancel",
      "get /v1/tasks/{id}/events",
      "get /v1/events",
      "get /v1/ws",
      "get /v1/workers",
      "get /v1/queues",
      "post /v1/appwrite/webhooks/{name}",
      "post /tasks/enqueue",
      "get /tasks/{task_id}",
      "get /queue/stats",
      "get /workers/types",
      "get /api/queue/stats",
      "get /healthz",
      "get /readyz",
    ];
    const listed = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`));
    for (const e of expected) expect(listed, e).toContain(e);
    const ids = listed.map((l) => {
      const [m, p] = l.split(" ");
      return doc.paths[p!]![m!]!.operationId;
    });
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("describes auth per operation: scopes, 401/403, and none on public routes", () => {
    expect(Object.keys(doc.components.securitySchemes ?? {})).toEqual(["bearer", "apiKey"]);
    const enqueue = doc.paths["/v1/tasks"]!.post!;
    expect(enqueue["x-sluice-scope"]).toBe("enqueue");
    expect(Object.keys(enqueue.responses)).toEqual(
      expect.arrayContaining(["202", "200", "400", "401", "403", "413", "415", "429", "503"]),
    );
    expect(doc.paths["/v1/tasks/{id}"]!.get!["x-sluice-scope"]).toBe("read");
    expect(doc.paths["/v1/tasks/{id}/cancel"]!.post!["x-sluice-scope"]).toBe("enqueue");
    expect(doc.paths["/v1/tasks/{id}/pause"]!.post!["x-sluice-scope"]).toBe("admin");
    const hook = doc.paths["/v1/appwrite/webhooks/{name}"]!.post!;
    expect(hook.security).toEqual([]);
    expect(hook.responses["401"]).toBeDefined();
  });

  it("resolves every $ref, and its request schemas accept and refuse what the API does", async () => {
    const text = JSON.stringify(doc);
    for (const m of text.matchAll(/"\$ref":"#\/components\/schemas\/([^"]+)"/g)) {
      expect(doc.components.schemas, m[1]).toHaveProperty(m[1]!);
    }
    const ajv = new Ajv2020({ strict: false, allErrors: true });
    (addFormats as unknown as (a: Ajv2020) => void)(ajv);
    ajv.addSchema({ $id: "sluice", components: doc.components }, "sluice");
    const validate = ajv.getSchema("sluice#/components/schemas/TaskInput")!;
    const bodies: [unknown, boolean][] = [
      [{ type: "doc.chunk", payload: { text: "x", n: [1, { a: null }] }, priority: "high" }, true],
      [{ type: "noop", priority: 2, delayMs: 1000, idempotencyKey: "k" }, true],
      [{ type: "Bad Type" }, false],
      [{ type: "noop", priority: 6 }, false],
      [{ type: "noop", extra: 1 }, false],
    ];
    for (const [body, ok] of bodies) {
      expect(validate(body), JSON.stringify(body)).toBe(ok);
      const res = await h.service.app.inject({
        method: "POST",
        url: "/v1/tasks",
        headers: { "content-type": "application/json", authorization: `Bearer ${producer.key}` },
        payload: JSON.stringify(body),
      });
      expect(res.statusCode, JSON.stringify(body)).toBe(ok ? 202 : 400);
    }
    const batch = ajv.getSchema("sluice#/components/schemas/BatchBody")!;
    expect(batch({ tasks: [{ type: "a" }] })).toBe(true);
    expect(batch({ tasks: [] })).toBe(false);
    const legacy = ajv.getSchema("sluice#/components/schemas/LegacyEnqueueBody")!;
    expect(legacy({ task_type: "mistake_analyzer", task_data: {}, priority: 5 })).toBe(true);
  });

  it("turns fastify paths into OpenAPI paths", () => {
    expect(openApiPath("/v1/tasks/:id/events")).toBe("/v1/tasks/{id}/events");
    expect(openApiPath("/v1/tasks::batch")).toBe("/v1/tasks:batch");
  });
});

describe("gateway OpenAPI - /docs", () => {
  it("serves a self-contained page that loads /openapi.json and fetches nothing else", async () => {
    const res = await h.service.app.inject({ url: "/docs" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toMatch(/^text\/html/);
    expect(res.headers["content-security-policy"]).toContain("default-src 'none'");
    expect(res.body).toContain('fetch("/openapi.json"');
    expect(res.body).not.toMatch(/<script[^>]+src=|<link[^>]+href=["']https?:/);
  });
});
