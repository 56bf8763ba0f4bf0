import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import type { TaskState } from "../../shared/task.ts";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/**
 * A worker whose final writes back up (NATS slow or a state bucket without a leader) stops taking new
 * tasks: past `slots × 4` writes under way it gives each delivery back. When the writes go through
 * again it must ask for work again. It did not: every delivery it gave back had used up a unit of its
 * pull demand, which only a freed slot renews, and with nothing running no slot frees — the worker sat
 * idle beside a full work stream: what the cluster failover test's stall looked like
 * (docs/reliability.md, Known issues 2). The bucket is deleted to make the writes fail (503, retried)
 * and created again before the worker's retries give up.
 */
describe("pipeline - a worker whose final writes backed up", () => {
  let stack: Stack;
  let nc: NatsConnection;
  const n = names("sluice");
  const type = "test.record";

  beforeAll(async () => {
    stack = await startStack();
    nc = await connect({ servers: stack.nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await stack?.cleanup();
  });

  it("asks for work again once its writes go through, and completes every task", async () => {
    // Only the worker: the tasks go straight to the work stream as a dispatcher would send them (a
    // dispatcher stops sending once its count says the worker is full, which is not what is tested
    // here), and the gateway would bring the bucket back within 5 s (it recreates missing streams).
    expect(await stack.enqueue.stop("SIGTERM")).toBe(0);
    // two slots: at most 8 final writes under way before it gives deliveries back
    await stack.worker({ WORKER_TYPES: type, WORKER_CONCURRENCY: "2" });
    const jsm = await jetstreamManager(nc);
    // no state bucket: every final write is answered 503 (no stream), which the worker retries
    await jsm.streams.delete(`KV_${n.stateBucket}`);
    const pub = new AckedPublisher(nc);
    const ids = Array.from({ length: 40 }, (_, i) => `bp-${i}`);
    try {
      const enqueuedAt = Date.now();
      await Promise.all(
        ids.map((id, i) =>
          pub.publish(
            n.workSubject(type),
            JSON.stringify({ id, type, priority: "normal", payload: { n: i }, enqueuedAt }),
            { msgId: `${id}:1` },
          ),
        ),
      );
      // the worker takes 8 (its write backlog is then full) and gives the next ones back: 10 deliveries
      // at least, its two units of demand spent on the two it gave back
      let seen = 0;
      await waitFor(async () => {
        const ci = await jsm.consumers.info(n.workStream, n.workConsumer(type));
        seen = ci.delivered.consumer_seq;
        return seen >= 10 || undefined;
      }, 15_000).catch((err) => {
        throw new Error(`${seen} deliveries: ${String(err)}`);
      });
      // and asks for nothing more while its writes are stuck
      await new Promise((r) => setTimeout(r, 1_000));
      const held = await jsm.consumers.info(n.workStream, n.workConsumer(type));
      expect(held.delivered.consumer_seq).toBe(10);
      // the bucket is back before the retries give up: the backed-up writes go through
      await ensureTopology(nc, n, { replicas: 1, storage: "file" });
    } finally {
      pub.close();
    }
    const kv = await new Kvm(nc).open(n.stateBucket);
    const done = async () => {
      let k = 0;
      for (const id of ids) if ((await kv.get(id))?.json<TaskState>().status === "completed") k++;
      return k;
    };
    await waitFor(async () => ((await done()) === ids.length ? true : undefined), 30_000, 250).catch(
      async (err) => {
        throw new Error(`${await done()} of ${ids.length} completed: ${String(err)}`);
      },
    );
  });
});
