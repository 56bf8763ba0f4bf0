import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TaskState } from "../../shared/task.ts";
import { type Harness, postTask, startHarness } from "../enqueue/harness.ts";
import { advance, openEvents, type SseEvent, stateOf } from "./support.ts";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({ EVENTS_HEARTBEAT_MS: "1000" });
});
afterAll(async () => {
  await h?.cleanup();
});

async function enqueue(type: string, payload: unknown = {}): Promise<string> {
  const res = await postTask(h, { type, payload });
  expect(res.statusCode).toBe(202);
  return (res.json() as { id: string }).id;
}

describe("gateway events - one task over SSE", () => {
  it("sends the current record, every change with progress, and ends after the final status", async () => {
    const id = await enqueue("sse.one", { n: 1 });
    const { revision: queuedRev } = await stateOf(h, id);
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`);
    expect(es.status).toBe(200);
    expect(es.contentType).toMatch(/^text\/event-stream/);

    const first = await es.next();
    expect(first).toMatchObject({ id: String(queuedRev), event: "queued" });
    expect(JSON.parse(first.data)).toMatchObject({ id, status: "queued", type: "sse.one" });

    // each write is read before the next: with one revision kept per task, a write superseded before
    // the watch reads it is passed over (see the next test)
    const r1 = await advance(h, id, { status: "running", startedAt: Date.now(), attempts: 1 });
    const running = await es.next();
    expect(running).toMatchObject({ id: String(r1), event: "running" });
    const r2 = await advance(h, id, { progress: { percent: 40, message: "halfway-ish" } });
    const progress = await es.next();
    expect(progress.id).toBe(String(r2));
    expect(JSON.parse(progress.data).progress).toEqual({ percent: 40, message: "halfway-ish" });
    const r3 = await advance(h, id, {
      status: "completed",
      finishedAt: Date.now(),
      result: { ok: true },
      task: { id, type: "sse.one", priority: "normal", payload: { secret: 1 }, enqueuedAt: 0 },
    });
    const done = await es.next();
    expect(done).toMatchObject({ id: String(r3), event: "completed" });
    const final = JSON.parse(done.data) as TaskState;
    expect(final.result).toEqual({ ok: true });
    // the stored task message stays internal
    expect(final.task).toBeUndefined();
    await es.ended;
  });

  it("sends writes in order and always ends with the final one, however fast they come", async () => {
    const id = await enqueue("sse.burst");
    const { revision: queuedRev } = await stateOf(h, id);
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`);
    expect(await es.next()).toMatchObject({ id: String(queuedRev), event: "queued" });
    const written: number[] = [];
    written.push(await advance(h, id, { status: "running", startedAt: Date.now(), attempts: 1 }));
    for (let p = 1; p <= 20; p++) written.push(await advance(h, id, { progress: { percent: p * 5 } }));
    written.push(await advance(h, id, { status: "completed", finishedAt: Date.now(), result: 1 }));
    await es.ended;
    const seen: SseEvent[] = [];
    for (;;) {
      const e = await es.next(50).catch(() => undefined);
      if (!e) break;
      seen.push(e);
    }
    // a subsequence of what was written, in order, ending with the final state
    const ids = seen.map((e) => Number(e.id));
    expect(ids.every((r) => written.includes(r))).toBe(true);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(seen.at(-1)).toMatchObject({ id: String(written.at(-1)), event: "completed" });
  });

  it("resumes after Last-Event-ID with only what came later", async () => {
    const id = await enqueue("sse.resume");
    const a = await advance(h, id, { status: "running", startedAt: Date.now() });
    const b = await advance(h, id, { progress: { percent: 10 } });
    // the client saw `a` before it lost the connection; `b` is the latest record
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`, { "last-event-id": String(a) });
    const ev = await es.next();
    expect(ev.id).toBe(String(b));
    expect(JSON.parse(ev.data).progress).toEqual({ percent: 10 });
    // caught up: nothing else until the next write
    const c = await advance(h, id, {
      status: "failed",
      finishedAt: Date.now(),
      error: { code: "x", message: "y" },
    });
    expect(await es.next()).toMatchObject({ id: String(c), event: "failed" });
    await es.ended;

    // resuming after the final event ends at once, with nothing sent
    const again = await openEvents(`${h.url}/v1/tasks/${id}/events`, { "last-event-id": String(c) });
    await again.ended;
    await expect(again.next(200)).rejects.toThrow(/no event/);
  });

  it("reports a finished task's outcome to a late subscriber, then ends", async () => {
    const id = await enqueue("sse.late");
    await advance(h, id, { status: "completed", finishedAt: Date.now(), result: 42 });
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`);
    const ev = await es.next();
    expect(ev.event).toBe("completed");
    expect(JSON.parse(ev.data).result).toBe(42);
    await es.ended;
  });

  it("answers 404 for an unknown task and 400 for a malformed Last-Event-ID, as problems", async () => {
    const missing = await openEvents(`${h.url}/v1/tasks/nope/events`);
    expect(missing.status).toBe(404);
    expect(JSON.parse(await missing.body()).code).toBe("task_not_found");
    const id = await enqueue("sse.bad");
    const bad = await openEvents(`${h.url}/v1/tasks/${id}/events`, { "last-event-id": "yesterday" });
    expect(bad.status).toBe(400);
  });

  it("ends the stream with a deleted event when the record is removed", async () => {
    const id = await enqueue("sse.deleted");
    const es = await openEvents(`${h.url}/v1/tasks/${id}/events`);
    await es.next();
    await h.kv.delete(id);
    const ev = await es.next();
    expect(ev.event).toBe("deleted");
    expect(JSON.parse(ev.data)).toEqual({ id });
    await es.ended;
  });
});

describe("gateway events - firehose", () => {
  it("filters by type and status, without results", async () => {
    // from the current revision: the stream misses nothing written after it, however late its watch opens
    const after = ((await h.service.app.inject({ url: "/v1/tasks?limit=1" })).json() as { revision: number })
      .revision;
    const es = await openEvents(`${h.url}/v1/events?type=fh.a,fh.b&status=completed`, {
      "last-event-id": String(after),
    });
    expect(es.status).toBe(200);
    const a = await enqueue("fh.a");
    const c = await enqueue("fh.c");
    const b = await enqueue("fh.b");
    await advance(h, c, { status: "completed", result: 1 });
    await advance(h, a, { status: "running" });
    const ra = await advance(h, a, { status: "completed", result: { big: "x" } });
    const rb = await advance(h, b, { status: "completed", result: 2 });
    const e1 = await es.next();
    const e2 = await es.next();
    expect([e1.id, e2.id]).toEqual([String(ra), String(rb)]);
    expect(JSON.parse(e1.data)).toMatchObject({ id: a, status: "completed" });
    expect(JSON.parse(e1.data).result).toBeUndefined();
    expect(JSON.parse(e2.data).id).toBe(b);
    es.close();
  });

  it("resumes from a list's revision without missing changes made in between", async () => {
    const page = (await h.service.app.inject({ url: "/v1/tasks?limit=1" })).json() as { revision: number };
    // changes after the read, before the subscription
    const x = await enqueue("fh.gap");
    const rx = await advance(h, x, { status: "running" });
    const es = await openEvents(`${h.url}/v1/events?type=fh.gap`, { "last-event-id": String(page.revision) });
    const ev = await es.next();
    expect(ev).toMatchObject({ id: String(rx), event: "running" });
    es.close();
  });

  it("rejects unknown statuses and malformed types with 400", async () => {
    expect((await openEvents(`${h.url}/v1/events?status=done`)).status).toBe(400);
    expect((await openEvents(`${h.url}/v1/events?type=Not%20A%20Type`)).status).toBe(400);
  });
});

describe("gateway events - WebSocket", () => {
  function connect(query: string): Promise<{ ws: WebSocket; messages: unknown[]; closed: Promise<number> }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${h.url.replace("http", "ws")}/v1/ws?${query}`);
      const messages: unknown[] = [];
      const closed = new Promise<number>((r) => ws.addEventListener("close", (e) => r(e.code)));
      ws.addEventListener("message", (e) => messages.push(JSON.parse(String(e.data))));
      ws.addEventListener("open", () => resolve({ ws, messages, closed }));
      ws.addEventListener("error", () => reject(new Error("websocket refused")));
    });
  }

  it("carries the same events for one task and closes normally after the final status", async () => {
    const id = await enqueue("ws.one");
    const c = await connect(`task=${id}`);
    // the server's watch is open before the upgrade completes; each write is read before the next, as
    // a write replaced before the watch reads it is passed over (one revision kept per task)
    await expect.poll(() => c.messages.length).toBe(1);
    const r1 = await advance(h, id, { status: "running" });
    await expect.poll(() => c.messages.length).toBe(2);
    const r2 = await advance(h, id, { status: "completed", result: "done" });
    expect(await c.closed).toBe(1000);
    const events = c.messages as { id: string; event: string; data: TaskState }[];
    expect(events.map((e) => e.event)).toEqual(["queued", "running", "completed"]);
    expect(events.slice(1).map((e) => e.id)).toEqual([String(r1), String(r2)]);
    expect(events[2]!.data.result).toBe("done");
  });

  it("follows the filtered firehose", async () => {
    const after = ((await h.service.app.inject({ url: "/v1/tasks?limit=1" })).json() as { revision: number })
      .revision;
    const c = await connect(`type=ws.fh&status=failed&lastEventId=${after}`);
    const id = await enqueue("ws.fh");
    await advance(h, id, { status: "running" });
    await advance(h, id, { status: "failed", error: { code: "e", message: "m" } });
    await expect.poll(() => c.messages.length).toBe(1);
    expect(c.messages[0]).toMatchObject({ event: "failed", data: { id, status: "failed" } });
    c.ws.close();
  });

  it("refuses bad requests before the upgrade, and a plain GET with 426", async () => {
    await expect(connect("task=nope")).rejects.toThrow(/refused/);
    await expect(connect("status=nope")).rejects.toThrow(/refused/);
    const plain = await fetch(`${h.url}/v1/ws`);
    expect(plain.status).toBe(426);
  });
});

describe("gateway events - limits and shutdown", () => {
  it("answers 429 beyond MAX_EVENT_STREAMS, frees a place when a client leaves, and ends streams on stop", async () => {
    const small = await startHarness({ MAX_EVENT_STREAMS: "1" });
    try {
      const first = await openEvents(`${small.url}/v1/events`);
      expect(first.status).toBe(200);
      const second = await openEvents(`${small.url}/v1/events`);
      expect(second.status).toBe(429);
      expect(second.retryAfter).toBe("5");
      expect(JSON.parse(await second.body()).code).toBe("too_many_streams");
      // a client that hangs up frees its place (the server notices the closed connection)
      first.close();
      let kept: Awaited<ReturnType<typeof openEvents>> | undefined;
      await expect
        .poll(async () => {
          const s = await openEvents(`${small.url}/v1/events`);
          if (s.status === 200) kept = s;
          return s.status;
        })
        .toBe(200);
      // WebSockets count against the same limit
      const refused = await new Promise<string>((resolve) => {
        const ws = new WebSocket(`${small.url.replace("http", "ws")}/v1/ws`);
        ws.onopen = () => resolve("open");
        ws.onerror = () => resolve("refused");
      });
      expect(refused).toBe("refused");
      const t0 = Date.now();
      await small.service.stop();
      await kept!.ended;
      expect(Date.now() - t0).toBeLessThan(5_000);
    } finally {
      await small.cleanup();
    }
  });

  it("keeps idle streams alive with comments", async () => {
    const id = await enqueue("sse.idle");
    const res = await fetch(`${h.url}/v1/tasks/${id}/events`);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const deadline = Date.now() + 3_000;
    while (!text.includes(": keep-alive") && Date.now() < deadline) {
      const { value } = await reader.read();
      text += decoder.decode(value);
    }
    expect(text).toContain(": keep-alive");
    await reader.cancel();
  });
});
