import { readFileSync } from "node:fs";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Headers } from "../../shared/headers.ts";
import { names } from "../../shared/names.ts";
import { freePort } from "../../shared/nats/local-server.ts";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";
import {
  exportedNames,
  parseSamples,
  repoRoot,
  type Sample,
  sumOf,
  usedMetricNames,
} from "./support/promql.ts";

// A running stack (nats-server and the three services as processes, untraced) under a known workload:
// the counters must say exactly what was done, every metric the dashboard and the alert rules query
// must be one the services really export, and no label or log line may carry a task id or payload.

/**
 * Metrics of prometheus-nats-exporter (-jsz=all -prefix=nats, as compose and the NATS Helm chart run
 * it; without -prefix they are named jetstream_*): they come from the exporter, not from Sluice, so a
 * scrape of the services cannot show them. Names from its collector/jsz.go.
 */
const NATS_EXPORTER_METRICS = new Set([
  "nats_stream_total_messages",
  "nats_consumer_num_pending",
  "nats_consumer_num_ack_pending",
  "nats_consumer_num_redelivered",
]);

const SENTINEL = "do-not-log-this-payload-7f3a";
const TRACEPARENT = "00-5b8aa5a2d2c872e8321cf37308d69df2-051581bf3cb55c13-01";

describe("observability - metrics of a running stack", () => {
  let stack: Stack;
  let nc: NatsConnection;
  let scrape: { enqueue: string; enqueuePort: string; dispatcher: string; standby: string; worker: string };
  const ids: string[] = [];
  const seenHeaders: { subject: string; traceparent: string }[] = [];
  let ports: { enqueue: number; dispatcher: number; standby: number; worker: number };
  const procs: ServiceProcess[] = [];

  const get = async (url: string) => {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    expect(res.status, url).toBe(200);
    return res.text();
  };
  const scrapeAll = async () => {
    const a = await get(`http://127.0.0.1:${ports.dispatcher}/metrics`);
    const b = await get(`http://127.0.0.1:${ports.standby}/metrics`);
    // whichever replica won the lease is "dispatcher", the other "standby"
    const aLeads = sumOf(parseSamples(a), "sluice_dispatcher_leader") === 1;
    return {
      enqueue: await get(`${stack.url}/metrics`),
      enqueuePort: await get(`http://127.0.0.1:${ports.enqueue}/metrics`),
      dispatcher: aLeads ? a : b,
      standby: aLeads ? b : a,
      worker: await get(`http://127.0.0.1:${ports.worker}/metrics`),
    };
  };

  beforeAll(async () => {
    ports = {
      enqueue: await freePort(),
      dispatcher: await freePort(),
      standby: await freePort(),
      worker: await freePort(),
    };
    const debug = { LOG_LEVEL: "debug", METRICS_HOST: "127.0.0.1" };
    stack = await startStack({ enqueueEnv: { ...debug, METRICS_PORT: String(ports.enqueue) } });
    for (const port of [ports.dispatcher, ports.standby])
      procs.push(await stack.dispatcher({ ...debug, METRICS_PORT: String(port), METRICS_SAMPLE_MS: "200" }));
    const worker = await stack.worker({
      ...debug,
      METRICS_PORT: String(ports.worker),
      WORKER_TYPES: "test.record,test.fail,test.sleep",
    });
    procs.push(worker);
    nc = await connect({ servers: stack.nats.url });
    nc.subscribe("sluice.tasks.>", {
      callback: (_e, m) => {
        const tp = m.headers?.get("traceparent");
        if (tp) seenHeaders.push({ subject: m.subject, traceparent: tp });
      },
    });
    // the dispatcher hands each task to the inbox of a worker's pull request, with the ack subject of
    // its tasks message in the reply (or a header, for older workers): recorded under that tasks
    // consumer's name
    nc.subscribe("_INBOX.>", {
      callback: (_e, m) => {
        const ack = m.reply?.startsWith("_SLUICE_ACK.") ? m.reply : m.headers?.get(Headers.ack);
        const tp = m.headers?.get("traceparent");
        if (!ack || !tp) return;
        const consumer = ack.split(".").find((t) => t.startsWith("d_"));
        seenHeaders.push({ subject: `handed on from ${consumer}`, traceparent: tp });
      },
    });

    // the workload: 101 tasks that complete, 4 that fail, 1 that times out, 1 duplicate, 6 refusals
    const posts: Promise<{ status: number; body: Record<string, unknown> }>[] = [];
    for (let n = 0; n < 100; n++) {
      posts.push(
        stack.post({
          type: "test.record",
          priority: n < 30 ? "high" : "normal",
          payload: { n, note: SENTINEL },
        }),
      );
    }
    for (let i = 0; i < 4; i++)
      posts.push(stack.post({ type: "test.fail", payload: { message: `boom ${i}` } }));
    posts.push(stack.post({ type: "test.sleep", payload: { ms: 3_000 }, timeoutMs: 100, maxAttempts: 1 }));
    const results = await Promise.all(posts);
    for (const r of results) {
      expect(r.status).toBe(202);
      ids.push(r.body.id as string);
    }
    const once = { type: "test.record", priority: "low", payload: { n: 999 }, idempotencyKey: "metrics-k1" };
    const first = await stack.post(once);
    const again = await stack.post(once);
    expect([first.status, again.status]).toEqual([202, 202]);
    expect(again.body.duplicate).toBe(true);
    ids.push(first.body.id as string);
    for (let i = 0; i < 3; i++)
      expect((await stack.post({ type: "Not A Type!", payload: {} })).status).toBe(400);
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`${stack.url}/v1/tasks`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{not json",
      });
      expect(res.status).toBe(400);
    }
    const bad = await nc.request("sluice.enqueue", "{nope", { timeout: 5_000 });
    expect(bad.json<{ error: { code: string } }>().error.code).toBe("invalid_json");
    // an untraced deployment still carries a caller's trace context to the worker
    const traced = await fetch(`${stack.url}/v1/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json", traceparent: TRACEPARENT },
      body: JSON.stringify({ type: "test.record", priority: "urgent", payload: { n: 1000 } }),
    });
    expect(traced.status).toBe(202);
    ids.push(((await traced.json()) as { id: string }).id);
    await Promise.all(ids.map((id) => stack.waitForStatus(id, ["completed", "failed", "timed_out"], 30_000)));
    // the worker counts an attempt once its outcome is stored; the dispatcher samples every 200 ms
    scrape = await waitFor(async () => {
      const s = await scrapeAll();
      const w = parseSamples(s.worker);
      const d = parseSamples(s.dispatcher);
      const done =
        sumOf(w, "sluice_tasks_finished_total") === 107 && sumOf(d, "sluice_dispatcher_leader") === 1;
      const drained = sumOf(d, "sluice_queue_depth", { type: "test.record" }) === 0;
      return done && drained && d.some((x) => x.name === "sluice_queue_depth") ? s : undefined;
    }, 20_000);
  });

  afterAll(async () => {
    await nc?.close();
    await stack?.cleanup();
  });

  const samples = (text: string): Sample[] => parseSamples(text);

  it("the gateway counts what it accepted, deduplicated and refused", () => {
    const e = samples(scrape.enqueue);
    expect(sumOf(e, "sluice_tasks_accepted_total", { type: "test.record", priority: "high" })).toBe(30);
    expect(sumOf(e, "sluice_tasks_accepted_total", { type: "test.record", priority: "normal" })).toBe(70);
    expect(sumOf(e, "sluice_tasks_accepted_total", { type: "test.record", priority: "low" })).toBe(1);
    expect(sumOf(e, "sluice_tasks_accepted_total", { type: "test.record", priority: "urgent" })).toBe(1);
    expect(sumOf(e, "sluice_tasks_accepted_total", { type: "test.fail" })).toBe(4);
    expect(sumOf(e, "sluice_tasks_accepted_total")).toBe(107);
    expect(sumOf(e, "sluice_tasks_deduplicated_total", { type: "test.record" })).toBe(1);
    expect(sumOf(e, "sluice_tasks_rejected_total", { reason: "invalid_task_type" })).toBe(3);
    expect(sumOf(e, "sluice_tasks_rejected_total", { reason: "invalid_json" })).toBe(3);
    expect(
      e.filter((s) => s.name === "sluice_tasks_rejected_total").every((s) => !("type" in s.labels)),
    ).toBe(true);
  });

  it("the gateway times requests by route pattern, method and status", () => {
    const e = samples(scrape.enqueue);
    const count = (labels: Record<string, string>) =>
      sumOf(e, "sluice_http_request_duration_seconds_count", labels);
    expect(count({ route: "/v1/tasks", method: "POST", status: "202" })).toBe(108);
    expect(count({ route: "/v1/tasks", method: "POST", status: "400" })).toBe(5);
    // waitForStatus polls GET /v1/tasks/:id: one series for all of them
    expect(count({ route: "/v1/tasks/:id", method: "GET", status: "200" })).toBeGreaterThanOrEqual(
      ids.length,
    );
    expect(
      e.filter((s) => s.name === "sluice_http_request_duration_seconds_count").map((s) => s.labels.route),
    ).not.toContain(undefined);
  });

  it("the dispatcher counts dispatches per priority and reports leadership, workers and an empty queue", () => {
    const d = samples(scrape.dispatcher);
    expect(sumOf(d, "sluice_dispatched_total", { type: "test.record", priority: "high" })).toBe(30);
    expect(sumOf(d, "sluice_dispatched_total", { type: "test.record", priority: "normal" })).toBe(70);
    expect(sumOf(d, "sluice_dispatched_total")).toBe(107);
    expect(sumOf(d, "sluice_dispatch_wait_seconds_count")).toBe(107);
    expect(sumOf(d, "sluice_dispatcher_leader")).toBe(1);
    expect(sumOf(d, "sluice_workers_live", { type: "test.record" })).toBe(1);
    expect(sumOf(d, "sluice_worker_slots_total", { type: "test.record" })).toBe(20);
    // depth per priority is exported (all five) and back at zero
    const depth = d.filter((s) => s.name === "sluice_queue_depth" && s.labels.type === "test.record");
    expect(depth.map((s) => s.labels.priority).sort()).toEqual(["bulk", "high", "low", "normal", "urgent"]);
    expect(depth.every((s) => s.value === 0)).toBe(true);
    // lifecycle series exist at zero for every known type before anything happened to them
    expect(
      d.find((s) => s.name === "sluice_dead_letters_total" && s.labels.type === "test.record")?.value,
    ).toBe(0);
    expect(
      d.filter((s) => s.name === "sluice_throttled_total" && s.labels.type === "test.record"),
    ).toHaveLength(3);
    expect(d.find((s) => s.name === "sluice_scheduled_tasks" && s.labels.type === "test.record")?.value).toBe(
      0,
    );
    expect(d.find((s) => s.name === "sluice_retrying_tasks" && s.labels.type === "test.record")?.value).toBe(
      0,
    );
  });

  it("a standby dispatcher reports leader 0, no queue depth, and the registry it watches", () => {
    const s = samples(scrape.standby);
    expect(sumOf(s, "sluice_dispatcher_leader")).toBe(0);
    expect(s.filter((x) => x.name === "sluice_queue_depth")).toEqual([]);
    expect(sumOf(s, "sluice_dispatched_total")).toBe(0);
    expect(sumOf(s, "sluice_workers_live", { type: "test.record" })).toBe(1);
  });

  it("the worker counts every attempt by outcome, with its run and wait times", () => {
    const w = samples(scrape.worker);
    expect(sumOf(w, "sluice_tasks_started_total", { type: "test.record" })).toBe(102);
    expect(sumOf(w, "sluice_tasks_finished_total", { type: "test.record", outcome: "completed" })).toBe(102);
    expect(sumOf(w, "sluice_tasks_finished_total", { type: "test.fail", outcome: "failed" })).toBe(4);
    expect(sumOf(w, "sluice_tasks_finished_total", { type: "test.sleep", outcome: "timed_out" })).toBe(1);
    expect(sumOf(w, "sluice_tasks_finished_total")).toBe(107);
    expect(sumOf(w, "sluice_task_run_seconds_count", { type: "test.record", outcome: "completed" })).toBe(
      102,
    );
    expect(sumOf(w, "sluice_task_wait_seconds_count")).toBe(107);
    expect(
      sumOf(w, "sluice_task_run_seconds_bucket", { type: "test.sleep", outcome: "timed_out", le: "0.05" }),
    ).toBe(0);
    expect(sumOf(w, "sluice_worker_slots", { type: "test.record" })).toBe(20);
    expect(sumOf(w, "sluice_worker_slots_busy", { type: "test.record" })).toBe(0);
    expect(sumOf(w, "sluice_worker_heartbeats_total")).toBeGreaterThan(0);
  });

  it("every process exports the process defaults with its service label", () => {
    for (const [svc, text] of [
      ["enqueue", scrape.enqueue],
      ["dispatcher", scrape.dispatcher],
      ["dispatcher", scrape.standby],
      ["worker", scrape.worker],
    ] as const) {
      const s = samples(text);
      for (const name of [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "nodejs_eventloop_lag_p99_seconds",
      ])
        expect(s.find((x) => x.name === name)?.labels.service, `${svc} ${name}`).toBe(svc);
      expect(s.filter((x) => x.name.startsWith("sluice_")).every((x) => x.labels.service === svc)).toBe(true);
    }
  });

  it("the gateway's metrics port serves the same metrics as its HTTP API", () => {
    expect([...exportedNames(scrape.enqueuePort)].sort()).toEqual([...exportedNames(scrape.enqueue)].sort());
  });

  it("no label value is a task id or payload content", () => {
    const all = [scrape.enqueue, scrape.dispatcher, scrape.worker].flatMap(samples);
    const values = new Set(all.flatMap((s) => Object.values(s.labels)));
    for (const id of ids) expect(values.has(id), id).toBe(false);
    for (const v of values) expect(v).not.toContain(SENTINEL);
  });

  it("every metric the dashboard and the alert rules query is exported by a service", () => {
    const exported = new Set(
      [scrape.enqueue, scrape.dispatcher, scrape.worker].flatMap((t) => [...exportedNames(t)]),
    );
    const used = usedMetricNames();
    const missing = [...used]
      .filter(([n]) => !exported.has(n) && !NATS_EXPORTER_METRICS.has(n))
      .map(([n, where]) => `${n} (used in ${where})`);
    expect(missing).toEqual([]);
    // the exemption list is exact: only exporter metrics, and each one used somewhere
    for (const n of NATS_EXPORTER_METRICS) {
      expect(used.has(n), `${n} is exempt but unused`).toBe(true);
      expect(exported.has(n)).toBe(false);
    }
    expect(used.size).toBeGreaterThan(20);
  });

  it("docs/observability.md documents exactly the sluice_* metrics the services export", () => {
    const doc = readFileSync(`${repoRoot}/docs/observability.md`, "utf8");
    const documented = new Set([...doc.matchAll(/^\| `(sluice_[a-z0-9_]+)`/gm)].map((m) => m[1]!));
    const exported = new Set(
      [scrape.enqueue, scrape.dispatcher, scrape.worker].flatMap((t) =>
        [...t.matchAll(/^# TYPE (sluice_\S+) /gm)].map((m) => m[1]!),
      ),
    );
    expect(
      [...exported].filter((n) => !documented.has(n)),
      "exported, not documented",
    ).toEqual([]);
    expect(
      [...documented].filter((n) => !exported.has(n)),
      "documented, not exported",
    ).toEqual([]);
  });

  it("untraced services pass a caller's traceparent from the request to the tasks message and the worker", () => {
    const subjects = seenHeaders.filter((h) => h.traceparent === TRACEPARENT).map((h) => h.subject);
    expect(subjects).toContain("sluice.tasks.urgent.test.record");
    expect(subjects).toContain(`handed on from ${names("sluice").tasksConsumer("urgent", "test.record")}`);
    // nothing invented a trace context for the untraced requests
    expect(seenHeaders.every((h) => h.traceparent === TRACEPARENT)).toBe(true);
  });

  it("no service logged a payload", () => {
    for (const p of [stack.enqueue, ...procs])
      expect(
        p.logs.some((l) => l.msg === "ready"),
        p.name,
      ).toBe(true);
    const lines = [stack.enqueue, ...procs].flatMap((p) => p.logs);
    expect(lines.filter((l) => JSON.stringify(l).includes(SENTINEL))).toEqual([]);
  });
});
