import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

describe("lifecycle - retention", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher({
      RETENTION_COMPLETED_MS: "1500",
      RETENTION_FAILED_MS: "4000",
      RETENTION_SWEEP_MS: "300",
    });
    await stack.worker({ WORKER_TYPES: "test.record,test.fail,test.sleep" });
  });
  afterAll(() => stack?.cleanup());

  it("removes completed records after their retention, failures after theirs, and keeps unfinished ones", async () => {
    // a task that stays queued: no worker serves this type
    const waiting = await stack.post({ type: "test.unserved", payload: {} });
    const done: string[] = [];
    for (let i = 0; i < 30; i++)
      done.push((await stack.post({ type: "test.record", payload: { n: i } })).body.id as string);
    const failed = (await stack.post({ type: "test.fail", payload: { message: "x" } })).body.id as string;
    await waitFor(async () =>
      (await Promise.all(done.map((id) => stack.get(id)))).every((s) => s?.status === "completed"),
    );
    await stack.waitForStatus(failed, ["failed"]);

    // completed: gone after ~1.5 s (+ a sweep); the failure is still there
    const goneAt = Date.now();
    await waitFor(
      async () => (await Promise.all(done.map((id) => stack.get(id)))).every((s) => s === undefined),
      6000,
      100,
    );
    // not before its retention: the failure, finished with them, is still there
    expect((await stack.get(failed))?.status).toBe("failed");
    expect(Date.now() - goneAt).toBeLessThan(3000);
    // the failure goes after its own, longer retention
    await waitFor(async () => (await stack.get(failed)) === undefined, 8000, 100);
    // unfinished records are never removed, however old
    expect((await stack.get(waiting.body.id as string))?.status).toBe("queued");

    // the idempotency key of a removed task no longer matches: a new task is created
    const a = await stack.post({ type: "test.record", payload: { n: 99 }, idempotencyKey: "k1" });
    await stack.waitForStatus(a.body.id as string, ["completed"]);
    const dup = await stack.post({ type: "test.record", payload: { n: 99 }, idempotencyKey: "k1" });
    expect(dup.body).toMatchObject({ id: a.body.id, duplicate: true });
    await waitFor(async () => (await stack.get(a.body.id as string)) === undefined, 6000, 100);

    // storage is bounded: the bucket's stream holds only what is still retained
    const nc = await connect({ servers: stack.nats.url });
    try {
      const info = await (await jetstreamManager(nc)).streams.info("KV_sluice-state");
      expect(info.state.messages).toBeLessThanOrEqual(3);
    } finally {
      await nc.close();
    }
  });
});
