import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

describe("pipeline - enqueue to completion", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
    await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.sleep,test.record,test.fail,test.stubborn" });
    await stack.worker({ WORKER_TASKS_MODULE: "", WORKER_TYPES: "noop,doc.chunk" });
  });
  afterAll(() => stack?.cleanup());

  it("runs a task enqueued over HTTP and records every stage", async () => {
    const before = Date.now();
    const r = await stack.post({ type: "noop", payload: { hello: "world" }, priority: "high" });
    expect(r.status).toBe(202);
    const s = await stack.waitForStatus(r.body.id as string, ["completed"]);
    expect(s).toMatchObject({
      type: "noop",
      priority: "high",
      status: "completed",
      attempts: 1,
      result: { hello: "world" },
    });
    expect(s.enqueuedAt).toBeGreaterThanOrEqual(before);
    expect(s.dispatchedAt).toBeGreaterThanOrEqual(s.enqueuedAt);
    expect(s.startedAt).toBeGreaterThanOrEqual(s.dispatchedAt!);
    expect(s.finishedAt).toBeGreaterThanOrEqual(s.startedAt!);
    expect(typeof s.workerId).toBe("string");
  });

  it("runs a task enqueued over NATS request/reply", async () => {
    const nc = await connect({ servers: stack.nats.url });
    try {
      const m = await nc.request("sluice.enqueue", JSON.stringify({ type: "noop", payload: [1, 2, 3] }), {
        timeout: 5000,
      });
      const reply = m.json<{ id: string; status: string }>();
      // truthful, so it may already be further along: the pipeline can finish before the reply is written
      expect(["queued", "running", "completed"]).toContain(reply.status);
      const s = await stack.waitForStatus(reply.id, ["completed"]);
      expect(s.result).toEqual([1, 2, 3]);
      expect(s.priority).toBe("normal");
    } finally {
      await nc.close();
    }
  });

  it("runs a task published straight to the tasks stream and records its state", async () => {
    const nc = await connect({ servers: stack.nats.url });
    try {
      const { jetstream } = await import("@nats-io/jetstream");
      const js = jetstream(nc);
      await js.publish(
        "sluice.tasks.urgent.noop",
        JSON.stringify({ id: "direct-1", payload: { direct: true } }),
      );
      const s = await stack.waitForStatus("direct-1", ["completed"]);
      expect(s).toMatchObject({ id: "direct-1", type: "noop", priority: "urgent", result: { direct: true } });
    } finally {
      await nc.close();
    }
  });

  it("announces outcomes in batches on <prefix>.events.<status>.<type>, one notice for many tasks", async () => {
    const nc = await connect({ servers: stack.nats.url });
    try {
      const seen: { n: number; ids: string[]; type: string; status: string }[] = [];
      const sub = nc.subscribe("sluice.events.completed.noop", {
        callback: (_e, m) => {
          seen.push(m.json());
        },
      });
      await nc.flush();
      const ids: string[] = [];
      for (let i = 0; i < 20; i++)
        ids.push((await stack.post({ type: "noop", payload: i })).body.id as string);
      for (const id of ids) await stack.waitForStatus(id, ["completed"]);
      // notices of earlier tests' tasks may still arrive (each waits up to 100 ms): look at ours only
      const mine = new Set(ids);
      const ours = () => seen.filter((b) => b.ids.some((id) => mine.has(id)));
      await waitFor(
        () => new Set(ours().flatMap((b) => b.ids.filter((id) => mine.has(id)))).size >= 20 || undefined,
        5_000,
      );
      sub.unsubscribe();
      for (const id of ids) expect(ours().some((b) => b.ids.includes(id))).toBe(true);
      for (const b of seen) expect(b).toMatchObject({ type: "noop", status: "completed", n: b.ids.length });
      // 20 tasks finishing within a few ms of each other share notices
      expect(ours().length).toBeLessThan(20);
    } finally {
      await nc.close();
    }
  });

  it("chunks a document with overlap and reports progress", async () => {
    const text = Array.from({ length: 60 }, (_, i) => `Paragraph ${i} has some words in it.`).join("\n\n");
    const r = await stack.post({ type: "doc.chunk", payload: { text, chunkSize: 200, chunkOverlap: 40 } });
    const s = await stack.waitForStatus(r.body.id as string, ["completed"]);
    const out = s.result as { count: number; chunks: { start: number; end: number; text: string }[] };
    expect(out.count).toBeGreaterThan(5);
    expect(s.progress?.percent).toBe(100);
    for (const c of out.chunks) expect(c.text.length).toBeLessThanOrEqual(200);
    // chunks cover the text and overlap
    expect(out.chunks[0]!.start).toBe(0);
    expect(out.chunks.at(-1)!.end).toBe(text.length);
    for (let i = 1; i < out.chunks.length; i++)
      expect(out.chunks[i]!.start).toBeLessThan(out.chunks[i - 1]!.end);
  });

  it("records failed with the handler's message", async () => {
    const r = await stack.post({ type: "test.fail", payload: { message: "boom" } });
    const s = await stack.waitForStatus(r.body.id as string, ["failed"]);
    expect(s.error).toEqual({ code: "handler_failed", message: "boom" });
  });

  it("gives up a payload that does not match the type's schema without running or retrying it", async () => {
    const r = await stack.post({ type: "test.record", payload: { n: "not a number" } });
    const id = r.body.id as string;
    const s = await stack.waitForStatus(id, ["dead"]);
    expect(s.attempts).toBe(1);
    expect(s.error?.code).toBe("invalid_payload");
    expect(stack.runs().some((x) => x.id === id)).toBe(false);
  });

  it("times out a task, aborting its signal", async () => {
    const r = await stack.post({
      type: "test.sleep",
      payload: { ms: 10_000 },
      timeoutMs: 300,
      maxAttempts: 1,
    });
    const s = await stack.waitForStatus(r.body.id as string, ["timed_out"], 5000);
    expect(s.error?.code).toBe("timed_out");
    expect(s.finishedAt! - s.startedAt!).toBeLessThan(2000);
  });

  it("records timed_out even when the handler ignores its signal", async () => {
    const r = await stack.post({ type: "test.stubborn", payload: { ms: 1500 }, timeoutMs: 200 });
    const s = await stack.waitForStatus(r.body.id as string, ["timed_out"], 5000);
    expect(s.finishedAt! - s.startedAt!).toBeLessThan(1000);
  });

  it("shows running with progress for a task that outlives a moment", async () => {
    const r = await stack.post({ type: "test.sleep", payload: { ms: 1500 } });
    const id = r.body.id as string;
    const running = await stack.waitForStatus(id, ["running"], 5000);
    expect(running.startedAt).toBeTypeOf("number");
    await stack.waitForStatus(id, ["completed"]);
  });

  it("runs an urgent task enqueued last before 50 waiting normal ones", async () => {
    // occupy the single test.sleep slot
    const busy = await stack.post({ type: "test.sleep", payload: { ms: 1500, tag: "busy" } });
    await stack.waitForStatus(busy.body.id as string, ["running"], 5000);
    const normals: string[] = [];
    for (let i = 0; i < 50; i++) {
      const r = await stack.post({
        type: "test.sleep",
        payload: { ms: 5, tag: `n${i}` },
        priority: "normal",
      });
      normals.push(r.body.id as string);
    }
    const urgent = await stack.post({
      type: "test.sleep",
      payload: { ms: 5, tag: "urgent" },
      priority: "urgent",
    });
    const u = await stack.waitForStatus(urgent.body.id as string, ["completed"]);
    await waitFor(async () => (await stack.get(normals.at(-1)!))?.status === "completed", 20_000);
    const states = await Promise.all(normals.map((id) => stack.get(id)));
    const firstNormal = Math.min(...states.map((s) => s!.startedAt!));
    expect(u.startedAt).toBeLessThan(firstNormal);
  });
});
