import { createHmac } from "node:crypto";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../services/enqueue/config.ts";
import { freePort } from "../../shared/nats/local-server.ts";
import type { TaskMessage } from "../../shared/task.ts";
import { type Harness, startHarness } from "../enqueue/harness.ts";
import { stateOf, testKey } from "./support.ts";

const SECRET = "whsec-0123456789abcdef";
const producer = testKey("appwrite", ["enqueue"]);
let h: Harness;
let hookUrl: string;

beforeAll(async () => {
  // the webhook URL is part of what Appwrite signs, so the port is chosen before the gateway starts
  const port = await freePort();
  hookUrl = `http://127.0.0.1:${port}/v1/appwrite/webhooks/mistakes`;
  h = await startHarness({
    HTTP_PORT: String(port),
    AUTH_ENABLED: "true",
    SLUICE_API_KEYS: producer.entry,
    MAX_PAYLOAD_BYTES: "65536",
    APPWRITE_WEBHOOKS: JSON.stringify({
      mistakes: {
        secret: SECRET,
        url: hookUrl,
        rules: [
          {
            events: "databases.*.collections.mistakes.documents.*.create",
            type: "mistake.analyze",
            priority: "high",
          },
          {
            events: ["databases.*.collections.mistakes.documents.*.create", "storage.*"],
            type: "mistake.audit",
          },
        ],
      },
      percent: {
        secret: SECRET,
        url: "https://example.com/hooks/a%20b",
        rules: [{ events: "users.*.create", type: "user.welcome" }],
      },
    }),
  });
});
afterAll(async () => {
  await h?.cleanup();
});

/** A document body as Appwrite's PHP serialises it: `/` escaped as `\/`. */
const rawDoc =
  '{"$id":"65f1c0ffee","$collectionId":"mistakes","$databaseId":"main","$createdAt":"2024-03-13T10:00:00.000+00:00",' +
  '"$updatedAt":"2024-03-13T10:00:00.000+00:00","$permissions":["read(\\"user:u1\\")"],"userId":"u1",' +
  '"originalImageId":"img1","imageUrl":"https:\\/\\/cloud.appwrite.io\\/v1\\/storage\\/buckets\\/b\\/files\\/img1\\/view"}';
const events = [
  "databases.main.collections.mistakes.documents.65f1c0ffee.create",
  "databases.main.collections.mistakes.documents.*.create",
  "databases.*.collections.*.documents.*.create",
  "databases.*.collections.*.documents.*",
  "databases.*",
].join(",");

function sign(url: string, body: string): string {
  return createHmac("sha1", SECRET)
    .update(url + body)
    .digest("base64");
}

function deliver(
  body: string,
  signature: string | undefined,
  name = "mistakes",
  extra: Record<string, string> = {},
) {
  return fetch(`${h.url}/v1/appwrite/webhooks/${name}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "user-agent": "Appwrite-Server v1.5.7",
      "x-appwrite-webhook-id": "wh1",
      "x-appwrite-webhook-name": "mistakes",
      "x-appwrite-webhook-project-id": "proj1",
      "x-appwrite-webhook-user-id": "",
      "x-appwrite-webhook-events": events,
      ...(signature === undefined ? {} : { "x-appwrite-webhook-signature": signature }),
      ...extra,
    },
    body,
  });
}

describe("appwrite webhooks - POST /v1/appwrite/webhooks/:name", () => {
  it("verifies the signature, enqueues one task per matching rule and answers 202 within milliseconds", async () => {
    const t0 = performance.now();
    const res = await deliver(rawDoc, sign(hookUrl, rawDoc));
    const took = performance.now() - t0;
    expect(res.status).toBe(202);
    const { tasks } = (await res.json()) as { tasks: { id: string; type: string; status: string }[] };
    expect(tasks.map((t) => [t.type, t.status])).toEqual([
      ["mistake.analyze", "queued"],
      ["mistake.audit", "queued"],
    ]);
    expect(took).toBeLessThan(1000);
    const stored = (await h.lastTask("sluice.tasks.high.mistake.analyze"))!.msg as TaskMessage;
    expect(stored.id).toBe(tasks[0]!.id);
    expect(stored.payload).toEqual({
      source: "appwrite",
      event: "databases.main.collections.mistakes.documents.65f1c0ffee.create",
      events: events.split(","),
      webhook: { id: "wh1", name: "mistakes", projectId: "proj1", userId: null },
      body: JSON.parse(rawDoc),
    });
    expect(stored.idempotencyKey).toMatch(/^appwrite:/);
    expect((await stateOf(h, tasks[1]!.id)).state.priority).toBe("normal");
  });

  it("does not run a repeated delivery twice", async () => {
    const body = rawDoc.replace("65f1c0ffee", "65f1dup");
    const first = (await (await deliver(body, sign(hookUrl, body))).json()) as { tasks: { id: string }[] };
    const count = await h.tasksCount();
    const again = await deliver(body, sign(hookUrl, body));
    expect(again.status).toBe(202);
    const second = (await again.json()) as { tasks: { id: string; duplicate?: boolean }[] };
    expect(second.tasks.map((t) => t.id)).toEqual(first.tasks.map((t) => t.id));
    expect(second.tasks.every((t) => t.duplicate === true)).toBe(true);
    expect(await h.tasksCount()).toBe(count);
  });

  it("rejects a bad or missing signature with 401, enqueueing nothing", async () => {
    const count = await h.tasksCount();
    const bad = await deliver(rawDoc, sign(hookUrl, `${rawDoc} `));
    expect(bad.status).toBe(401);
    expect(((await bad.json()) as { code: string }).code).toBe("invalid_signature");
    const wrongSecret = createHmac("sha1", "another-secret")
      .update(hookUrl + rawDoc)
      .digest("base64");
    expect((await deliver(rawDoc, wrongSecret)).status).toBe(401);
    const missing = await deliver(rawDoc, undefined);
    expect(missing.status).toBe(401);
    expect(((await missing.json()) as { detail: string }).detail).toMatch(/missing/);
    expect(await h.tasksCount()).toBe(count);
  });

  it("rejects a body re-serialised after signing (PHP's \\/ escapes lost)", async () => {
    const reserialised = JSON.stringify(JSON.parse(rawDoc));
    expect(reserialised).not.toBe(rawDoc);
    const res = await deliver(reserialised, sign(hookUrl, rawDoc));
    expect(res.status).toBe(401);
  });

  it("accepts the signature older Appwrite servers made over the %-decoded URL", async () => {
    const body = '{"$id":"u1","name":"Ann"}';
    const decodedUrl = "https://example.com/hooks/a b";
    const res = await deliver(body, sign(decodedUrl, body), "percent", {
      "x-appwrite-webhook-events": "users.u1.create",
    });
    expect(res.status).toBe(202);
    const ok = await deliver(body, sign("https://example.com/hooks/a%20b", body), "percent", {
      "x-appwrite-webhook-events": "users.u1.create",
    });
    expect(ok.status).toBe(202);
  });

  it("answers 200 with no tasks when no rule matches, 404 for an unknown webhook, 400 for a signed non-JSON body", async () => {
    const body = '{"$id":"x"}';
    const none = await deliver(body, sign(hookUrl, body), "mistakes", {
      "x-appwrite-webhook-events": "users.x.update",
    });
    expect(none.status).toBe(200);
    expect(((await none.json()) as { tasks: unknown[] }).tasks).toEqual([]);
    expect((await deliver(body, sign(hookUrl, body), "nope")).status).toBe(404);
    const text = "not json";
    expect((await deliver(text, sign(hookUrl, text))).status).toBe(400);
  });
  it("refuses a signed body with a __proto__ or constructor.prototype key, or not UTF-8, as 400 invalid_json, storing nothing", async () => {
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    for (const body of [
      '{"$id":"p1","__proto__":{"admin":true}}',
      '{"$id":"p2","\\u005f_proto__":{"admin":true}}',
      '{"$id":"p3","data":[{"constructor":{"prototype":{"admin":true}}}]}',
    ]) {
      const res = await deliver(body, sign(hookUrl, body));
      expect(res.status, body).toBe(400);
      expect(res.headers.get("content-type")).toMatch(/^application\/problem\+json/);
      expect(((await res.json()) as { code: string }).code, body).toBe("invalid_json");
    }
    // invalid UTF-8 inside a string: refused, not stored with U+FFFD in its place
    const bytes = Buffer.concat([
      Buffer.from('{"$id":"p4","name":"'),
      Buffer.from([0xff]),
      Buffer.from('"}'),
    ]);
    const signature = createHmac("sha1", SECRET).update(hookUrl).update(bytes).digest("base64");
    const notUtf8 = await fetch(`${h.url}/v1/appwrite/webhooks/mistakes`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-appwrite-webhook-events": events,
        "x-appwrite-webhook-signature": signature,
      },
      body: bytes,
    });
    expect(notUtf8.status).toBe(400);
    expect(((await notUtf8.json()) as { code: string }).code).toBe("invalid_json");
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
    // a plain `constructor` field is data, as fastify's parser has it
    const plain = '{"$id":"p5","constructor":"Ann"}';
    expect((await deliver(plain, sign(hookUrl, plain))).status).toBe(202);
  });
});

describe("appwrite webhooks - configuration", () => {
  it.each([
    ["not JSON", "{"],
    [
      "a short secret",
      JSON.stringify({ a: { secret: "short", url: "https://x", rules: [{ events: "a.*", type: "t" }] } }),
    ],
    ["no rules", JSON.stringify({ a: { secret: SECRET, url: "https://x", rules: [] } })],
    [
      "a bad pattern",
      JSON.stringify({ a: { secret: SECRET, url: "https://x", rules: [{ events: "a..b", type: "t" }] } }),
    ],
    [
      "a bad type",
      JSON.stringify({ a: { secret: SECRET, url: "https://x", rules: [{ events: "a.*", type: "T T" }] } }),
    ],
  ])("refuses %s, without echoing the secret", (_what, json) => {
    expect(() => loadConfig({ APPWRITE_WEBHOOKS: json })).toThrow(/APPWRITE_WEBHOOKS/);
    try {
      loadConfig({ APPWRITE_WEBHOOKS: json });
    } catch (e) {
      expect((e as Error).message).not.toContain(SECRET);
    }
  });
});

describe("appwrite function template - deploy/appwrite/sluice-forward", () => {
  type Ctx = {
    req: Record<string, unknown>;
    res: { json(body: unknown, status?: number): { body: unknown; statusCode: number } };
    log(msg: string): void;
    error(msg: string): void;
  };
  const file = fileURLToPath(new URL("../../deploy/appwrite/sluice-forward/src/main.js", import.meta.url));

  /** Appwrite's function context for an event execution (Node runtime), as open-runtimes builds it. */
  function context(
    bodyText: string,
    headers: Record<string, string>,
  ): Ctx & { logs: string[]; errors: string[] } {
    const logs: string[] = [];
    const errors: string[] = [];
    return {
      logs,
      errors,
      req: {
        method: "POST",
        scheme: "http",
        host: "localhost",
        port: 3000,
        path: "/",
        query: {},
        queryString: "",
        url: "http://localhost:3000/",
        headers,
        bodyText,
        bodyRaw: bodyText,
        body: bodyText,
        get bodyJson() {
          return JSON.parse(bodyText);
        },
      },
      res: { json: (body, statusCode = 200) => ({ body, statusCode }) },
      log: (m) => logs.push(m),
      error: (m) => errors.push(m),
    };
  }

  async function run(env: Record<string, string>, ctx: Ctx): Promise<{ body: unknown; statusCode: number }> {
    const saved = { ...process.env };
    Object.assign(process.env, env);
    try {
      const mod = (await import(pathToFileURL(file).href)) as {
        default: (c: Ctx) => Promise<{ body: unknown; statusCode: number }>;
      };
      return await mod.default(ctx);
    } finally {
      for (const k of Object.keys(env)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  }

  const eventHeaders = (executionId: string) => ({
    "x-appwrite-trigger": "event",
    "x-appwrite-event": "databases.main.collections.mistakes.documents.65f2.create",
    "x-appwrite-user-id": "u1",
    "x-appwrite-execution-id": executionId,
    "content-type": "application/json",
  });

  it("forwards an event execution with the bearer key and the execution id as idempotency key, returning 202", async () => {
    const env = {
      SLUICE_URL: h.url,
      SLUICE_API_KEY: producer.key,
      SLUICE_TASK_TYPE: "mistake.analyze",
      SLUICE_PRIORITY: "high",
    };
    const ctx = context(rawDoc, eventHeaders("exec-1"));
    const out = await run(env, ctx);
    expect(out.statusCode).toBe(202);
    const { taskId } = out.body as { taskId: string };
    const stored = (await h.lastTask("sluice.tasks.high.mistake.analyze"))!.msg;
    expect(stored).toMatchObject({ id: taskId, idempotencyKey: "appwrite-execution:exec-1" });
    expect(stored.payload).toMatchObject({
      event: "databases.main.collections.mistakes.documents.65f2.create",
      userId: "u1",
      body: JSON.parse(rawDoc),
    });
    // Appwrite running the same execution again: one task
    const again = await run(env, context(rawDoc, eventHeaders("exec-1")));
    expect(again.body).toMatchObject({ taskId, duplicate: true });
    expect(ctx.errors).toEqual([]);
  });

  it("maps events with rules, and fails the execution when the key is wrong or the gateway is away", async () => {
    const rules = JSON.stringify([
      {
        events: "databases.*.collections.mistakes.documents.*.create",
        type: "mistake.rule",
        priority: "urgent",
      },
    ]);
    const ok = await run(
      { SLUICE_URL: h.url, SLUICE_API_KEY: producer.key, SLUICE_RULES: rules },
      context(rawDoc, eventHeaders("exec-2")),
    );
    expect(ok.statusCode).toBe(202);
    expect((await h.lastTask("sluice.tasks.urgent.mistake.rule"))?.msg.id).toBe(
      (ok.body as { taskId: string }).taskId,
    );

    const other = context("{}", { ...eventHeaders("exec-3"), "x-appwrite-event": "users.u1.create" });
    expect((await run({ SLUICE_URL: h.url, SLUICE_RULES: rules }, other)).body).toMatchObject({
      ignored: true,
    });

    const denied = context(rawDoc, eventHeaders("exec-4"));
    const r401 = await run(
      { SLUICE_URL: h.url, SLUICE_API_KEY: "sk_wrong", SLUICE_TASK_TYPE: "x.y" },
      denied,
    );
    expect(r401.statusCode).toBe(401);
    expect(denied.errors.join()).toMatch(/unauthorized/);

    const away = context(rawDoc, eventHeaders("exec-5"));
    const t0 = Date.now();
    const r502 = await run(
      { SLUICE_URL: "http://127.0.0.1:9", SLUICE_TASK_TYPE: "x.y", SLUICE_TIMEOUT_MS: "500" },
      away,
    );
    expect(r502.statusCode).toBe(502);
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(away.errors.join()).toMatch(/unreachable/);
  });
});
