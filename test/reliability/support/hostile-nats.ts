import type { JetStreamClient } from "@nats-io/jetstream";
import { type NatsConnection, headers as natsHeaders } from "@nats-io/transport-node";
import type { Names } from "../../../shared/names.ts";
import { PRIORITIES } from "../../../shared/priority.ts";
import { BODY_CATEGORIES, hostileBody } from "./hostile-bodies.ts";
import type { Rng } from "./rng.ts";

/**
 * Hostile NATS messages: requests to the gateway's request/reply APIs (`<prefix>.enqueue` and the
 * control subjects), which must answer `{error: {status: 4xx}}` and store nothing, and garbage
 * published straight to a type's priority subject, which lands in the tasks stream by design and must
 * be terminated by the dispatcher.
 */

/** One NATS case. */
export type NatsCase = {
  kind: "request" | "publish";
  category: string;
  variant: string;
  subject: string;
  data: Uint8Array;
  headers?: Record<string, string>;
  /** The one answer this case may get, where a 4xx is not precise enough. */
  expect?: { status: number; code: string };
};

/**
 * What came back: the reply's status (200 for a reply without `error`) and error code, or the
 * publish stored.
 */
export type NatsOutcome = { status?: number; code?: string; stored?: boolean; failed?: string; ms: number };

/**
 * Bodies with a `__proto__` key or a `constructor.prototype`, anywhere: valid JSON, refused by every
 * NATS API as by HTTP (services/enqueue/json-body.ts) before anything else is looked at, so the answer
 * is exactly 400 `invalid_json` and nothing is written.
 */
const PROTO_VARIANTS = new Set(["proto-key", "nested-proto", "constructor-prototype"]);
const PROTO_REFUSAL = { status: 400, code: "invalid_json" };

const enc = (s: string) => new TextEncoder().encode(s);
const deep = (d: number) => `${"[".repeat(d)}${"]".repeat(d)}`;

/** A request to `<prefix>.enqueue` (most) or another API subject, with a body that must be refused. */
export function natsRequestCase(
  rng: Rng,
  names: Names,
  l: { type: string; maxPayloadBytes: number },
): NatsCase {
  if (rng.chance(0.8)) {
    const b = hostileBody(rng, rng.pick(BODY_CATEGORIES), l);
    const c: NatsCase = {
      kind: "request",
      category: `enqueue:${b.category}`,
      variant: b.variant,
      subject: names.enqueueSubject,
      data: b.data,
    };
    if (PROTO_VARIANTS.has(b.variant)) c.expect = PROTO_REFUSAL;
    return c;
  }
  if (rng.chance(0.1)) {
    // the same keys on the other APIs that parse a body
    const [resource, action, body] = rng.pick<[string, string, string]>([
      ["queues", "patch", `{"type":"${l.type}","__proto__":{"maxDepth":1}}`],
      ["queues", "pause", `{"type":"${l.type}","constructor":{"prototype":{"paused":true}}}`],
      ["tasks", "cancel", '{"id":"x","\\u005f_proto__":{}}'],
      ["tasks", "batch", `{"tasks":[{"type":"${l.type}","payload":{"a":[{"__proto__":{"x":1}}]}}]}`],
      ["dlq", "replay", '{"ids":["x"],"__proto__":{"all":true}}'],
      [
        "schedules",
        "create",
        `{"name":"p","every":"1m","task":{"type":"${l.type}","payload":{"constructor":{"prototype":{}}}}}`,
      ],
    ]);
    return {
      kind: "request",
      category: "api",
      variant: `${resource}.${action}:proto`,
      subject: names.apiSubject(resource, action),
      data: enc(body),
      expect: PROTO_REFUSAL,
    };
  }
  const api: [string, string, string[]][] = [
    [
      "queues",
      "patch",
      [`{"type":"${l.type}","maxDepth":-1}`, `{"type":"A"}`, `{"type":"${l.type}","nope":1}`, "x"],
    ],
    ["queues", "pause", ['{"type":"A B"}', "{}", "[]", '{"type":5}']],
    [
      "tasks",
      "cancel",
      ['{"id":"a b"}', '{"id":"*"}', '{"id":""}', "{}", '{"id":"00000000-0000-4000-8000-000000000000"}'],
    ],
    ["tasks", "resume", ['{"id":">"}', '{"id":5}', "nope"]],
    ["tasks", "get", ['{"id":"a..b"}', "{}", '{"id":[]}']],
    ["dlq", "replay", ['{"ids":["a b"]}', "{}", '{"ids":[]}', '{"type":"**"}']],
    ["dlq", "get", ['{"id":"%"}', "[]"]],
    ["schedules", "create", ['{"name":"x"}', "{}", `{"name":"n","every":"0s","task":{"type":"${l.type}"}}`]],
    ["queues", "patch", [`{"type":"${l.type}","rateLimit":${deep(rng.int(300, 30_000))}}`]],
    [
      "tasks",
      "batch",
      [`{"tasks":[{"type":"${l.type}","payload":${deep(rng.int(300, 30_000))}}]}`, '{"tasks":5}'],
    ],
  ];
  const [resource, action, bodies] = rng.pick(api);
  return {
    kind: "request",
    category: "api",
    variant: `${resource}.${action}`,
    subject: names.apiSubject(resource, action),
    data: enc(rng.pick(bodies)),
  };
}

/** Garbage published straight to `<prefix>.tasks.<priority>.<type>`: nothing a dispatcher may dispatch. */
export function directCase(rng: Rng, names: Names, type: string): NatsCase {
  const subject = names.tasksSubject(rng.pick(PRIORITIES), type);
  const bodies: [string, () => Uint8Array][] = [
    ["not-json", () => enc(rng.pick(["hello", "{", "{'id':1}", "", " ", "\u0000"]))],
    ["binary", () => new Uint8Array(Array.from({ length: rng.int(1, 200) }, () => rng.int(0, 255)))],
    ["not-an-object", () => enc(rng.pick(["[]", '"x"', "42", "null", "true", '[{"payload":1}]']))],
    [
      "unknown-field",
      () => enc(rng.pick(['{"unknown":1}', '{"payload":1,"type":"x"}', '{"priority":"urgent"}'])),
    ],
    [
      "wrong-type",
      () =>
        enc(
          rng.pick([
            '{"id":5}',
            '{"id":""}',
            `{"id":"${"x".repeat(129)}"}`,
            '{"timeoutMs":"x"}',
            '{"timeoutMs":0}',
            '{"maxAttempts":0}',
            '{"enqueuedAt":"now"}',
            '{"idempotencyKey":""}',
          ]),
        ),
    ],
    ["deep-payload", () => enc(`{"payload":${deep(rng.int(2_000, 50_000))}}`)],
    [
      "invalid-utf8",
      () => new Uint8Array([...enc('{"payload":"'), rng.pick([0xff, 0x80, 0xc3]), ...enc('"}')]),
    ],
    [
      "id-not-a-key",
      () => enc(`{"id":${JSON.stringify(rng.pick(["a b", "*", ">", "a..b", ".x", "x.", "a\tb"]))}}`),
    ],
    [
      "gateway-shape-bad-id",
      () =>
        enc(`{"id":${JSON.stringify(rng.pick(["a b", "*", ">", "a..b"]))},"type":"${type}","enqueuedAt":1}`),
    ],
  ];
  const [variant, build] = rng.pick(bodies);
  const c: NatsCase = { kind: "publish", category: "direct", variant, subject, data: build() };
  if (rng.chance(0.2)) c.headers = { traceparent: rng.pick(["garbage", "00-zz-zz-01", "x".repeat(500)]) };
  return c;
}

/** Send one case: a request (reply parsed) or an acknowledged JetStream publish. */
export async function sendNats(nc: NatsConnection, js: JetStreamClient, c: NatsCase): Promise<NatsOutcome> {
  const t0 = Date.now();
  try {
    if (c.kind === "publish") {
      let h: ReturnType<typeof natsHeaders> | undefined;
      if (c.headers) {
        h = natsHeaders();
        for (const [k, v] of Object.entries(c.headers)) h.set(k, v);
      }
      await js.publish(c.subject, c.data, { headers: h, timeout: 10_000 });
      return { stored: true, ms: Date.now() - t0 };
    }
    const m = await nc.request(c.subject, c.data, { timeout: 10_000 });
    const reply = JSON.parse(new TextDecoder().decode(m.data)) as {
      error?: { status?: number; code?: string };
    };
    return {
      status: reply.error ? Number(reply.error.status) : 200,
      code: reply.error?.code,
      ms: Date.now() - t0,
    };
  } catch (err) {
    return { failed: String(err).slice(0, 200), ms: Date.now() - t0 };
  }
}
