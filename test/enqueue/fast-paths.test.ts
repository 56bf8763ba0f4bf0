import Fastify from "fastify";
import { describe, expect, it } from "vitest";
import { parseJsonBody } from "../../services/enqueue/json-body.ts";
import {
  DirectTaskBody,
  directTaskMessageBytes,
  readCommonTaskInput,
  readDirectTaskBody,
  TaskInput,
  type TaskMessage,
} from "../../shared/task.ts";

/**
 * The zod-free readers on the hot paths must never accept what the schemas refuse, and must give
 * the same output when they accept. Values are drawn around every limit; each body goes through both.
 */
const pick = <T>(xs: readonly T[], i: number): T => xs[i % xs.length]!;
const strings = ["", "a", "x".repeat(128), "x".repeat(129), "x".repeat(256), "x".repeat(257), "é", 5, null];
const ints = [0, 1, 2, 5, 6, 100, 101, 86_400_000, 86_400_001, 1.5, -1, "3", null, Number.MAX_SAFE_INTEGER];
const types = ["noop", "a.b", "A", "a..b", "-a", "x".repeat(64), "x".repeat(65), "", 7, "doc.chunk"];
const priorities = ["urgent", "high", "normal", "low", "bulk", "URGENT", 0, 1, 3, 5, 6, 2.5, null, "1"];
const payloads = [{ a: 1 }, [1, "x", null], "s", 0, null, { deep: { er: [true] } }];

function bodies(n: number, make: (i: number) => Record<string, unknown>): Record<string, unknown>[] {
  return Array.from({ length: n }, (_, i) => {
    const b = make(i);
    // drop some fields so absent and present both occur
    for (const k of Object.keys(b)) if ((i * 7 + k.length * 13) % 5 === 0) delete b[k];
    return b;
  });
}

describe("zod-free readers", () => {
  it("readCommonTaskInput agrees with TaskInput", () => {
    const all = bodies(4000, (i) => ({
      type: pick(types, i),
      payload: pick(payloads, i >> 1),
      priority: pick(priorities, i >> 2),
      idempotencyKey: pick(strings, i >> 3),
      timeoutMs: pick(ints, i >> 4),
      maxAttempts: pick(ints, (i >> 5) + 3),
      concurrencyKey: pick(strings, (i >> 6) + 1),
      ...(i % 97 === 0 ? { delayMs: 5 } : {}),
      ...(i % 89 === 0 ? { bogus: 1 } : {}),
    }));
    let accepted = 0;
    for (const b of all) {
      const fast = readCommonTaskInput(b);
      if (fast === undefined) continue;
      accepted++;
      const z = TaskInput.safeParse(b);
      expect(z.success, JSON.stringify(b)).toBe(true);
      expect(fast).toEqual(z.data);
    }
    expect(accepted).toBeGreaterThan(30);
  });

  it("readDirectTaskBody agrees with DirectTaskBody", () => {
    const all = bodies(3000, (i) => ({
      id: pick(strings, i),
      payload: pick(payloads, i >> 1),
      idempotencyKey: pick(strings, i >> 2),
      timeoutMs: pick(ints, i >> 3),
      maxAttempts: pick(ints, (i >> 4) + 2),
      enqueuedAt: pick([...ints, 1.7e12, 1.7e12 + 0.5], i >> 5),
      ...(i % 83 === 0 ? { type: "x" } : {}),
    }));
    let accepted = 0;
    for (const b of all) {
      const fast = readDirectTaskBody(b);
      if (fast === undefined) continue;
      accepted++;
      const z = DirectTaskBody.safeParse(b);
      expect(z.success, JSON.stringify(b)).toBe(true);
      expect(fast).toEqual(z.data);
    }
    expect(accepted).toBeGreaterThan(50);
  });
});

describe("directTaskMessageBytes", () => {
  it("equals, once parsed, the task message built from the parsed body", () => {
    const all = bodies(3000, (i) => ({
      id: pick(strings, i),
      payload: pick([...payloads, 'quo"te\\', "ünï\u2028"], i >> 1),
      idempotencyKey: pick(strings, i >> 2),
      timeoutMs: pick(ints, i >> 3),
      maxAttempts: pick(ints, (i >> 4) + 2),
      enqueuedAt: pick([...ints, 1.7e12], i >> 5),
    }));
    const enc = new TextEncoder();
    let checked = 0;
    for (const [i, b] of all.entries()) {
      // the producer's own formatting is kept: with and without blanks around the braces
      const text = i % 3 === 0 ? ` \n{ ${JSON.stringify(b).slice(1, -1)} }\t` : JSON.stringify(b);
      const body = JSON.parse(text) as Record<string, unknown>;
      const d = readDirectTaskBody(body);
      if (d === undefined) continue;
      checked++;
      const fill = {
        id: d.id ?? `j${i}-x`,
        type: "doc.chunk",
        priority: "high" as const,
        enqueuedAt: 1_700_000_000_000 + i,
      };
      const expected: TaskMessage = {
        id: fill.id,
        type: fill.type,
        priority: fill.priority,
        payload: d.payload ?? null,
        enqueuedAt: d.enqueuedAt ?? fill.enqueuedAt,
      };
      if (d.idempotencyKey !== undefined) expected.idempotencyKey = d.idempotencyKey;
      if (d.timeoutMs !== undefined) expected.timeoutMs = d.timeoutMs;
      if (d.maxAttempts !== undefined) expected.maxAttempts = d.maxAttempts;
      const bytes = directTaskMessageBytes(enc.encode(text), d, fill);
      expect(JSON.parse(new TextDecoder().decode(bytes)), text).toEqual(expected);
    }
    expect(checked).toBeGreaterThan(50);
    // and the empty body: every field filled in
    const empty = directTaskMessageBytes(
      enc.encode(" {  } "),
      {},
      {
        id: "j1-a",
        type: "t",
        priority: "bulk",
        enqueuedAt: 5,
      },
    );
    expect(JSON.parse(new TextDecoder().decode(empty))).toEqual({
      id: "j1-a",
      type: "t",
      priority: "bulk",
      payload: null,
      enqueuedAt: 5,
    });
  });
});

describe("NATS body parser", () => {
  // Keys around the two forbidden ones, plain and with \u escapes (any character of a JSON key may be one).
  const keys = [
    "__proto__",
    "\\u005f_proto__",
    "__pr\\u006Fto__",
    "\\u005F\\u005Fproto\\u005f_",
    "constructor",
    "\\u0063onstructor",
    "construct\\u006fr",
    "prototype",
    "prototyp\\u0065",
    "__proto",
    "proto__",
    "_proto_",
    "__PROTO__",
    "Constructor",
    "constructors",
    "a",
  ];
  const spaces = ["", " ", "\n\t "];
  const leaves = ['"__proto__"', '"constructor"', "null", "1", '"x"', "[]", "{}"];

  /** A JSON text of nested objects and arrays whose keys and values are drawn from the pools by `seed`. */
  function text(seed: number): string {
    let x = seed * 2654435761;
    const next = (n: number) => {
      x = (x * 1103515245 + 12345) >>> 0;
      return (x >>> 8) % n;
    };
    const value = (depth: number): string => {
      const r = next(depth > 3 ? 3 : 6);
      if (r < 3) return pick(leaves, next(leaves.length));
      if (r === 3) return `[${Array.from({ length: next(3) }, () => value(depth + 1)).join(",")}]`;
      const fields = Array.from(
        { length: 1 + next(3) },
        () => `"${pick(keys, next(keys.length))}"${pick(spaces, next(3))}:${value(depth + 1)}`,
      );
      return `{${fields.join(",")}}`;
    };
    const body = `{"type":"noop","payload":${value(0)}}`;
    return next(20) === 0 ? `\ufeff${body}` : body;
  }

  it("refuses exactly the bodies fastify's JSON parser refuses, and parses the rest alike", () => {
    const fastify = Fastify().getDefaultJsonParser("error", "error");
    let refused = 0;
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      const t = text(i);
      // the parser answers synchronously
      const parsed: { http?: { ok: true; value: unknown } | { ok: false } } = {};
      fastify({} as never, t, (err, value) => {
        parsed.http = err ? { ok: false } : { ok: true, value };
      });
      const http = parsed.http!;
      let nats: { ok: true; value: unknown } | { ok: false; code: string };
      try {
        nats = { ok: true, value: parseJsonBody(Buffer.from(t)) };
      } catch (err) {
        nats = { ok: false, code: (err as { code: string }).code };
      }
      expect(nats.ok, t).toBe(http.ok);
      if (nats.ok && http.ok) {
        expect(nats.value, t).toEqual(http.value);
        accepted++;
      } else {
        expect(nats, t).toEqual({ ok: false, code: "invalid_json" });
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(500);
    expect(accepted).toBeGreaterThan(500);
  });
});
