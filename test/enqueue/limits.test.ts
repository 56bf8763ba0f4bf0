import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, postTask, startHarness } from "./harness.ts";

// The default payload limit (1 MiB) on a server started the way Sluice starts one (max_payload 8MB):
// the largest allowed payload plus its envelope must be stored, and one byte more refused at the door.
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ MAX_PAYLOAD_BYTES: "1048576" });
});
afterAll(async () => {
  await h?.cleanup();
});

describe("enqueue limits - large payloads", () => {
  it("accepts a payload of exactly the limit", async () => {
    // a JSON string payload serialises with two quotes
    const res = await postTask(h, { type: "big", payload: "x".repeat(1_048_576 - 2) });
    expect(res.statusCode).toBe(202);
  });

  it("answers 413 one byte over the limit, and stores nothing", async () => {
    const tasks = await h.tasksCount();
    const states = await h.stateCount();
    const res = await postTask(h, { type: "big", payload: "x".repeat(1_048_576 - 1) });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toMatchObject({ code: "payload_too_large" });
    expect(await h.tasksCount()).toBe(tasks);
    expect(await h.stateCount()).toBe(states);
  });
});
