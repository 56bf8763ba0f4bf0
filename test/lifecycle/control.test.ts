import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

describe("lifecycle - cancel, pause and resume", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.sleep,test.pages,test.record" });
  });
  afterAll(async () => {
    if (process.env.DEBUG_LOGS) console.log(JSON.stringify(stack.enqueue.logs.slice(-30), null, 1));
    await stack?.cleanup();
  });

  it("cancels a queued task so it never runs", async () => {
    // test.sleep has one slot: occupy it so the next one waits
    const busy = await stack.post({ type: "test.sleep", payload: { ms: 1200, tag: "occupy" } });
    await stack.waitForStatus(busy.body.id as string, ["running"], 5000);
    const waiting = await stack.post({ type: "test.sleep", payload: { ms: 10, tag: "never" } });
    const id = waiting.body.id as string;
    const r = await stack.call("POST", `/v1/tasks/${id}/cancel`);
    expect(r).toMatchObject({ status: 200, body: { id, status: "cancelled" } });
    await stack.waitForStatus(busy.body.id as string, ["completed"], 5000);
    await new Promise((res) => setTimeout(res, 500));
    expect((await stack.get(id))?.status).toBe("cancelled");
    expect(stack.runs().some((x) => x.tag === "never")).toBe(false);
  });

  it("cancels a running task: its signal aborts and it ends cancelled", async () => {
    const r0 = await stack.post({ type: "test.sleep", payload: { ms: 20_000, tag: "long" } });
    const id = r0.body.id as string;
    await stack.waitForStatus(id, ["running"], 5000);
    const r = await stack.call("POST", `/v1/tasks/${id}/cancel`);
    expect(r).toMatchObject({ status: 202, body: { id, cancelRequested: true } });
    const s = await stack.waitForStatus(id, ["cancelled"], 5000);
    expect(s.error?.code).toBe("cancelled");
    expect(s.finishedAt! - s.startedAt!).toBeLessThan(5000);
  });

  it("answers 409 for a finished task and 404 for an unknown one", async () => {
    const r0 = await stack.post({ type: "test.record", payload: { n: 1 } });
    await stack.waitForStatus(r0.body.id as string, ["completed"]);
    const r = await stack.call("POST", `/v1/tasks/${r0.body.id}/cancel`);
    expect(r.status).toBe(409);
    expect(r.body.code).toBe("task_final");
    expect((await stack.call("POST", "/v1/tasks/no-such-task/cancel")).status).toBe(404);
  });

  it("cancels over NATS request/reply too", async () => {
    const busy = await stack.post({ type: "test.sleep", payload: { ms: 800, tag: "occupy2" } });
    await stack.waitForStatus(busy.body.id as string, ["running"], 5000);
    const waiting = await stack.post({ type: "test.sleep", payload: { ms: 10, tag: "never2" } });
    const nc = await connect({ servers: stack.nats.url });
    try {
      const m = await nc.request("sluice.api.tasks.cancel", JSON.stringify({ id: waiting.body.id }), {
        timeout: 5000,
      });
      expect(m.json()).toMatchObject({ id: waiting.body.id, status: "cancelled" });
      const bad = await nc.request("sluice.api.tasks.cancel", JSON.stringify({ nope: 1 }), { timeout: 5000 });
      expect(bad.json()).toMatchObject({ error: { status: 400 } });
    } finally {
      await nc.close();
    }
  });

  it("pauses a running task at its checkpoint and resumes it from there", async () => {
    const r0 = await stack.post({ type: "test.pages", payload: { pages: 10, msPerPage: 150 } });
    const id = r0.body.id as string;
    await waitFor(
      async () => (((await stack.get(id))?.checkpoint as { page?: number } | undefined)?.page ?? 0) >= 3,
      10_000,
    );
    const p = await stack.call("POST", `/v1/tasks/${id}/pause`);
    expect(p).toMatchObject({ status: 202, body: { pauseRequested: true } });
    const paused = await stack.waitForStatus(id, ["paused"], 5000);
    const at = (paused.checkpoint as { page: number }).page;
    expect(at).toBeGreaterThanOrEqual(3);
    expect(at).toBeLessThan(10);
    // nothing runs while it is paused
    await new Promise((res) => setTimeout(res, 400));
    expect((await stack.get(id))?.status).toBe("paused");
    expect((await stack.call("POST", `/v1/tasks/${id}/pause`)).status).toBe(200);
    const r = await stack.call("POST", `/v1/tasks/${id}/resume`);
    expect(r).toMatchObject({ status: 200, body: { id, status: "queued" } });
    const done = await stack.waitForStatus(id, ["completed"], 10_000);
    expect(done.result).toEqual({ resumedFrom: at, pages: 10 });
    const runs = stack.runs().filter((x) => x.id === id);
    expect(runs.map((x) => x.n)).toEqual([0, at]);
    expect((await stack.call("POST", `/v1/tasks/${id}/resume`)).status).toBe(409);
  });
});
