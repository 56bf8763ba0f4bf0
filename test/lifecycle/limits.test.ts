import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServiceProcess, spawnService, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";
import { call, enqueueSpans, maxOverlap, patchQueue, spans, waitForEnded } from "./limits-helpers.ts";

const TYPES = ["concurrency", "rate", "patch", "throttle"].map((t) => `test.span.${t}`).join(",");

describe("lifecycle - queue limits", () => {
  let stack: Stack;
  let nc: NatsConnection;
  let dispatcher: ServiceProcess;
  beforeAll(async () => {
    stack = await startStack();
    dispatcher = await stack.dispatcher();
    // two worker processes serving the same types: limits are global, not per process
    await Promise.all([stack.worker({ WORKER_TYPES: TYPES }), stack.worker({ WORKER_TYPES: TYPES })]);
    nc = await connect({ servers: stack.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await stack?.cleanup();
  });

  it("never runs more than the global concurrency at once across two workers", async () => {
    const type = "test.span.concurrency"; // 4 slots per worker: 8 without the limit
    await patchQueue(stack, type, { concurrency: 3 }, dispatcher);
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 24 }, (_, i) => ({ tag: `conc-${i}`, ms: 150 })),
      8,
    );
    const ran = await waitForEnded(stack, "conc-", 24, 20_000);
    expect(maxOverlap(ran)).toBe(3);
    expect(new Set(ran.map((s) => s.pid)).size).toBe(2);
  });

  it("respects a rate limit of 5 per second over a 3-second window", async () => {
    const type = "test.span.rate";
    await patchQueue(stack, type, { rateLimit: { max: 5, intervalMs: 1000 } }, dispatcher);
    const ids = await enqueueSpans(
      stack,
      type,
      Array.from({ length: 20 }, (_, i) => ({ tag: `rate-${i}`, ms: 5 })),
      10,
    );
    const ran = await waitForEnded(stack, "rate-", 20, 10_000);
    const starts = ran.map((s) => s.start).sort((a, b) => a - b);
    // start times carry the worker's pull latency on top of the dispatch time: allow a little
    for (let i = 0; i + 5 < starts.length; i++) expect(starts[i + 5]! - starts[i]!).toBeGreaterThan(900);
    expect(starts.at(-1)! - starts[0]!).toBeGreaterThanOrEqual(2900);
    expect(starts.at(-1)! - starts[0]!).toBeLessThan(4000);
    // the dispatch times themselves, stamped by the dispatcher just after its window check, obey it
    const dispatched = (await Promise.all(ids.map((id) => stack.get(id))))
      .map((s) => s?.dispatchedAt)
      .filter((t): t is number => t !== undefined)
      .sort((a, b) => a - b);
    expect(dispatched).toHaveLength(20);
    for (let i = 0; i + 5 < dispatched.length; i++)
      expect(dispatched[i + 5]! - dispatched[i]!).toBeGreaterThanOrEqual(990);
  });

  it("applies a PATCH within a second: lifting a rate limit releases the waiting tasks", async () => {
    const type = "test.span.patch";
    await patchQueue(stack, type, { rateLimit: { max: 1, intervalMs: 60_000 } }, dispatcher);
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 4 }, (_, i) => ({ tag: `patch-${i}`, ms: 5 })),
    );
    await waitForEnded(stack, "patch-", 1, 5000);
    await sleep(700);
    expect(spans(stack, "patch-")).toHaveLength(1);
    const at = Date.now();
    await patchQueue(stack, type, { rateLimit: null });
    const ran = await waitForEnded(stack, "patch-", 4, 5000);
    const late = ran.slice(1).map((s) => s.start - at);
    expect(Math.max(...late)).toBeLessThan(1000);
  });

  it("holds a type for a handler's retry-after notice", async () => {
    const type = "test.span.throttle";
    const at = Date.now();
    nc.publish(`sluice.throttle.${type}`, JSON.stringify({ retryAfterMs: 1500 }));
    await nc.flush();
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 3 }, (_, i) => ({ tag: `thr-${i}`, ms: 5 })),
    );
    const ran = await waitForEnded(stack, "thr-", 3, 6000);
    for (const s of ran) expect(s.start - at).toBeGreaterThanOrEqual(1450);
    expect(Math.max(...ran.map((s) => s.start - at))).toBeLessThan(3000);
  });

  it("answers 429 queue_full with Retry-After beyond maxDepth, writing nothing, on every gateway within a second", async () => {
    const type = "test.span.patch";
    await patchQueue(stack, type, { paused: true, maxDepth: null, rateLimit: null }, dispatcher);
    await enqueueSpans(
      stack,
      type,
      Array.from({ length: 3 }, (_, i) => ({ tag: `full-${i}`, ms: 5 })),
    );
    // a second gateway replica, to show the limit reaches every replica
    const other: ServiceProcess = spawnService("enqueue", {
      ...stack.env,
      HTTP_HOST: "127.0.0.1",
      HTTP_PORT: "0",
      AUTH_ENABLED: "false",
    });
    try {
      const ready = await other.waitForLog((l) => l.msg === "ready");
      const otherUrl = { url: `http://127.0.0.1:${ready.port as number}` };
      const body = { type, payload: { ms: 5, tag: "full-x" } };

      const at = Date.now();
      await patchQueue(stack, type, { maxDepth: 3 });
      let acceptedMeanwhile = 0;
      const refused = await waitFor(
        async () => {
          const r = await call(otherUrl, "POST", "/v1/tasks", body);
          if (r.status === 202) acceptedMeanwhile++;
          return r.status === 429 ? r : undefined;
        },
        2000,
        20,
      );
      expect(Date.now() - at).toBeLessThan(1000);
      expect(acceptedMeanwhile).toBe(0);
      expect(refused.headers.get("content-type")).toMatch(/application\/problem\+json/);
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(refused.body).toMatchObject({ status: 429, code: "queue_full" });

      // the first gateway too, and over NATS
      const again = await stack.post(body);
      expect(again.status).toBe(429);
      const m = await nc.request("sluice.enqueue", JSON.stringify(body), { timeout: 5000 });
      expect(m.json()).toMatchObject({ error: { status: 429, code: "queue_full" } });

      // nothing was written: still exactly the three tasks
      const view = await call(stack, "GET", `/v1/queues/${type}`);
      expect(view.body).toMatchObject({ depth: { total: 3 }, config: { maxDepth: 3, paused: true } });

      // drained below the limit, enqueue accepts again
      await patchQueue(stack, type, { paused: false });
      await waitForEnded(stack, "full-", 3, 5000);
      await waitFor(async () => (await stack.post(body)).status === 202, 3000, 100);
    } finally {
      await other.stop("SIGKILL");
    }
  });

  it("validates changes: 400 for bad values and unknown fields, merge-patch accepted, same over NATS", async () => {
    const bad = await call(stack, "PATCH", "/v1/queues/test.span.rate", { concurrency: 0 });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: "invalid_request" });
    expect((await call(stack, "PATCH", "/v1/queues/test.span.rate", { rateLimit: { max: 5 } })).status).toBe(
      400,
    );
    expect((await call(stack, "PATCH", "/v1/queues/test.span.rate", { concurency: 1 })).status).toBe(400);
    expect((await call(stack, "PATCH", "/v1/queues/test.span.rate", [1])).status).toBe(400);
    expect((await call(stack, "PATCH", "/v1/queues/Not%20A%20Type", { paused: true })).status).toBe(400);

    const ok = await call(
      stack,
      "PATCH",
      "/v1/queues/test.span.rate",
      {
        keyConcurrency: 2,
        aging: { afterMs: 5000 },
        maxAttempts: 4,
        backoff: { type: "fixed", delayMs: 100 },
      },
      "application/merge-patch+json",
    );
    expect(ok.status).toBe(200);
    expect(ok.body.config).toMatchObject({
      keyConcurrency: 2,
      aging: { afterMs: 5000 },
      maxAttempts: 4,
      rateLimit: { max: 5, intervalMs: 1000 },
    });

    const req = async (action: string, body?: unknown) =>
      (
        await nc.request(`sluice.api.queues.${action}`, body === undefined ? "" : JSON.stringify(body), {
          timeout: 5000,
        })
      ).json<Record<string, unknown>>();
    expect(await req("patch", { type: "test.span.rate", keyConcurrency: null })).toMatchObject({
      type: "test.span.rate",
    });
    expect((await req("get", { type: "test.span.rate" })).config).not.toHaveProperty("keyConcurrency");
    expect(await req("patch", { type: "test.span.rate", concurrency: -1 })).toMatchObject({
      error: { status: 400, code: "invalid_request" },
    });
    const list = (await req("list")) as { queues: { type: string }[] };
    expect(list.queues.map((q) => q.type)).toEqual(expect.arrayContaining(TYPES.split(",")));
  });
});
