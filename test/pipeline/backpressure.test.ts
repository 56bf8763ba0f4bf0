import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Demand } from "../../services/dispatcher/demand.ts";
import { Headers } from "../../shared/headers.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { consumerSource, Puller } from "../../shared/nats/puller.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import type { TaskState } from "../../shared/task.ts";
import { waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

/**
 * A worker whose final writes back up (NATS slow or a state bucket without a leader) stops taking new
 * tasks: past `slots × 4` writes under way it gives each delivery back. When the writes go through
 * again it must ask for work again. It did not: every delivery it gave back had used up a unit of its
 * pull demand, which only a freed slot renews, and with nothing running no slot frees — the worker sat
 * idle beside a full queue: what the cluster failover test's stall looked like (docs/reliability.md,
 * Known issues 2). The bucket is deleted to make the writes fail (503, retried) and created again
 * before the worker's retries give up.
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
    // Only the worker, and in place of the dispatcher this test, which hands every task it holds to
    // the worker's pull requests as the dispatcher does (over core NATS, the tasks message's ack
    // subject in a header) but as soon as the worker asks: a dispatcher stops sending once its count
    // says the worker is full, which is not what is tested here. The gateway would bring the bucket
    // back within 5 s (it recreates missing streams), so it goes.
    expect(await stack.enqueue.stop("SIGTERM")).toBe(0);
    const log = createLogger({ service: "test", level: "silent", format: "json" });
    const held: Delivery[] = [];
    let handed = 0;
    const demand = new Demand(nc, n, log, () => handOn());
    const handOn = () => {
      while (held.length > 0) {
        const to = demand.take(type);
        if (to === undefined) return;
        const m = held.shift()!;
        const h = headers();
        h.set(Headers.dispatchedAt, String(Date.now()));
        h.set(Headers.ack, m.ackSubject);
        nc.publish(to.reply, m.data, { headers: h });
        handed++;
      }
    };
    // taking requests before the worker starts: its first ones are not lost
    demand.start();
    // two slots: at most 8 final writes under way before it gives deliveries back; it creates the
    // type's tasks consumers as it starts
    await stack.worker({ WORKER_TYPES: type, WORKER_CONCURRENCY: "2" });
    const jsm = await jetstreamManager(nc);
    // no state bucket: every final write is answered 503 (no stream), which the worker retries
    await jsm.streams.delete(`KV_${n.stateBucket}`);
    const pub = new AckedPublisher(nc);
    const ids = Array.from({ length: 40 }, (_, i) => `bp-${i}`);
    const tasks = new Puller(nc, consumerSource(n.tasksStream, n.tasksConsumer("normal", type)), {
      onMessage: (m) => {
        held.push(m);
        tasks.request(1); // what the worker gives back comes here again
        handOn();
      },
      log,
      expiresMs: 5_000,
    });
    // held messages stay ours (the worker set the consumers' ack wait; a third of the default)
    const keepalive = setInterval(() => {
      for (const m of held) m.working();
    }, 3_000);
    try {
      const enqueuedAt = Date.now();
      await Promise.all(
        ids.map((id, i) =>
          pub.publish(
            n.tasksSubject("normal", type),
            JSON.stringify({ id, type, priority: "normal", payload: { n: i }, enqueuedAt }),
            { msgId: id },
          ),
        ),
      );
      tasks.request(ids.length);
      // the worker takes 8 (its write backlog is then full) and gives the next ones back: 10 hand-offs
      // at least, its two units of demand spent on the two it gave back
      await waitFor(() => handed >= 10 || undefined, 15_000).catch((err) => {
        throw new Error(`${handed} handed on: ${String(err)}`);
      });
      // and asks for nothing more while its writes are stuck
      await new Promise((r) => setTimeout(r, 1_000));
      expect(handed).toBe(10);
      expect(demand.outstanding(type)).toBe(0);
      // the bucket is back before the retries give up: the backed-up writes go through
      await ensureTopology(nc, n, { replicas: 1, storage: "file" });
      const kv = await new Kvm(nc).open(n.stateBucket);
      const done = async () => {
        let k = 0;
        for (const id of ids) if ((await kv.get(id))?.json<TaskState>().status === "completed") k++;
        return k;
      };
      await waitFor(async () => ((await done()) === ids.length ? true : undefined), 30_000, 250).catch(
        async (err) => {
          throw new Error(`${await done()} of ${ids.length} completed (${handed} handed on): ${String(err)}`);
        },
      );
      // each task's message left the tasks stream with the worker's ack, after its outcome was stored
      await waitFor(
        async () => (await jsm.streams.info(n.tasksStream)).state.messages === 0 || undefined,
        5_000,
      );
    } finally {
      clearInterval(keepalive);
      tasks.close();
      demand.stop();
      pub.close();
    }
  });
});
