import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, postTask, startHarness } from "./harness.ts";

// The default limit (1 MiB) against a nats-server with its default max_payload (also 1 MiB): the
// envelope does not fit around the largest payloads, and those must get a clean 413, not a 500.
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ MAX_PAYLOAD_BYTES: "1048576" });
});
afterAll(async () => {
  await h?.cleanup();
});

describe("enqueue limits - large payloads", () => {
  it("accepts a half-megabyte payload", async () => {
    const res = await postTask(h, { type: "big", payload: "x".repeat(512 * 1024) });
    expect(res.statusCode).toBe(202);
  });

  it("answers 413 when the message would exceed the server's max_payload, and stores nothing", async () => {
    const max = h.service.link.session().nc.info!.max_payload;
    const payload = "x".repeat(Math.min(1_048_576, max) - 10);
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    const res = await postTask(h, { type: "big", payload });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: "payload_too_large" });
    expect(res.json().detail).toMatch(/max_payload/);
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
  });
});
