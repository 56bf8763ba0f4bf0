import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ServiceProcess } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";
import { applied, call, enqueueSpans, spans, waitForEnded } from "./limits-helpers.ts";

const TYPE = "test.span.pause";

describe("lifecycle - pause and resume a task type", () => {
  let stack: Stack;
  let dispatcher: ServiceProcess;
  beforeAll(async () => {
    stack = await startStack();
    dispatcher = await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: TYPE }); // 2 slots
  });
  afterAll(() => stack?.cleanup());

  it("stops dispatching while running tasks finish and enqueue still accepts; resume runs the backlog in priority order", async () => {
    // two tasks running when the pause arrives
    const running = await enqueueSpans(stack, TYPE, [
      { tag: "run-1", ms: 800 },
      { tag: "run-2", ms: 800 },
    ]);
    await Promise.all(running.map((id) => stack.waitForStatus(id, ["running"], 5000)));

    const paused = await call(stack, "POST", `/v1/queues/${TYPE}/pause`);
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ type: TYPE, config: { paused: true } });
    await applied(dispatcher, TYPE, (paused.body.config as { updatedAt: number }).updatedAt);

    // a backlog in the worst order for priority: bulk first, urgent last
    const backlog = ["bulk", "normal", "urgent"].flatMap((priority) =>
      [1, 2, 3].map((i) => ({ tag: `b-${priority}-${i}`, ms: 30, priority })),
    );
    await enqueueSpans(stack, TYPE, backlog); // throws unless every one got 202

    // the running tasks finish; nothing of the backlog starts
    for (const id of running)
      expect((await stack.waitForStatus(id, ["completed"], 5000)).status).toBe("completed");
    await sleep(1000);
    expect(spans(stack, "b-")).toEqual([]);

    const view = await call(stack, "GET", `/v1/queues/${TYPE}`);
    expect(view.status).toBe(200);
    expect(view.body).toMatchObject({
      type: TYPE,
      config: { paused: true },
      depth: { total: 9, byPriority: { urgent: 3, high: 0, normal: 3, low: 0, bulk: 3 } },
      running: 0,
    });
    // the paused dispatcher may hold some of the nine (in flight, not running); none has left
    const v = view.body as { waiting: { total: number }; inFlight: number };
    expect(v.waiting.total + v.inFlight).toBe(9);
    const list = await call(stack, "GET", "/v1/queues");
    const listed = (list.body.queues as { type: string; config: { paused: boolean } }[]).find(
      (q) => q.type === TYPE,
    );
    expect(listed?.config.paused).toBe(true);

    const resumed = await call(stack, "POST", `/v1/queues/${TYPE}/resume`);
    expect(resumed.body).toMatchObject({ config: { paused: false } });
    const ran = await waitForEnded(stack, "b-", 9, 10_000);
    // one worker process: the run log's line order is the start order
    expect(ran.map((s) => s.tag.split("-")[1])).toEqual([
      "urgent",
      "urgent",
      "urgent",
      "normal",
      "normal",
      "normal",
      "bulk",
      "bulk",
      "bulk",
    ]);
  });

  it("pauses and resumes over NATS request/reply too", async () => {
    const { connect } = await import("@nats-io/transport-node");
    const nc = await connect({ servers: stack.nats.url });
    try {
      const req = async (action: string, body: unknown) =>
        (await nc.request(`sluice.api.queues.${action}`, JSON.stringify(body), { timeout: 5000 })).json<
          Record<string, unknown>
        >();
      const paused = await req("pause", { type: TYPE });
      expect(paused).toMatchObject({ type: TYPE, config: { paused: true } });
      await applied(dispatcher, TYPE, (paused.config as { updatedAt: number }).updatedAt);
      const [id] = await enqueueSpans(stack, TYPE, [{ tag: "nats-1", ms: 10 }]);
      await sleep(700);
      expect((await stack.get(id!))?.status).toBe("queued");
      expect(await req("resume", { type: TYPE })).toMatchObject({ config: { paused: false } });
      await stack.waitForStatus(id!, ["completed"], 5000);
      expect(await req("pause", {})).toMatchObject({ error: { status: 400, code: "invalid_request" } });
    } finally {
      await nc.close();
    }
  });
});
