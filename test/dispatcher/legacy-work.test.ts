import { setTimeout as sleep } from "node:timers/promises";
import {
  AckPolicy,
  DeliverPolicy,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { connect, headers, type NatsConnection, nanos } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LegacyWork, MOVE_BATCH } from "../../services/dispatcher/legacy-work.ts";
import { Headers } from "../../shared/headers.ts";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import type { TaskMessage } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

/**
 * A deployment upgraded from the version with a work stream: whatever that version's dispatcher had
 * published to `P_WORK` and no worker had finished is moved back to the tasks stream by the new
 * leader, each task once, and none still with a worker of the old version.
 */
describe("dispatcher - tasks left in the work stream of an earlier version", () => {
  const n = names("lw");
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: "debug" }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  let nats: TestNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let pub: AckedPublisher;

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc, n, { replicas: 1, storage: "file" });
    jsm = await jetstreamManager(nc);
    pub = new AckedPublisher(nc);
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  /** The work stream and a type's consumer, as the earlier version's topology created them. */
  async function oldTopology(types: { type: string; ackWaitMs: number }[]): Promise<void> {
    await jsm.streams.add({
      name: n.workStream,
      subjects: [n.workSubjectAll],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.File,
      num_replicas: 1,
      duplicate_window: nanos(120_000),
    });
    for (const { type, ackWaitMs } of types)
      await jsm.consumers.add(n.workStream, {
        durable_name: n.workConsumer(type),
        filter_subject: n.workSubject(type),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ackWaitMs),
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: 100_000,
        max_waiting: 4096,
      });
  }

  /** A task as the earlier dispatcher published it to the work stream; answers its work stream seq. */
  async function dispatched(type: string, id: string, priority: Priority, traced = false): Promise<number> {
    const msg: TaskMessage = { id, type, priority, payload: { id }, enqueuedAt: Date.now() - 1000 };
    const h = headers();
    h.set(Headers.dispatchedAt, String(Date.now()));
    if (traced) h.set(Headers.traceparent, `00-${"1".repeat(32)}-${"2".repeat(16)}-01`);
    const a = await pub.publish(n.workSubject(type), JSON.stringify(msg), { msgId: `${id}:7`, headers: h });
    return a.seq;
  }

  /** Every message on the tasks stream: id, subject, and the headers that matter here. */
  async function tasksStream() {
    const out: { id: string; subject: string; traceparent?: string; dispatchedAt?: string }[] = [];
    const { state } = await jsm.streams.info(n.tasksStream);
    for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(n.tasksStream, { seq }).catch(() => null);
      if (!m) continue;
      out.push({
        id: m.json<TaskMessage>().id,
        subject: m.subject,
        traceparent: m.header?.get(Headers.traceparent) || undefined,
        dispatchedAt: m.header?.get(Headers.dispatchedAt) || undefined,
      });
    }
    return out;
  }

  it("says so and stops when there is no work stream", async () => {
    const lw = new LegacyWork({ nc, jsm, names: n, log, publisher: pub });
    expect(await lw.pass()).toEqual({ moved: 0, stream: "absent", more: false });
  });

  it("moves every task back to its priority subject exactly once, never one an old worker still runs", async () => {
    // lw.a has more tasks than a batch; lw.b's consumer has a short ack wait (an old worker's tasks come
    // back soon after it dies); lw.c lost its consumer
    await oldTopology([
      { type: "lw.a", ackWaitMs: 30_000 },
      { type: "lw.b", ackWaitMs: 1_500 },
    ]);
    const want = new Map<string, Priority>();
    for (let i = 0; i < MOVE_BATCH + 44; i++) {
      const p = PRIORITIES[i % PRIORITIES.length]!;
      want.set(`a${i}`, p);
    }
    const seqs = new Map<string, number>();
    await Promise.all(
      [...want].map(async ([id, p]) => seqs.set(id, await dispatched("lw.a", id, p, id === "a1"))),
    );
    for (const id of ["b-done", "b-dead", "b1", "b2"]) await dispatched("lw.b", id, "high");
    want.set("b-dead", "high").set("b1", "high").set("b2", "high");
    for (const id of ["c1", "c2"]) await dispatched("lw.c", id, "low");
    want.set("c1", "low").set("c2", "low");
    // a leader that died after publishing a3's copy and before acking its work message
    await pub.publish(n.tasksSubject(want.get("a3")!, "lw.a"), JSON.stringify({ id: "a3", type: "lw.a" }), {
      msgId: `a3:w${seqs.get("a3")}`,
    });

    // two tasks with a worker of the old version: one it finishes, one it dies with
    const js = jetstream(nc);
    const oldWorker = await js.consumers.get(n.workStream, n.workConsumer("lw.b"));
    const running = [await oldWorker.next({ expires: 2000 }), await oldWorker.next({ expires: 2000 })];
    expect(running.map((m) => m?.json<TaskMessage>().id)).toEqual(["b-done", "b-dead"]);
    const alive = setInterval(() => {
      for (const m of running) m?.working();
    }, 300);

    const lw = new LegacyWork({ nc, jsm, names: n, log, publisher: pub });
    lw.start();
    try {
      // the rest moves at once (lw.a in full batches); the two running ones stay
      await waitFor(async () => (await jsm.streams.info(n.workStream)).state.messages === 2, 10_000);
      await sleep(2000);
      expect((await jsm.streams.info(n.workStream)).state.messages).toBe(2);
      let ids = (await tasksStream()).map((m) => m.id);
      expect(ids).not.toContain("b-done");
      expect(ids).not.toContain("b-dead");
      // the old worker finishes one and dies with the other: that one comes back after its ack wait
      await running[0]!.ackAck();
      clearInterval(alive);
      await waitFor(
        () => logs.some((l) => String(l.msg).startsWith("work stream of earlier versions empty")),
        20_000,
      );
      expect((await jsm.streams.info(n.workStream)).state.messages).toBe(0);

      const moved = await tasksStream();
      ids = moved.map((m) => m.id);
      expect(ids.length).toBe(want.size);
      expect(new Set(ids).size).toBe(want.size);
      for (const m of moved) {
        const type = m.id.startsWith("a") ? "lw.a" : m.id.startsWith("b") ? "lw.b" : "lw.c";
        expect(m.subject).toBe(n.tasksSubject(want.get(m.id)!, type));
        // the earlier dispatch's headers stay behind; trace context goes along
        expect(m.dispatchedAt).toBeUndefined();
      }
      expect(moved.find((m) => m.id === "a1")?.traceparent).toMatch(/^00-1{32}-/);
      expect(logs.filter((l) => String(l.msg).startsWith("work stream of earlier versions"))).toHaveLength(1);
      expect(logs.filter((l) => (l.level as number) >= 40)).toEqual([]);
      // the lost consumer was created as the earlier version did
      expect((await jsm.consumers.info(n.workStream, n.workConsumer("lw.c"))).config.filter_subject).toBe(
        n.workSubject("lw.c"),
      );
      // a later leader checks once and stops
      expect(await new LegacyWork({ nc, jsm, names: n, log, publisher: pub }).pass()).toEqual({
        moved: 0,
        stream: "empty",
        more: false,
      });
    } finally {
      clearInterval(alive);
      lw.stop();
    }
  });
});
