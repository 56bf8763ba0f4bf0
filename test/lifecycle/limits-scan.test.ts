import { setTimeout as sleep } from "node:timers/promises";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { loadConfig as loadDispatcherConfig } from "../../services/dispatcher/config.ts";
import { Dispatcher } from "../../services/dispatcher/dispatcher.ts";
import { DispatchLimits } from "../../services/dispatcher/limits/dispatch-limits.ts";
import { REPORT_MARGIN_MS, reportedKeys } from "../../services/dispatcher/limits/in-flight-keys.ts";
import { WorkerRegistry } from "../../services/dispatcher/registry.ts";
import { loadConfig as loadWorkerConfig } from "../../services/worker/config.ts";
import { defineTask } from "../../services/worker/sdk.ts";
import { Worker } from "../../services/worker/worker.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { ensureTopology, type Topology } from "../../shared/nats/topology.ts";
import { QueueConfigs, updateQueueConfig } from "../../shared/queues.ts";
import type { TaskMessage } from "../../shared/task.ts";
import type { WorkerRecord } from "../../shared/workers.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

// Running tasks per concurrency key come back to a new leader from the workers' registration records:
// each worker reports, every heartbeat, what it runs per key, and a rebuild waits for a report written
// after it began. In-process dispatchers and a worker against a real nats-server.

const log = createLogger({ service: "test", level: "silent", format: "json" });
const n = names("sluice");

describe("limits - running keys rebuilt from the workers' reports", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let topo: Topology;
  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    topo = await ensureTopology(nc, n, { replicas: 1, storage: "memory", leaseTtlMs: 2000 });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.cleanup();
  });

  /** A record as a worker writes it; `keys` only where given. */
  const record = (
    id: string,
    o: Partial<WorkerRecord> & { keys?: Record<string, number> },
  ): WorkerRecord => ({
    id,
    hostname: "h",
    pid: 1,
    version: "t",
    state: o.state ?? "running",
    startedAt: 0,
    heartbeatAt: o.heartbeatAt ?? Date.now(),
    heartbeatMs: 500,
    types: o.types ?? { "rep.t": { slots: 4, busy: 1, ...(o.keys ? { keys: o.keys } : {}) } },
  });
  const put = (w: WorkerRecord) => topo.workers.put(w.id, JSON.stringify(w));

  it("sums live and draining workers' keys once every live worker reported after the rebuild began", async () => {
    const registry = new WorkerRegistry(topo.workers, log, () => undefined);
    await put(record("live", { keys: { a: 1 } }));
    await put(record("draining", { state: "draining", keys: { a: 1, b: 2 } }));
    // dead (no heartbeat for far longer than three intervals): its tasks come back through their ack wait
    await put(record("dead", { heartbeatAt: Date.now() - 60_000, keys: { a: 5 } }));
    await put(record("other", { types: { "rep.other": { slots: 1, busy: 1, keys: { a: 7 } } } }));
    await registry.start(nc);
    try {
      await waitFor(() => registry.all().length === 4, 5000, 10);
      const at = Date.now();
      let counts: Map<string, number> | undefined;
      void reportedKeys(registry, "rep.t").then((c) => {
        counts = c;
      });
      // the live worker's record was written before the rebuild began: a task handed on just before
      // may be missing from it, so the rebuild waits for its next one
      await sleep(REPORT_MARGIN_MS + 300);
      expect(counts).toBeUndefined();
      await put(record("live", { keys: { a: 2 } }));
      await waitFor(() => counts, 2000, 10);
      expect(Date.now() - at).toBeGreaterThanOrEqual(REPORT_MARGIN_MS);
      expect(Object.fromEntries(counts!)).toEqual({ a: 3, b: 2 });

      // a rebuild that is no longer wanted stops waiting
      const ac = new AbortController();
      const aborted = reportedKeys(registry, "rep.t", ac.signal);
      ac.abort(new Error("closed"));
      await expect(aborted).rejects.toThrow("closed");
    } finally {
      registry.stop();
      for (const id of ["live", "draining", "dead", "other"]) await topo.workers.delete(id);
    }
  });

  it("sees a config change on every watcher, lowers key counts on a plain slots notice, and holds a throttled type", async () => {
    const TYPE = "rep.t";
    const registry = new WorkerRegistry(topo.workers, log, () => undefined);
    await registry.start(nc);
    const other = new QueueConfigs(topo.queues, { log });
    await other.start();
    const limits = new DispatchLimits({ nc, names: n, log, keyReports: registry });
    await limits.start();
    limits.lead();
    // a worker that heartbeats every 200 ms, running a: 2, b: 1
    let keys: Record<string, number> = { a: 2, b: 1 };
    const beat = setInterval(() => void put({ ...record("w", { keys }), heartbeatMs: 200 }), 200);
    try {
      let wakes = 0;
      const gate = limits.gate(TYPE, () => wakes++);
      const at = Date.now();
      await updateQueueConfig(topo.queues, TYPE, { keyConcurrency: 2 });
      await waitFor(() => other.get(TYPE).keyConcurrency === 2 && gate.config.keyConcurrency === 2, 1000, 5);
      expect(Date.now() - at).toBeLessThan(1000);
      // turning keyConcurrency on rebuilds what runs now from the reports
      await waitFor(() => gate.keyCounts().get("a") === 2, 5000, 10);
      expect(Object.fromEntries(gate.keyCounts())).toEqual({ a: 2, b: 1 });

      // a worker finishes an `a` task and says only "1 freed": the counts are rebuilt and lowered
      keys = { a: 1, b: 1 };
      gate.freed({ n: 1 });
      await waitFor(() => gate.keyCounts().get("a") === 1, 5000, 10);
      expect(Object.fromEntries(gate.keyCounts())).toEqual({ a: 1, b: 1 });
      expect(wakes).toBeGreaterThan(0);

      // a handler's throttle notice reaches the leader's gate
      nc.publish(n.throttleSubject(TYPE), JSON.stringify({ retryAfterMs: 300 }));
      await nc.flush();
      await sleep(50);
      const held = [[], [], [{ data: new TextEncoder().encode("{}"), storedAtMs: Date.now() }], [], []];
      expect(gate.pick(held as never)).toBeUndefined();
      await sleep(350);
      expect(gate.pick(held as never)).toEqual([2, 0]);
    } finally {
      clearInterval(beat);
      limits.stop();
      other.stop();
      registry.stop();
      await topo.workers.delete("w");
    }
  });

  it("after a failover the new leader counts a tenant's running tasks and admits no more of it", async () => {
    const TYPE = "rep.failover";
    await updateQueueConfig(topo.queues, TYPE, { keyConcurrency: 2 });
    const release = new Map<string, () => void>();
    const started: string[] = [];
    const finished: string[] = [];
    const worker = new Worker({
      ...topo,
      nc,
      names: n,
      config: loadWorkerConfig({ WORKER_ID: "wf", HEARTBEAT_MS: "300" }),
      definitions: [
        defineTask({
          type: TYPE,
          concurrency: 6,
          payload: z.unknown(),
          handler: async (_p, ctx) => {
            started.push(ctx.id);
            await new Promise<void>((r) => {
              release.set(ctx.id, r);
              ctx.signal.addEventListener("abort", () => r());
            });
            finished.push(ctx.id);
            return null;
          },
        }),
      ],
      log,
    });
    const dispatcher = (id: string) =>
      new Dispatcher({
        ...topo,
        nc,
        names: n,
        config: loadDispatcherConfig({ DISPATCHER_ID: id, LEASE_TTL_MS: "2000", LEASE_RENEW_MS: "500" }),
        log,
      });
    const js = jetstream(nc);
    const enqueue = (id: string, concurrencyKey?: string) => {
      const msg: TaskMessage = { id, type: TYPE, priority: "normal", payload: null, enqueuedAt: Date.now() };
      if (concurrencyKey) msg.concurrencyKey = concurrencyKey;
      return js.publish(n.tasksSubject("normal", TYPE), JSON.stringify(msg), { msgID: id });
    };
    const first = dispatcher("d1");
    let second: Dispatcher | undefined;
    await worker.start();
    await first.start();
    try {
      await waitFor(() => first.state === "leading", 10_000);
      for (const [id, key] of [
        ["a1", "a"],
        ["a2", "a"],
        ["b1", "b"],
        ["x1", undefined],
      ] as const)
        await enqueue(id, key);
      await waitFor(() => started.length === 4, 10_000);
      // the worker reports them per key (the task without a key is not in it)
      await waitFor(async () => {
        const w = (await topo.workers.get("wf"))?.json<WorkerRecord>();
        return JSON.stringify(w?.types[TYPE]?.keys) === JSON.stringify({ a: 2, b: 1 });
      }, 5000);

      // the leader goes; the next one has none of its counts
      second = dispatcher("d2");
      await second.start();
      await first.stop();
      await waitFor(() => second!.state === "leading", 10_000);
      const gate = await waitFor(() => second!.limits.gateOf(TYPE), 10_000);
      await waitFor(() => gate.keyCounts().get("a") === 2, 10_000);
      expect(Object.fromEntries(gate.keyCounts())).toEqual({ a: 2, b: 1 });

      // `a` is at its limit: a third `a` waits while a task of another tenant goes
      await enqueue("a3", "a");
      await enqueue("c1", "c");
      await waitFor(() => started.includes("c1"), 10_000);
      await sleep(500);
      expect(started).not.toContain("a3");
      // an `a` ends: the slot notice names its key, and a3 may run
      release.get("a1")!();
      await waitFor(() => started.includes("a3"), 10_000);
      expect(finished).toContain("a1");
    } finally {
      for (const r of release.values()) r();
      await worker.shutdown(1000);
      await second?.stop();
      await first.stop();
    }
  });
});
