import { AckPolicy, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LegacyWork } from "../../services/dispatcher/legacy-work.ts";
import { RetentionSweeper } from "../../services/dispatcher/retention.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import type { Priority } from "../../shared/priority.ts";
import { initialState, type TaskState } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";

/**
 * A `queued` record whose task message never reached the tasks stream (the gateway stopped between its
 * two writes, and the caller retried without an idempotency key) is ended by the retention sweep as
 * `failed` / `enqueue_incomplete`; a record whose message is still waiting is kept, also when an earlier
 * version left it in its work stream, or it was moved back from there (dispatcher/legacy-work.ts).
 * Records are created as the gateway creates them (`initialState`), and the sweep is run with a clock
 * ten minutes ahead, which ages every record past the margin without waiting.
 */
describe("dispatcher - stranded queued records", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let pub: AckedPublisher;
  let n = names("st");
  const log = createLogger({ service: "test", level: "silent", format: "json" });

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc, n, { replicas: 1, storage: "memory" });
    pub = new AckedPublisher(nc);
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  /** A record as the gateway creates it, `ageMs` ago, with its message where `message` says. */
  async function record(
    id: string,
    type: string,
    o: {
      ageMs?: number;
      message?: "tasks" | "work";
      priority?: Priority;
      edit?: (s: TaskState) => void;
    } = {},
  ): Promise<void> {
    const enqueuedAt = Date.now() - (o.ageMs ?? 0);
    const msg = { id, type, priority: o.priority ?? ("normal" as Priority), payload: {}, enqueuedAt };
    const state = { ...initialState(msg), updatedAt: enqueuedAt };
    o.edit?.(state);
    if (o.message === "tasks")
      await pub.publish(n.tasksSubject(msg.priority, type), JSON.stringify(msg), { msgId: id });
    if (o.message === "work")
      await pub.publish(n.workSubject(type), JSON.stringify(msg), { msgId: `${id}:1` });
    await pub.publish(`$KV.${n.stateBucket}.${id}`, JSON.stringify(state));
  }

  it("ends a queued record whose message is in neither stream, and keeps every other", async () => {
    // waiting in the tasks stream, and a stranded one of the same subject six minutes older: the
    // waiting message was stored long after the stranded one's would have been, so it hides nothing
    await record("waiting", "st.a", { message: "tasks" });
    await record("stranded", "st.a", { ageMs: 6 * 60_000 });
    // stranded under another priority of the same type
    await record("stranded-high", "st.a", { ageMs: 6 * 60_000, priority: "high" });
    // created two minutes before the sweep's clock: its message may still be on its way
    await record("recent", "st.c", { ageMs: -8 * 60_000 });
    // written after its message (a resume puts the task back long after it was enqueued): not as enqueued
    await record("resumed", "st.c", { edit: (s) => (s.updatedAt = s.enqueuedAt + 60_000) });
    // a retry's record: the next attempt waits in the delayed stream
    await record("retrying", "st.c", {
      edit: (s) => {
        s.status = "retrying";
        s.attempts = 1;
      },
    });

    const ended: [string, number][] = [];
    const sweeper = new RetentionSweeper(
      { nc, jsm: await jetstreamManager(nc), names: n, log },
      {
        completedMs: 60_000,
        failedMs: 60_000,
        sweepMs: 60_000,
        onStrandedEnded: (type, k) => ended.push([type, k]),
      },
    );
    // ten minutes ahead: every record is past the sweep's cutoff, and past the margin unless said
    const now = Date.now() + 10 * 60_000;
    expect(await sweeper.sweep(now)).toEqual({ removed: 0, kept: 4, stranded: 2 });
    expect(ended).toEqual([["st.a", 2]]);

    const kv = await new Kvm(nc).open(n.stateBucket);
    const get = async (id: string) => (await kv.get(id))?.json<TaskState>();
    for (const id of ["stranded", "stranded-high"]) {
      expect(await get(id)).toMatchObject({
        status: "failed",
        attempts: 0,
        finishedAt: now,
        updatedAt: now,
        error: { code: "enqueue_incomplete" },
      });
    }
    for (const id of ["waiting", "recent", "resumed"]) expect((await get(id))?.status).toBe("queued");
    expect((await get("retrying"))?.status).toBe("retrying");
    // the ended records are final now: a later sweep keeps them for their retention and ends nothing
    expect(await sweeper.sweep(now + 1_000)).toEqual({ removed: 0, kept: 6, stranded: 0 });
    expect(ended).toHaveLength(1);
    expect((await get("stranded"))?.status).toBe("failed");
  });

  it("keeps queued records while an earlier version's work stream holds tasks, and after one moved back", async () => {
    n = names("su");
    const jsm = await jetstreamManager(nc);
    await ensureTopology(nc, n, { replicas: 1, storage: "memory" });
    // the work stream and consumer as the earlier version's topology created them
    await jsm.streams.add({
      name: n.workStream,
      subjects: [n.workSubjectAll],
      retention: RetentionPolicy.Workqueue,
      storage: StorageType.Memory,
    });
    await jsm.consumers.add(n.workStream, {
      durable_name: n.workConsumer("su.a"),
      filter_subject: n.workSubject("su.a"),
      ack_policy: AckPolicy.Explicit,
    });
    // dispatched by the earlier version six minutes ago, not run: its message is in the work stream
    await record("in-work", "su.a", { ageMs: 6 * 60_000, message: "work" });
    // enqueued after the earlier version's last dispatch, waiting in the tasks stream
    await record("young", "su.a", { message: "tasks" });
    await record("stranded", "su.a", { ageMs: 6 * 60_000 });
    await record("stranded-b", "su.b", { ageMs: 6 * 60_000 });
    const sweeper = new RetentionSweeper(
      { nc, jsm, names: n, log },
      { completedMs: 60_000, failedMs: 60_000, sweepMs: 60_000 },
    );
    const now = Date.now() + 10 * 60_000;
    // a task may be in the work stream, or on its way back from it: nothing is ended meanwhile
    expect(await sweeper.sweep(now)).toEqual({ removed: 0, kept: 4, stranded: 0 });

    // moved back: in-work is now behind `young`, which was stored long after in-work's enqueue and
    // after the work stream's last dispatch, so the subject's oldest message is no longer older than
    // every task on it: the move's own mark on the work stream says so
    const lw = new LegacyWork({ nc, jsm, names: n, log, publisher: pub });
    expect(await lw.pass()).toMatchObject({ moved: 1 });
    expect((await jsm.streams.info(n.workStream)).state.messages).toBe(0);
    expect(await sweeper.sweep(now + 1_000)).toEqual({ removed: 0, kept: 3, stranded: 1 });
    const kv = await new Kvm(nc).open(n.stateBucket);
    const status = async (id: string) => (await kv.get(id))?.json<TaskState>().status;
    expect(await status("in-work")).toBe("queued");
    // the same subject cannot tell a stranded record from a moved one until its head is younger than
    // the move; another subject with no message can
    expect(await status("stranded")).toBe("queued");
    expect(await status("stranded-b")).toBe("failed");
  });
});
