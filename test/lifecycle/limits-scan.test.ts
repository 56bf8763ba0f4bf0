import { setTimeout as sleep } from "node:timers/promises";
import { jetstream } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DispatchLimits } from "../../services/dispatcher/limits/dispatch-limits.ts";
import { scanInFlightKeys } from "../../services/dispatcher/limits/in-flight-keys.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { ensureTopology, ensureTypeConsumers, type Topology } from "../../shared/nats/topology.ts";
import { QueueConfigs, updateQueueConfig } from "../../shared/queues.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

// In-process building blocks against a real nats-server: reading running keys back from the work
// stream (what a new leader does), the queue config watch, and a plain slots notice forcing a re-read.

const log = createLogger({ service: "test", level: "silent", format: "json" });
const n = names("sluice");
const TYPE = "scan.t";

describe("limits - running keys and configs from NATS", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let topo: Topology;
  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    topo = await ensureTopology(nc, n, { replicas: 1, storage: "memory" });
    await ensureTypeConsumers(topo.jsm, n, TYPE);
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.cleanup();
  });

  it("counts running tasks per key from the work stream, skipping acked ones and other types", async () => {
    const js = jetstream(nc);
    const body = (id: string, key?: string) =>
      JSON.stringify({ id, type: TYPE, enqueuedAt: 1, ...(key ? { concurrencyKey: key } : {}) });
    for (const [id, key] of [
      ["1", "a"],
      ["2", "a"],
      ["3", "b"],
      ["4", undefined],
      ["5", "a"],
    ] as const)
      await js.publish(n.workSubject(TYPE), body(id, key));
    await ensureTypeConsumers(topo.jsm, n, "scan.other");
    await js.publish(n.workSubject("scan.other"), body("x", "a"));
    // a worker takes and finishes task 1: acked, so gone from the work queue
    const c = await js.consumers.get(n.workStream, n.workConsumer(TYPE));
    const m = await c.next({ expires: 2000 });
    expect(m?.json<{ id: string }>().id).toBe("1");
    await m!.ackAck();

    const counts = await scanInFlightKeys(topo.jsm, n, TYPE);
    expect(Object.fromEntries(counts!)).toEqual({ a: 2, b: 1 });
    expect(await scanInFlightKeys(topo.jsm, n, TYPE, 2)).toBeUndefined();
  });

  it("sees a config change on every watcher and rebuilds key counts after a plain slots notice", async () => {
    const other = new QueueConfigs(topo.queues, { log });
    await other.start();
    const limits = new DispatchLimits({ nc, jsm: topo.jsm, names: n, log });
    await limits.start();
    limits.lead();
    try {
      let wakes = 0;
      const gate = limits.gate(TYPE, () => wakes++);
      const at = Date.now();
      await updateQueueConfig(topo.queues, TYPE, { keyConcurrency: 2 });
      await waitFor(() => other.get(TYPE).keyConcurrency === 2 && gate.config.keyConcurrency === 2, 1000, 5);
      expect(Date.now() - at).toBeLessThan(1000);
      // turning keyConcurrency on reads what runs now (a: 2, b: 1 from the previous test)
      await waitFor(() => gate.keyCounts().get("a") === 2, 5000, 10);
      expect(Object.fromEntries(gate.keyCounts())).toEqual({ a: 2, b: 1 });

      // a worker finishes task 2 and says only "1 freed": the gate re-reads the stream
      const js = jetstream(nc);
      const c = await js.consumers.get(n.workStream, n.workConsumer(TYPE));
      const m = await c.next({ expires: 2000 });
      await m!.ackAck();
      gate.freed({ n: 1 });
      await waitFor(() => gate.keyCounts().get("a") === 1, 5000, 10);
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
      limits.stop();
      other.stop();
    }
  });
});
