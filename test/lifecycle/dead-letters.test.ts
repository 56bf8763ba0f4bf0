import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

describe("lifecycle - retries and dead letters", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.flaky" });
  });
  afterAll(() => stack?.cleanup());

  it("retries a failing task with its backoff until it succeeds", async () => {
    const r = await stack.post({ type: "test.flaky", payload: { tag: "retry-ok", failTimes: 2 } });
    const id = r.body.id as string;
    const retrying = await stack.waitForStatus(id, ["retrying"], 5000);
    expect(retrying.error?.message).toMatch(/planned failure 1/);
    expect(retrying.runAt).toBeGreaterThan(Date.now() - 1000);
    const s = await stack.waitForStatus(id, ["completed"], 15_000);
    expect(s.attempts).toBe(3);
    const runs = stack.runs().filter((x) => x.id === id);
    expect(runs.map((x) => x.attempt)).toEqual([1, 2, 3]);
    // fixed backoff of 300 ms between attempts (the scheduler fires within a second)
    for (let i = 1; i < runs.length; i++) {
      expect(runs[i]!.at - runs[i - 1]!.at).toBeGreaterThanOrEqual(280);
      expect(runs[i]!.at - runs[i - 1]!.at).toBeLessThan(2500);
    }
  });

  it("files an exhausted task as a dead letter, lists it, and replays it as a fresh series", async () => {
    const r = await stack.post({
      type: "test.flaky",
      payload: { tag: "dies", failTimes: 3 },
      maxAttempts: 2,
    });
    const id = r.body.id as string;
    const dead = await stack.waitForStatus(id, ["dead"], 15_000);
    expect(dead.attempts).toBe(2);
    expect(dead.error?.message).toMatch(/planned failure 2/);
    const list = await stack.call("GET", "/v1/dlq?type=test.flaky");
    const items = list.body.items as { id: string; error: { message: string }; task: { payload: unknown } }[];
    const entry = items.find((x) => x.id === id);
    expect(entry?.task.payload).toEqual({ tag: "dies", failTimes: 3 });
    const one = await stack.call("GET", `/v1/dlq/${id}`);
    expect(one.body).toMatchObject({ id, status: "dead" });

    const rep = await stack.call("POST", "/v1/dlq/replay", { ids: [id] });
    expect(rep.status).toBe(200);
    const newId = (rep.body.replayed as { id: string; newId: string }[])[0]!.newId;
    expect(newId).not.toBe(id);
    // third run overall: failTimes 3 means it fails once more, then succeeds on its second attempt
    const s = await stack.waitForStatus(newId, ["completed"], 15_000);
    expect(s.replayOf).toBe(id);
    expect(s.attempts).toBe(2);
    expect((await stack.get(id))?.replayedBy).toBe(newId);
    const after = await stack.call("GET", "/v1/dlq?type=test.flaky");
    expect((after.body.items as { id: string }[]).some((x) => x.id === id)).toBe(false);
    // replaying again is idempotent
    const again = await stack.call("POST", "/v1/dlq/replay", { ids: [id] });
    expect(again.body.replayed).toEqual([{ id, newId }]);
  });

  it("does not retry a non-retryable failure, and purges dead letters", async () => {
    const r = await stack.post({ type: "test.flaky", payload: { tag: 7 } });
    expect(r.status).toBe(202); // payload invalid for the type: dead at once, no retry
    const id = r.body.id as string;
    const s = await stack.waitForStatus(id, ["dead"], 5000);
    expect(s.attempts).toBe(1);
    expect(s.error?.code).toBe("invalid_payload");
    const purged = await stack.call("DELETE", `/v1/dlq/${id}`);
    expect(purged.body).toEqual({ purged: 1 });
    const all = await stack.call("DELETE", "/v1/dlq?all=true");
    expect(all.status).toBe(200);
    expect(((await stack.call("GET", "/v1/dlq")).body.items as unknown[]).length).toBe(0);
    expect((await stack.call("POST", "/v1/dlq/replay", {})).status).toBe(400);
  });
});

describe("lifecycle - crash loops", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
  });
  afterAll(() => stack?.cleanup());

  it("ends a task that kills its worker every time as dead instead of looping", async () => {
    const r = await stack.post({ type: "test.crash", payload: { tag: "boom" } });
    const id = r.body.id as string;
    // keep a worker alive: each run kills it, a new one picks the redelivery up after the ack wait
    let dead = false;
    const keeper = (async () => {
      while (!dead) {
        const w = await stack.worker({ WORKER_TYPES: "test.crash", WORK_ACK_WAIT_MS: "1000" });
        await Promise.race([w.exited, waitFor(async () => dead, 30_000, 200)]);
        await w.stop("SIGKILL");
      }
    })();
    const s = await stack.waitForStatus(id, ["dead"], 30_000);
    dead = true;
    await keeper;
    expect(s.error?.code).toBe("worker_lost");
    // maxAttempts 2: the first run dies before its delayed `running` write and leaves nothing to count
    // (a redelivery is an attempt only when the record shows the attempt ran); the second and third
    // write `running` before their handlers, so the fourth delivery is attempt 3 and is given up
    expect(
      stack
        .runs()
        .filter((x) => x.id === id)
        .map((x) => x.attempt),
    ).toEqual([1, 1, 2]);
  });
});
