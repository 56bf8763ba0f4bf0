import type { Rng } from "./rng.ts";

/**
 * Generators of hostile enqueue bodies, shared by the HTTP and the NATS request cases. Every body is
 * invalid by construction — broken JSON, or JSON that breaks the enqueue contract — so any answer but
 * a 4xx (above all a 202: something was stored) is a defect.
 */

/** Kinds of hostile bodies. */
export const BODY_CATEGORIES = [
  "bad-json",
  "deep-nesting",
  "huge",
  "wrong-types",
  "unknown-fields",
  "invalid-utf8",
] as const;
export type BodyCategory = (typeof BODY_CATEGORIES)[number];

/** One generated body. */
export type HostileBody = {
  category: BodyCategory;
  /** Which generator, for the report. */
  variant: string;
  data: Buffer;
};

/** A body that would be accepted: every generator breaks it one way. */
export function validBody(type: string, n = 1): Record<string, unknown> {
  return { type, payload: { n, ms: 1 } };
}

const json = (v: unknown) => Buffer.from(JSON.stringify(v));

/** Invalid UTF-8: a stray byte, overlong and surrogate encodings, a truncated sequence. */
const BAD_UTF8: readonly number[][] = [
  [0xff],
  [0xfe, 0xfe],
  [0x80],
  [0xc0, 0xaf],
  [0xe0, 0x80, 0x80],
  [0xed, 0xa0, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xe2, 0x82],
  [0xc3],
];

/** Values of the wrong type or out of range, per field of the enqueue body. */
const WRONG: Record<string, readonly unknown[]> = {
  type: [42, true, null, [], {}, "", "UPPER.case", "a..b", "*", ">", "a b", "x".repeat(65), ".a", "a."],
  priority: ["asap", 0, 6, 2.5, -1, "1", [], {}, null, true],
  timeoutMs: ["100", -1, 0, 1.5, 1e12, null, [], {}],
  maxAttempts: [0, 101, "3", 2.5, null, -4],
  delayMs: [-1, "10", 1e15, 2.5, null],
  runAt: ["yesterday", "2024-13-45T00:00:00Z", -1, 0, {}, true, "2024-01-01"],
  idempotencyKey: ["", 5, [], {}, null, "k".repeat(257)],
  concurrencyKey: ["", 5, {}, null, "c".repeat(129)],
  backoff: [
    "exponential",
    {},
    { type: "linear", delayMs: 1 },
    { type: "fixed", delayMs: -1 },
    { type: "fixed", delayMs: 1, extra: 1 },
    { type: "fixed", delayMs: 1, jitter: 2 },
  ],
};

/** Names a careless client might send, none of which the contract knows. */
const UNKNOWN_KEYS = ["id", "status", "attempts", "Type", "delay", "queue", "priority_", "data", "callback"];

/** One hostile body of `category`; `maxPayloadBytes` is the gateway's payload limit. */
export function hostileBody(
  rng: Rng,
  category: BodyCategory,
  o: { type: string; maxPayloadBytes: number },
): HostileBody {
  const base = validBody(o.type, rng.int(0, 1_000_000));
  const make = (variant: string, data: Buffer): HostileBody => ({ category, variant, data });
  switch (category) {
    case "bad-json": {
      const text = JSON.stringify({ ...base, priority: "normal" });
      const v = rng.int(0, 6);
      if (v === 0) return make("truncated", Buffer.from(text.slice(0, rng.int(0, text.length - 1))));
      if (v === 1) return make("printable-garbage", Buffer.from(garbageText(rng, rng.int(1, 300))));
      if (v === 2)
        return make("binary", Buffer.from(Array.from({ length: rng.int(1, 300) }, () => rng.int(0, 255))));
      if (v === 3) {
        const bad = [
          `{'type':'${o.type}'}`,
          `{"type":"${o.type}",}`,
          `{type:"${o.type}"}`,
          `{"type":"${o.type}","payload":NaN}`,
          `{"type":"${o.type}" /* c */}`,
          `{"type" "${o.type}"}`,
          `${text}{}`,
          `${text} x`,
          `{"type":"${o.type}","payload":{"n":01}}`,
          `{"type":"${o.type}","payload":"\u0001"}`,
          " \n\t ",
        ];
        return make("syntax", Buffer.from(rng.pick(bad)));
      }
      if (v === 4) return make("proto-key", Buffer.from(`{"type":"${o.type}","__proto__":{"admin":true}}`));
      if (v === 5)
        return make(
          "nested-proto",
          Buffer.from(`{"type":"${o.type}","payload":{"a":{"__proto__":{"x":1}}}}`),
        );
      return make(
        "constructor-prototype",
        Buffer.from(`{"type":"${o.type}","constructor":{"prototype":{}}}`),
      );
    }
    case "deep-nesting": {
      const depth = rng.chance(0.15) ? rng.int(20_000, 100_000) : rng.int(257, 3_000);
      const v = rng.int(0, 3);
      if (v === 0) return make("payload-arrays", wrap(o.type, `${"[".repeat(depth)}${"]".repeat(depth)}`));
      if (v === 1)
        return make(
          "payload-objects",
          wrap(o.type, `${'{"a":'.repeat(Math.min(depth, 20_000))}1${"}".repeat(Math.min(depth, 20_000))}`),
        );
      if (v === 2) return make("top-level", Buffer.from(`${"[".repeat(depth)}${"]".repeat(depth)}`));
      return make(
        "unknown-field",
        Buffer.from(`{"type":"${o.type}","deep":${"[".repeat(depth)}${"]".repeat(depth)}}`),
      );
    }
    case "huge": {
      const v = rng.int(0, 4);
      if (v === 0)
        return make(
          "payload-over-limit",
          json({ ...base, payload: "x".repeat(rng.int(o.maxPayloadBytes + 1, o.maxPayloadBytes * 2)) }),
        );
      if (v === 1) return make("long-type", json({ ...base, type: "a".repeat(rng.int(65, 60_000)) }));
      if (v === 2) {
        const keys = Object.fromEntries(Array.from({ length: rng.int(500, 5_000) }, (_, i) => [`k${i}`, i]));
        return make("many-unknown-keys", json({ ...base, ...keys }));
      }
      if (v === 3)
        return make(
          "long-idempotency-key",
          json({ ...base, idempotencyKey: "i".repeat(rng.int(257, 50_000)) }),
        );
      return make("huge-number", Buffer.from(`{"type":"${o.type}","timeoutMs":1e400}`));
    }
    case "wrong-types": {
      if (rng.chance(0.08)) return make("root", json(rng.pick([[], "text", 42, null, true, [base]])));
      const field = rng.pick(Object.keys(WRONG));
      return make(field, json({ ...base, [field]: rng.pick(WRONG[field]!) }));
    }
    case "unknown-fields": {
      const body: Record<string, unknown> = { ...base };
      for (let k = rng.int(1, 4); k > 0; k--) {
        const key = rng.chance(0.5) ? rng.pick(UNKNOWN_KEYS) : `x_${garbageKey(rng)}`;
        body[key] = rng.pick([1, "v", null, [], { a: 1 }, true]);
      }
      return make("extra-keys", json(body));
    }
    case "invalid-utf8": {
      const bad = Buffer.from(rng.pick(BAD_UTF8));
      const where = rng.pick([
        "payload-string",
        "idempotency-key",
        "concurrency-key",
        "type",
        "key",
      ] as const);
      const [pre, post] =
        where === "payload-string"
          ? [`{"type":"${o.type}","payload":{"n":1,"ms":1,"s":"ok`, `"}}`]
          : where === "idempotency-key"
            ? [`{"type":"${o.type}","idempotencyKey":"key-`, `"}`]
            : where === "concurrency-key"
              ? [`{"type":"${o.type}","concurrencyKey":"tenant-`, `"}`]
              : where === "type"
                ? [`{"type":"test.rel`, `iable"}`]
                : [`{"type":"${o.type}","`, `":1}`];
      return make(where, Buffer.concat([Buffer.from(pre), bad, Buffer.from(post)]));
    }
  }
}

function wrap(type: string, payloadText: string): Buffer {
  return Buffer.from(`{"type":"${type}","payload":${payloadText}}`);
}

/** Random text from JSON's own punctuation and a few letters: near-JSON that is not a valid task. */
function garbageText(rng: Rng, len: number): string {
  const alphabet = '{}[]":,.-+eE0123456789 truefalsnul\\/\n\t';
  let s = "";
  for (let i = 0; i < len; i++) s += alphabet[rng.int(0, alphabet.length - 1)];
  // a valid object naming a type could be a real task; the odds are nil, but make them zero
  return s.trimStart().startsWith("{") ? `]${s}` : s;
}

function garbageKey(rng: Rng): string {
  return Math.floor(rng.next() * 36 ** 6).toString(36);
}
