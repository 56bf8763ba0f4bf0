import { setTimeout as sleep } from "node:timers/promises";
import { connect, type NatsConnection, headers as newHeaders } from "@nats-io/transport-node";
import type { ReadableSpan } from "@opentelemetry/sdk-trace";
import { InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { loadConfig as loadDispatcherConfig } from "../../services/dispatcher/config.ts";
import { Dispatcher } from "../../services/dispatcher/dispatcher.ts";
import { loadConfig as loadEnqueueConfig } from "../../services/enqueue/config.ts";
import { createEnqueueService, type EnqueueService } from "../../services/enqueue/service.ts";
import { loadConfig as loadWorkerConfig } from "../../services/worker/config.ts";
import { createExecutionObserver } from "../../services/worker/observer.ts";
import { defineTask } from "../../services/worker/sdk.ts";
import { Worker } from "../../services/worker/worker.ts";
import { names as buildNames } from "../../shared/names.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import type { TaskState } from "../../shared/task.ts";
import { startTracing, type Tracing } from "../../shared/telemetry/tracing.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

// One trace per task across the three services, run in-process on a real nats-server with the real
// enqueue service, dispatcher and workers; spans go to an in-memory exporter instead of OTLP.

const CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN = "b7ad6b7169203331";
const CALLER_TP = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;

const release = new Map<string, () => void>();
const definitions = [
  defineTask({
    type: "obs.echo",
    payload: z.object({ n: z.number() }),
    handler: async (p, ctx) => {
      ctx.log.info({ n: p.n }, "echo handled");
      return p;
    },
  }),
  // waits until the test releases it or its signal aborts (worker shutdown)
  defineTask({
    type: "obs.hold",
    payload: z.object({ tag: z.string() }),
    concurrency: 1,
    handler: async (p, ctx) => {
      await new Promise<void>((resolve) => {
        release.set(p.tag, resolve);
        ctx.signal.addEventListener("abort", () => resolve(), { once: true });
      });
      return { tag: p.tag };
    },
  }),
  // fails its first attempt, succeeds on the retry
  defineTask({
    type: "obs.flaky",
    payload: z.object({}),
    maxAttempts: 2,
    backoff: { type: "fixed", delayMs: 200 },
    handler: async (_p, ctx) => {
      if (ctx.attempt === 1) throw new Error("first attempt fails");
      return { attempt: ctx.attempt };
    },
  }),
];

describe("observability - one trace per task", () => {
  const exporter = new InMemorySpanExporter();
  const logLines: Record<string, unknown>[] = [];
  const log = pino(
    { level: "info", base: { service: "test" } },
    { write: (s: string) => void logLines.push(JSON.parse(s)) },
  );
  let nats: TestNats;
  let tracing: Tracing;
  let enqueue: EnqueueService;
  let url: string;
  const conns: NatsConnection[] = [];
  const workers: Worker[] = [];
  let dispatcher: Dispatcher;

  async function startWorker(id: string): Promise<Worker> {
    const nc = await connect({ servers: nats.url });
    conns.push(nc);
    const names = buildNames("sluice");
    const topo = await ensureTopology(nc, names, { replicas: 1, storage: "file" });
    const w = new Worker({
      ...topo,
      nc,
      names,
      config: loadWorkerConfig({ WORKER_ID: id, HEARTBEAT_MS: "500" }),
      definitions,
      log: log.child({ service: "worker" }),
      observer: createExecutionObserver(definitions.map((d) => d.type)),
    });
    await w.start();
    workers.push(w);
    return w;
  }

  beforeAll(async () => {
    nats = await startTestNats();
    tracing = await startTracing(loadWorkerConfig({}).tracing, {
      spanProcessors: [new SimpleSpanProcessor({ exporter })],
    });
    const nc = await connect({ servers: nats.url });
    conns.push(nc);
    const names = buildNames("sluice");
    const config = loadDispatcherConfig({ DISPATCHER_ID: "d1", LEASE_TTL_MS: "2000", LEASE_RENEW_MS: "500" });
    const topo = await ensureTopology(nc, names, {
      replicas: 1,
      storage: "file",
      leaseTtlMs: config.leaseTtlMs,
    });
    dispatcher = new Dispatcher({ ...topo, nc, names, config, log: log.child({ service: "dispatcher" }) });
    await dispatcher.start();
    await startWorker("w1");
    enqueue = createEnqueueService(
      loadEnqueueConfig({
        NATS_URL: nats.url,
        HTTP_HOST: "127.0.0.1",
        HTTP_PORT: "0",
        AUTH_ENABLED: "false",
      }),
      log.child({ service: "enqueue" }),
    );
    url = `http://127.0.0.1:${await enqueue.start()}`;
    await enqueue.whenNatsReady();
    await waitFor(() => dispatcher.state === "leading", 10_000);
  });

  afterAll(async () => {
    await enqueue?.stop();
    for (const w of workers) await w.shutdown(0).catch(() => undefined);
    await dispatcher?.stop();
    for (const nc of conns) await nc.close().catch(() => undefined);
    await tracing?.shutdown();
    await nats?.cleanup();
  });

  async function post(body: unknown, headers: Record<string, string> = {}): Promise<string> {
    const res = await fetch(`${url}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(202);
    return ((await res.json()) as { id: string }).id;
  }

  async function stateOf(id: string): Promise<TaskState | undefined> {
    const res = await fetch(`${url}/v1/tasks/${id}`);
    return res.status === 200 ? ((await res.json()) as TaskState) : undefined;
  }

  /** The task's spans once `expect` of them have ended. */
  async function spansOf(id: string, names: Record<string, number>): Promise<Record<string, ReadableSpan[]>> {
    return waitFor(() => {
      const mine = exporter.getFinishedSpans().filter((s) => s.attributes["sluice.task.id"] === id);
      const by: Record<string, ReadableSpan[]> = {};
      for (const s of mine) by[s.name] = [...(by[s.name] ?? []), s];
      return Object.entries(names).every(([n, count]) => (by[n]?.length ?? 0) >= count) ? by : undefined;
    }, 15_000);
  }

  const ids = (s: ReadableSpan) => ({ trace: s.spanContext().traceId, span: s.spanContext().spanId });
  const parentOf = (s: ReadableSpan) => s.parentSpanContext?.spanId;

  it("links enqueue (child of the caller's traceparent), dispatch and run over HTTP", async () => {
    const id = await post({ type: "obs.echo", payload: { n: 1 } }, { traceparent: CALLER_TP });
    const spans = await spansOf(id, { "sluice.enqueue": 1, "sluice.dispatch": 1, "sluice.run": 1 });
    const [enq] = spans["sluice.enqueue"]!;
    const [disp] = spans["sluice.dispatch"]!;
    const [run] = spans["sluice.run"]!;
    for (const s of [enq!, disp!, run!]) expect(ids(s).trace).toBe(CALLER_TRACE);
    expect(parentOf(enq!)).toBe(CALLER_SPAN);
    expect(parentOf(disp!)).toBe(ids(enq!).span);
    expect(parentOf(run!)).toBe(ids(disp!).span);
    expect(enq!.attributes).toMatchObject({ "sluice.transport": "http", "sluice.task.type": "obs.echo" });
    expect(run!.attributes).toMatchObject({ "sluice.task.attempt": 1, "sluice.outcome": "completed" });
    // the handler's log line carries the task's trace id
    const line = await waitFor(() => logLines.find((l) => l.msg === "echo handled" && l.taskId === id));
    expect(line).toMatchObject({ type: "obs.echo", traceId: CALLER_TRACE });
  });

  it("starts a new trace at the enqueue span when the caller sends none", async () => {
    const id = await post({ type: "obs.echo", payload: { n: 2 } });
    const spans = await spansOf(id, { "sluice.enqueue": 1, "sluice.dispatch": 1, "sluice.run": 1 });
    const enq = spans["sluice.enqueue"]![0]!;
    expect(enq.parentSpanContext).toBeUndefined();
    expect(ids(enq).trace).not.toBe(CALLER_TRACE);
    expect(ids(spans["sluice.run"]![0]!).trace).toBe(ids(enq).trace);
    expect(parentOf(spans["sluice.run"]![0]!)).toBe(ids(spans["sluice.dispatch"]![0]!).span);
  });

  it("links a task enqueued over NATS request/reply to the requester's traceparent", async () => {
    const nc = conns[0]!;
    const h = newHeaders();
    h.set("traceparent", CALLER_TP);
    const m = await nc.request("sluice.enqueue", JSON.stringify({ type: "obs.echo", payload: { n: 3 } }), {
      timeout: 5_000,
      headers: h,
    });
    const { id } = m.json<{ id: string }>();
    const spans = await spansOf(id, { "sluice.enqueue": 1, "sluice.dispatch": 1, "sluice.run": 1 });
    const enq = spans["sluice.enqueue"]![0]!;
    expect(enq.attributes["sluice.transport"]).toBe("nats");
    expect(parentOf(enq)).toBe(CALLER_SPAN);
    expect(ids(spans["sluice.run"]![0]!).trace).toBe(CALLER_TRACE);
  });

  it("records a retry as new dispatch and run spans in the same trace", async () => {
    const id = await post({ type: "obs.flaky", payload: {} }, { traceparent: CALLER_TP });
    const spans = await spansOf(id, { "sluice.enqueue": 1, "sluice.dispatch": 2, "sluice.run": 2 });
    const all = Object.values(spans).flat();
    for (const s of all) expect(ids(s).trace).toBe(CALLER_TRACE);
    const runs = spans["sluice.run"]!.sort(
      (a, b) => Number(a.attributes["sluice.task.attempt"]) - Number(b.attributes["sluice.task.attempt"]),
    );
    expect(runs.map((r) => r.attributes["sluice.outcome"])).toEqual(["retrying", "completed"]);
    expect(runs[0]!.status.code).toBe(2); // ERROR: the failed attempt
    // each run hangs under its own dispatch
    const dispatchIds = spans["sluice.dispatch"]!.map((s) => ids(s).span);
    expect(dispatchIds).toContain(parentOf(runs[0]!));
    expect(dispatchIds).toContain(parentOf(runs[1]!));
    expect(parentOf(runs[0]!)).not.toBe(parentOf(runs[1]!));
    expect((await stateOf(id))?.status).toBe("completed");
  });

  it("keeps a task handed back by a stopping worker in its trace", async () => {
    const id = await post({ type: "obs.hold", payload: { tag: "handback" } }, { traceparent: CALLER_TP });
    await waitFor(() => release.has("handback"));
    const w1 = workers[0]!;
    const w2 = await startWorker("w2");
    release.delete("handback");
    await w1.shutdown(0); // aborts the running handler: the task goes back to the tasks stream
    await waitFor(() => release.get("handback"), 15_000);
    release.get("handback")!();
    const spans = await spansOf(id, { "sluice.enqueue": 1, "sluice.dispatch": 2, "sluice.run": 2 });
    for (const s of Object.values(spans).flat()) expect(ids(s).trace).toBe(CALLER_TRACE);
    expect(spans["sluice.run"]!.map((r) => r.attributes["sluice.outcome"]).sort()).toEqual([
      "completed",
      "redelivered",
    ]);
    await waitFor(async () => (await stateOf(id))?.status === "completed");
    expect(w2.state).toBe("running");
    await sleep(10);
  });
});
