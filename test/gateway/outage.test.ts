import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, postTask, startHarness } from "../enqueue/harness.ts";
import { advance, openEvents } from "./support.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

describe("gateway - NATS outage on the read and stream endpoints", () => {
  it("answers 503 with Retry-After everywhere while NATS is down, keeps open streams, and recovers", async () => {
    const id = ((await postTask(h, { type: "outage.read" })).json() as { id: string }).id;
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`);
    const first = await es.next();
    expect(first.event).toBe("queued");

    await h.stopNats();
    try {
      const inject = (method: "GET" | "POST", url: string, payload?: unknown) =>
        h.service.app.inject({
          method,
          url,
          ...(payload === undefined
            ? {}
            : { headers: { "content-type": "application/json" }, payload: JSON.stringify(payload) }),
        });
      for (const [method, url, body] of [
        ["GET", "/v1/tasks"],
        ["GET", `/v1/tasks/${id}`],
        ["GET", "/v1/workers"],
        ["POST", `/v1/tasks/${id}/retry`],
        ["GET", "/queue/stats"],
        ["GET", "/workers/types"],
        ["GET", "/api/queue/stats"],
        ["GET", `/tasks/${id}`],
        ["POST", "/tasks/enqueue", { task_type: "outage.legacy" }],
        ["POST", "/v1/tasks?wait=1s", { type: "outage.wait" }],
      ] as const) {
        const res = await inject(method, url, body);
        expect(res.statusCode, `${method} ${url}`).toBe(503);
        expect(res.headers["retry-after"], `${method} ${url}`).toBe("1");
        expect(res.json().code).toBe("unavailable");
      }
      const stream = await openEvents(`${h.url}/v1/tasks/${id}/events`);
      expect(stream.status).toBe(503);
      const fire = await openEvents(`${h.url}/v1/events`);
      expect(fire.status).toBe(503);
    } finally {
      await h.restartNats();
    }

    await expect
      .poll(async () => (await h.service.app.inject({ url: "/v1/tasks" })).statusCode, { timeout: 15_000 })
      .toBe(200);
    // the stream opened before the outage carries on: its watch picks up where it was
    const rev = await advance(h, id, { status: "completed", result: 1 });
    expect(await es.next(20_000)).toMatchObject({ id: String(rev), event: "completed" });
    await es.ended;
    // and a client that reconnects after the last event it saw gets the same
    const resumed = await openEvents(`${h.url}/v1/tasks/${id}/events`, { "last-event-id": first.id! });
    expect(await resumed.next()).toMatchObject({ id: String(rev), event: "completed" });
    await resumed.ended;
  });
});
