import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Harness, postTask, startHarness } from "./harness.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.cleanup();
});

const readyStatus = async () => (await h.service.app.inject({ url: "/readyz" })).statusCode;

describe("enqueue - NATS outage", () => {
  it("answers 503 with Retry-After while NATS is down and recovers without a rebuild", async () => {
    expect((await postTask(h, { type: "before.outage" })).statusCode).toBe(202);
    const { id: known } = (await postTask(h, { type: "before.outage" })).json() as { id: string };
    const tasks = await h.tasksCount();
    const states = await h.stateCount();

    await h.stopNats();
    await waitFor(async () => (await readyStatus()) === 503, 5000);
    expect((await h.service.app.inject({ url: "/healthz" })).statusCode).toBe(200);

    const started = Date.now();
    const res = await postTask(h, { type: "during.outage", idempotencyKey: "outage-1" });
    expect(Date.now() - started).toBeLessThan(1000); // fails fast, no waiting on a publish timeout
    expect(res.statusCode).toBe(503);
    expect(res.headers["retry-after"]).toBe("1");
    expect(res.headers["content-type"]).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({ status: 503, code: "unavailable" });
    const get = await h.service.app.inject({ url: `/v1/tasks/${known}` });
    expect(get.statusCode).toBe(503);
    const ready = await h.service.app.inject({ url: "/readyz" });
    expect(ready.headers["retry-after"]).toBeDefined();

    await h.restartNats();
    await waitFor(async () => (await readyStatus()) === 200, 15_000);
    const after = await postTask(h, { type: "after.outage" });
    expect(after.statusCode).toBe(202);
    // the request refused during the outage left nothing behind, not even once NATS came back
    expect(await h.tasksCount()).toBe(tasks + 1);
    expect(await h.stateCount()).toBe(states + 1);
    expect((await h.service.app.inject({ url: `/v1/tasks/${known}` })).statusCode).toBe(200);
  });
});
