import { setTimeout as sleep } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { RateWindow } from "../../services/dispatcher/limits/rate-window.ts";
import { parseSlotsNotice } from "../../services/dispatcher/limits/slots-notice.ts";
import { LOOKAHEAD_MAX, type ThrottleReason, TypeGate } from "../../services/dispatcher/limits/type-gate.ts";
import { createLogger } from "../../shared/logger.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { applyQueuePatch, DEFAULT_QUEUE_CONFIG, type QueueConfig, QueuePatch } from "../../shared/queues.ts";

// The dispatcher's limit logic on its own: pure functions and the gate's decisions over held messages.
// End-to-end behaviour against real processes is in limits.test.ts, fairness.test.ts, pause-type.test.ts.

const log = createLogger({ service: "test", level: "silent", format: "json" });
const enc = new TextEncoder();

/** A held tasks-stream message as the gate sees it (only data and storedAtMs are read). */
function held(body: Record<string, unknown>, storedAtMs = Date.now()): Delivery {
  return {
    subject: "sluice.tasks.normal.t",
    ackSubject: "$JS.ACK.S.c.1.1.1.0.0",
    data: enc.encode(JSON.stringify({ id: "x", type: "t", enqueuedAt: storedAtMs, ...body })),
    headers: undefined,
    streamSeq: 1,
    deliveryCount: 1,
    pending: 0,
    storedAtMs,
    dispatchedAtMs: undefined,
    ack: () => undefined,
    nak: () => undefined,
    working: () => undefined,
    term: () => undefined,
  };
}

function gate(cfg: Partial<QueueConfig>, scan = new Map<string, number>()) {
  const events: ThrottleReason[] = [];
  let wakes = 0;
  const g = new TypeGate(
    {
      type: "t",
      log,
      wake: () => wakes++,
      scanKeys: async () => new Map(scan),
      onThrottled: (r) => events.push(r),
    },
    { ...DEFAULT_QUEUE_CONFIG, ...cfg },
  );
  return { g, events, wakes: () => wakes };
}

/** Five priorities' held arrays, urgent first. */
const empty = (): Delivery[][] => [[], [], [], [], []];

describe("limits - rate window", () => {
  it("admits at most max in any window, sliding rather than by fixed buckets", () => {
    const w = new RateWindow(5, 1000);
    const admitted: number[] = [];
    for (let t = 0; t < 5000; t += 7) {
      if (w.waitMs(t) === 0) {
        w.take(t);
        admitted.push(t);
      }
    }
    for (const start of admitted) {
      expect(admitted.filter((t) => t >= start && t < start + 1000).length).toBeLessThanOrEqual(5);
    }
    expect(admitted.length).toBeGreaterThanOrEqual(25);
    expect(w.waitMs(admitted.at(-1)!)).toBeGreaterThan(0);
  });

  it("keeps recent dispatches when resized", () => {
    const w = new RateWindow(3, 1000);
    w.take(0);
    w.take(10);
    const bigger = new RateWindow(4, 1000, w.recent(20));
    bigger.take(20);
    bigger.take(30);
    expect(bigger.waitMs(40)).toBe(960);
  });
});

describe("limits - slots notice", () => {
  it("reads the plain count and the JSON form with keys", () => {
    expect(parseSlotsNotice(enc.encode("3"))).toEqual({ n: 3 });
    expect(parseSlotsNotice(enc.encode('{"n":3,"keys":{"a":2,"b":1}}'))).toEqual({
      n: 3,
      keys: { a: 2, b: 1 },
    });
    expect(parseSlotsNotice(enc.encode('{"n":1,"keys":{"a":-1,"b":"x"}}'))).toEqual({ n: 1, keys: {} });
    expect(parseSlotsNotice(enc.encode("nonsense"))).toEqual({ n: 0 });
    expect(parseSlotsNotice(enc.encode("{broken"))).toEqual({ n: 0 });
  });
});

describe("limits - queue config patches", () => {
  it("sets, keeps and removes fields (null removes a limit)", () => {
    const a = applyQueuePatch(DEFAULT_QUEUE_CONFIG, QueuePatch.parse({ concurrency: 3, paused: true }), 1);
    expect(a).toEqual({ paused: true, concurrency: 3, updatedAt: 1 });
    const b = applyQueuePatch(
      a,
      QueuePatch.parse({ concurrency: null, rateLimit: { max: 5, intervalMs: 1000 } }),
      2,
    );
    expect(b).toEqual({ paused: true, rateLimit: { max: 5, intervalMs: 1000 }, updatedAt: 2 });
  });

  it("refuses unknown fields and bad values", () => {
    expect(QueuePatch.safeParse({ concurency: 3 }).success).toBe(false);
    expect(QueuePatch.safeParse({ concurrency: 0 }).success).toBe(false);
    expect(QueuePatch.safeParse({ rateLimit: { max: 5 } }).success).toBe(false);
    expect(QueuePatch.safeParse({ aging: { afterMs: -1 } }).success).toBe(false);
    expect(QueuePatch.safeParse({ maxDepth: 1.5 }).success).toBe(false);
    expect(QueuePatch.safeParse({ backoff: { type: "linear", delayMs: 1 } }).success).toBe(false);
  });
});

describe("limits - type gate", () => {
  it("dispatches nothing while paused and caps in-flight by the global concurrency", () => {
    const { g } = gate({ paused: true, concurrency: 3 });
    const h = empty();
    h[2]!.push(held({}));
    expect(g.pick(h)).toBeUndefined();
    expect(g.limit(10)).toBe(3);
    expect(g.limit(2)).toBe(2);
    g.configure({ ...DEFAULT_QUEUE_CONFIG, updatedAt: 1 });
    expect(g.pick(h)).toEqual([2, 0]);
    expect(g.limit(10)).toBe(10);
  });

  it("strict priority by default; with aging an old low task outranks a fresh urgent one", () => {
    const now = Date.now();
    const h = empty();
    h[0]!.push(held({}, now));
    h[3]!.push(held({}, now - 450));
    expect(gate({}).g.pick(h)).toEqual([0, 0]);
    // 450 ms at 100 ms per level: low (3) counts as urgent (0) and is older than the urgent one
    expect(gate({ aging: { afterMs: 100 } }).g.pick(h)).toEqual([3, 0]);
    // not old enough yet: counts as high, still behind urgent
    expect(gate({ aging: { afterMs: 200 } }).g.pick(h)).toEqual([0, 0]);
  });

  it("holds a key at its limit and picks the next key behind it", async () => {
    const { g, events } = gate({ keyConcurrency: 1 });
    await sleep(10); // the initial scan of running keys
    const h = empty();
    h[2]!.push(held({ concurrencyKey: "a" }), held({ concurrencyKey: "a" }), held({ concurrencyKey: "b" }));
    const take = () => {
      const at = g.pick(h);
      if (at) g.taken(h[at[0]]!.splice(at[1], 1)[0]!);
      return at;
    };
    expect(take()).toEqual([2, 0]); // a
    expect(take()).toEqual([2, 1]); // b, past the blocked a
    expect(take()).toBeUndefined();
    expect(events).toEqual(["key_concurrency"]);
    expect(Object.fromEntries(g.keyCounts())).toEqual({ a: 1, b: 1 });
    g.freed({ n: 1, keys: { a: 1 } });
    expect(take()).toEqual([2, 0]);
    expect(h[2]).toHaveLength(0);
  });

  it("starts from the running keys read from the work stream", async () => {
    const { g } = gate({ keyConcurrency: 2 }, new Map([["a", 2]]));
    const h = empty();
    h[1]!.push(held({ concurrencyKey: "a" }));
    expect(g.pick(h)).toBeUndefined(); // scan not finished: admit nothing by key yet
    await sleep(10);
    expect(g.pick(h)).toBeUndefined(); // a already runs twice elsewhere
    h[1]!.push(held({ concurrencyKey: "c" }));
    expect(g.pick(h)).toEqual([1, 1]);
  });

  it("grows a priority's window while every held message is blocked, up to the bound", async () => {
    const { g } = gate({ keyConcurrency: 1 }, new Map([["a", 1]]));
    await sleep(10);
    const h = empty();
    for (let i = 0; i < 20; i++) h[2]!.push(held({ concurrencyKey: "a" }));
    expect(g.pick(h)).toBeUndefined();
    expect(g.window(2, 8, h[2]!)).toBeGreaterThan(20);
    expect(g.window(1, 8, h[1]!)).toBe(8);
    const many = Array.from({ length: LOOKAHEAD_MAX }, () => held({ concurrencyKey: "a" }));
    expect(g.window(2, 8, many)).toBe(LOOKAHEAD_MAX);
    h[2]!.push(held({ concurrencyKey: "z" }));
    expect(g.window(2, 8, h[2]!)).toBe(8);
  });

  it("stops the type for a handler's retry-after and wakes its dispatcher when it ends", async () => {
    const { g, events, wakes } = gate({});
    const h = empty();
    h[2]!.push(held({}));
    g.throttle(150);
    expect(g.pick(h)).toBeUndefined();
    const before = wakes();
    await sleep(250);
    expect(wakes()).toBeGreaterThan(before);
    expect(g.pick(h)).toEqual([2, 0]);
    expect(events).toEqual(["retry_after"]);
  });

  it("refuses past the rate window and counts one throttle event per episode", () => {
    const { g, events } = gate({ rateLimit: { max: 2, intervalMs: 60_000 } });
    const h = empty();
    for (let i = 0; i < 5; i++) h[2]!.push(held({}));
    for (let i = 0; i < 2; i++) g.taken(h[2]!.shift()!);
    expect(g.pick(h)).toBeUndefined();
    expect(g.pick(h)).toBeUndefined();
    expect(events).toEqual(["rate_limit"]);
    g.close();
  });
});
