import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  createClient,
  isClientError,
  type SluiceClient,
  SluiceClientError,
  TaskFailedError,
  WaitTimeoutError,
} from "../../client/index.ts";
import { defineTask } from "../../services/worker/sdk.ts";
import type { TaskState } from "../../shared/task.ts";
import { type Harness, startHarness } from "../enqueue/harness.ts";
import { advance, testKey } from "./support.ts";

// the same definitions the workers run: the client infers payloads and results from them
const summarize = defineTask({
  type: "doc.summarize",
  payload: z.object({ text: z.string(), maxWords: z.number().int().optional() }),
  handler: async (p) => ({ summary: p.text.slice(0, 10), words: 2 }),
});
const ping = defineTask({ type: "ping", payload: z.object({}), handler: async () => "pong" as const });
type Tasks = { "doc.summarize": typeof summarize; ping: typeof ping };

const key = testKey("client", ["admin"]);
let h: Harness;
let nc: NatsConnection;
beforeAll(async () => {
  h = await startHarness({ AUTH_ENABLED: "true", SLUICE_API_KEYS: key.entry });
  nc = await connect({ servers: h.nats.url });
});
afterAll(async () => {
  await nc?.close();
  await h?.cleanup();
});

/** Finish a task as a worker would, a little later. */
function finishLater(id: string, patch: Partial<TaskState>, ms = 100): void {
  setTimeout(() => {
    void advance(h, id, { status: "running", startedAt: Date.now() }).then(() =>
      advance(h, id, { finishedAt: Date.now(), ...patch }),
    );
  }, ms);
}

const transports: [string, () => SluiceClient<Tasks>][] = [
  ["HTTP", () => createClient<Tasks>({ url: h.url, apiKey: key.key })],
  ["NATS", () => createClient<Tasks>({ nats: nc, prefix: "sluice" })],
];

describe.each(transports)("client over %s", (_name, make) => {
  it("enqueues with typed payloads, reads, and waits for the typed result", async () => {
    const c = make();
    const ref = await c.enqueue("doc.summarize", { text: "a long text", maxWords: 5 }, { priority: "high" });
    expect(ref).toMatchObject({ type: "doc.summarize", status: "queued" });
    const got = await c.get(ref);
    expect(got).toMatchObject({ id: ref.id, type: "doc.summarize", priority: "high", status: "queued" });
    finishLater(ref.id, { status: "completed", result: { summary: "a long", words: 2 } });
    const done = await c.wait(ref, { timeoutMs: 10_000 });
    expect(done.status).toBe("completed");
    // typed: done.result is { summary: string; words: number } | undefined
    expect(done.result?.summary).toBe("a long");
    // @ts-expect-error a payload that does not match the definition does not compile
    await c.enqueue("doc.summarize", { txt: "x" }).catch(() => undefined);
  });

  it("runs a task to its result, and reports failures and timeouts as errors", async () => {
    const c = make();
    const watcher = await h.kv.watch({ key: ">", include: "updates" });
    void (async () => {
      for await (const e of watcher) {
        if (e.operation !== "PUT") continue;
        const s = e.json<TaskState>();
        if (s.status !== "queued" || s.type !== "ping") continue;
        const fail = (s as { priority: string }).priority === "low";
        finishLater(
          s.id,
          fail
            ? { status: "failed", error: { code: "handler_failed", message: "nope" } }
            : { status: "completed", result: "pong" },
          20,
        );
      }
    })();
    try {
      const result: "pong" = await c.run("ping", {}, { timeoutMs: 10_000 });
      expect(result).toBe("pong");
      const failed = await c.run("ping", {}, { priority: "low", timeoutMs: 10_000 }).catch((e: unknown) => e);
      expect(failed).toBeInstanceOf(TaskFailedError);
      expect((failed as TaskFailedError).error?.message).toBe("nope");
    } finally {
      watcher.stop();
    }
    const slow = await c.enqueue("doc.summarize", { text: "never finishes" });
    const t0 = Date.now();
    await expect(c.wait(slow, { timeoutMs: 300 })).rejects.toBeInstanceOf(WaitTimeoutError);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });

  it("follows one task's events to its end, and the filtered firehose until aborted", async () => {
    const c = make();
    const ref = await c.enqueue("doc.summarize", { text: "events" });
    finishLater(ref.id, { status: "completed", result: { summary: "e", words: 1 } });
    const seen: string[] = [];
    for await (const e of c.events(ref)) seen.push(e.event);
    expect(seen).toEqual(["queued", "running", "completed"]);

    const ctrl = new AbortController();
    const fire: string[] = [];
    // resuming from a list's revision: nothing written after it is missed, however late the stream opens
    const after = (await c.list({ limit: 1 })).revision;
    const p = await c.enqueue("ping", {});
    const done = (async () => {
      for await (const e of c.events({ type: "ping", status: "completed", after }, { signal: ctrl.signal })) {
        fire.push(e.task.id);
        ctrl.abort();
      }
    })();
    finishLater(p.id, { status: "completed", result: "pong" }, 10);
    await done;
    expect(fire).toEqual([p.id]);
  });

  it("batches, lists, retries, cancels and reads workers, queues and dead letters", async () => {
    const c = make();
    const b = await c.enqueueBatch([
      { type: "ping", payload: {} },
      { type: "doc.summarize", payload: { text: "t" }, priority: "low" },
    ]);
    expect(b.status).toBe(202);
    expect(b.results).toHaveLength(2);
    const page = await c.list({ type: ["ping", "doc.summarize"], limit: 2 });
    expect(page.tasks).toHaveLength(2);
    expect(page.cursor).toBeDefined();

    const first = b.results[0] as { id: string };
    const cancelled = await c.cancel(first.id);
    expect(cancelled.status).toBe("cancelled");
    // cancelled tasks keep no task message here, so a retry is refused with a stable code
    const refused = await c.retry(first.id).catch((e: unknown) => e);
    expect(isClientError(refused, "task_not_retryable")).toBe(true);

    expect((await c.workers()).workers).toEqual([]);
    expect(await c.queues.list()).toBeDefined();
    expect(await c.dlq.list()).toBeDefined();
  });

  it("throws SluiceClientError with the server's status and code", async () => {
    const c = make();
    const missing = await c.get("no-such-task").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(SluiceClientError);
    expect(missing).toMatchObject({ status: 404, code: "task_not_found" });
    const bad = await c.enqueue("Bad Type" as "ping", {}).catch((e: unknown) => e);
    expect(bad).toMatchObject({ status: 400, code: "invalid_task_type" });
    await expect(async () => {
      for await (const _ of c.events("no-such-task")) break;
    }).rejects.toMatchObject({ status: 404 });
  });
});

describe("client - connection problems", () => {
  it("HTTP: a wrong key is a 401 error, an unreachable gateway status 0", async () => {
    const wrong = createClient({ url: h.url, apiKey: "sk_wrong" });
    await expect(wrong.get("x")).rejects.toMatchObject({ status: 401, code: "unauthorized" });
    const away = createClient({ url: "http://127.0.0.1:9", timeoutMs: 2_000 });
    await expect(away.get("x")).rejects.toMatchObject({ status: 0, code: "unreachable" });
  });

  it("NATS: no gateway on the prefix is a 503", async () => {
    const other = createClient({ nats: nc, prefix: "nobody", timeoutMs: 1_000 });
    await expect(other.get("x")).rejects.toMatchObject({ status: 503, code: "unavailable" });
  });
});
