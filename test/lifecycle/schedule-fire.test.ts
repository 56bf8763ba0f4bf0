import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FireDeps, fireDelayed } from "../../services/dispatcher/scheduler/fire.ts";
import { createLogger } from "../../shared/logger.ts";
import { names as buildNames } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import { initialState, type TaskMessage, type TaskState, type TaskStatus } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";

/**
 * The crash points of one fire, replayed against a real server: whatever state a previous fire (or a
 * cancel, or a retry) left behind, firing the same delayed message again stores the task in the tasks
 * stream at most once.
 */
describe("scheduler - firing a delayed message", () => {
  let srv: TestNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let state: KV;
  let pub: AckedPublisher;
  let d: FireDeps;
  const names = buildNames("sluice");
  let n = 0;

  beforeAll(async () => {
    srv = await startTestNats();
    nc = await connect({ servers: srv.url });
    const topo = await ensureTopology(nc, names, { replicas: 1, storage: "file" });
    jsm = topo.jsm;
    state = topo.state;
    pub = new AckedPublisher(nc);
    d = {
      jsm,
      state,
      publisher: pub,
      names,
      log: createLogger({ service: "test", level: "silent", format: "json" }),
      duplicateWindowMs: 120_000,
    };
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await srv?.cleanup();
  });

  /** A delayed task (message and record) due now, its record in `status`. */
  async function scheduled(status: TaskStatus, over: Partial<TaskState> = {}) {
    const type = `t.fire${++n}`;
    const due = Date.now();
    const msg: TaskMessage = {
      id: `fire-${n}`,
      type,
      priority: "high",
      payload: { n },
      enqueuedAt: due,
      runAt: due,
    };
    await state.put(msg.id, JSON.stringify({ ...initialState(msg, status), ...over }));
    const ack = await scheduleTask(pub, names, msg, due);
    return { msg, seq: ack.seq, type };
  }
  const stored = async (type: string) =>
    (await jsm.streams.info(names.tasksStream, { subjects_filter: `sluice.tasks.*.${type}` })).state
      .subjects?.[`sluice.tasks.high.${type}`] ?? 0;
  const status = async (id: string) => (await state.get(id))!.json<TaskState>().status;
  const delayedGone = async (seq: number) =>
    (await jsm.streams.getMessage(names.delayedStream, { seq })) === null;

  it("publishes a scheduled task once, marks it queued and deletes the delayed message", async () => {
    const { msg, seq, type } = await scheduled("scheduled");
    expect(await fireDelayed(d, seq)).toBe("fired");
    expect(await status(msg.id)).toBe("queued");
    expect(await stored(type)).toBe(1);
    expect(await delayedGone(seq)).toBe(true);
    expect(await fireDelayed(d, seq)).toBe("gone");
    expect(await stored(type)).toBe(1);
  });

  it("repeats only the publish after a fire that stopped between marking and publishing or deleting", async () => {
    // stopped after the compare-and-set: the record says queued for this due time, nothing published
    const a = await scheduled("scheduled");
    await state.put(a.msg.id, JSON.stringify({ ...initialState(a.msg, "queued"), updatedAt: Date.now() }));
    expect(await fireDelayed(d, a.seq)).toBe("refired");
    expect(await stored(a.type)).toBe(1);
    // stopped after the publish: the repeat is dropped by the tasks stream's duplicate window
    const b = await scheduled("scheduled");
    expect(await fireDelayed(d, b.seq)).toBe("fired");
    const again = await scheduleTask(pub, names, b.msg, b.msg.runAt!, { msgId: `${b.msg.id}:d1` });
    expect(again.duplicate).toBe(true); // the same scheduling inside the window is dropped too
    await state.put(b.msg.id, JSON.stringify({ ...initialState(b.msg, "queued"), updatedAt: Date.now() }));
    const c = await scheduled("scheduled");
    await pub.publish(names.tasksSubject("high", c.type), JSON.stringify(c.msg), { msgId: `${c.msg.id}:d1` });
    await state.put(c.msg.id, JSON.stringify({ ...initialState(c.msg, "queued"), updatedAt: Date.now() }));
    expect(await fireDelayed(d, c.seq)).toBe("refired");
    expect(await stored(c.type)).toBe(1);
  });

  it("drops a cancelled, running or finished task, and a stale scheduling of a rescheduled one", async () => {
    for (const s of ["cancelled", "running", "completed", "dead"] as const) {
      const { seq, type } = await scheduled(s);
      expect(await fireDelayed(d, seq)).toBe("dropped");
      expect(await stored(type)).toBe(0);
      expect(await delayedGone(seq)).toBe(true);
    }
    // retried since: the record waits for a later due time than this message's
    const { msg, seq, type } = await scheduled("retrying");
    await state.put(msg.id, JSON.stringify({ ...initialState(msg, "retrying"), runAt: msg.runAt! + 60_000 }));
    expect(await fireDelayed(d, seq)).toBe("stale");
    expect(await stored(type)).toBe(0);
    expect(await status(msg.id)).toBe("retrying");
  });

  it("stores a task once when two leaders fire the same message at the same time", async () => {
    for (let i = 0; i < 20; i++) {
      const { msg, seq, type } = await scheduled(i % 2 ? "retrying" : "scheduled");
      const outcomes = await Promise.all([fireDelayed(d, seq), fireDelayed(d, seq), fireDelayed(d, seq)]);
      expect(outcomes.filter((o) => o === "fired")).toHaveLength(1);
      expect(await stored(type)).toBe(1);
      expect(await status(msg.id)).toBe("queued");
    }
  });
});
