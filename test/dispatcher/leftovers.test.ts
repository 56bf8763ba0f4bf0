import {
  AckPolicy,
  type ConsumerInfo,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { doneUpTo, LeftoverSweeper } from "../../services/dispatcher/leftovers.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";

// A nats-server SIGKILL can leave acked messages in a work-queue stream below their consumer's ack
// floor (docs/reliability.md). A work-queue stream cannot be made to keep them on purpose, so here the
// work stream has limits retention, which keeps every acked message: the crash's leftovers, made at will.
// The tasks stream is a real work-queue stream.

const log = createLogger({ service: "test", level: "silent", format: "json" });
const n = names("lt");

describe("dispatcher - acked leftovers in the work-queue streams", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    jsm = await jetstreamManager(nc);
    const common = { storage: StorageType.Memory, num_replicas: 1 };
    await jsm.streams.add({
      ...common,
      name: n.tasksStream,
      subjects: [n.tasksSubjectAll],
      retention: RetentionPolicy.Workqueue,
    });
    await jsm.streams.add({ ...common, name: n.workStream, subjects: [n.workSubjectAll] });
    for (const type of ["left.t", "left.other"]) {
      await jsm.consumers.add(n.workStream, {
        durable_name: n.workConsumer(type),
        filter_subject: n.workSubject(type),
        ack_policy: AckPolicy.Explicit,
      });
    }
    await jsm.consumers.add(n.tasksStream, {
      durable_name: n.tasksConsumer("high", "left.t"),
      filter_subject: n.tasksSubject("high", "left.t"),
      ack_policy: AckPolicy.Explicit,
    });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.cleanup();
  });

  it("removes messages below a consumer's ack floor and never touches pending, unacked or other work", async () => {
    const js = jetstream(nc);
    const body = (id: string) => JSON.stringify({ id, type: "left.t", enqueuedAt: 1 });
    for (const id of ["a1", "a2", "a3", "w1", "w2", "w3"])
      await js.publish(n.workSubject("left.t"), body(id));
    await js.publish(n.workSubject("left.other"), body("o1"));
    await js.publish(n.tasksSubject("high", "left.t"), body("t1"));
    const c = await js.consumers.get(n.workStream, n.workConsumer("left.t"));
    // a1..a3 taken and acked: the crash's leftovers (kept although acked)
    for (const id of ["a1", "a2", "a3"]) {
      const m = await c.next({ expires: 2000 });
      expect(m?.json<{ id: string }>().id).toBe(id);
      await m!.ackAck();
    }
    // w1 taken and not acked yet: its floor stays below it, and so below w2 and w3
    const held = await c.next({ expires: 2000 });
    expect(held?.json<{ id: string }>().id).toBe("w1");

    const removed: [string, number][] = [];
    const sweeper = new LeftoverSweeper({ jsm, names: n, log, onRemoved: (s, k) => removed.push([s, k]) });
    expect(await sweeper.sweep()).toEqual({ [n.workStream]: 3 });
    expect(removed).toEqual([[n.workStream, 3]]);

    const left = async (stream: string) => {
      const ids: string[] = [];
      const { state } = await jsm.streams.info(stream);
      for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
        if (m) ids.push(m.json<{ id: string }>().id);
      }
      return ids;
    };
    // what is left is exactly the live work: w1 (unacked), w2 and w3 (pending), o1, and the task
    expect(await left(n.workStream)).toEqual(["w1", "w2", "w3", "o1"]);
    expect(await left(n.tasksStream)).toEqual(["t1"]);
    // and w1 is still unacked for its consumer: were its delivery forgotten, a dead worker's task would
    // never come back (what a filtered purge does on nats-server 2.9.10)
    expect((await jsm.consumers.info(n.workStream, n.workConsumer("left.t"))).num_ack_pending).toBe(1);
    // nothing beyond the work: the next sweep deletes nothing
    expect(await sweeper.sweep()).toEqual({});
    expect(removed).toHaveLength(1);

    // w1 and w2 acked: now leftovers too (w3 still pending, o1 untouched)
    await held!.ackAck();
    const m2 = await c.next({ expires: 2000 });
    await m2!.ackAck();
    expect(await sweeper.sweep()).toEqual({ [n.workStream]: 2 });
    expect(await left(n.workStream)).toEqual(["w3", "o1"]);
  });

  it("sweeps the tasks stream alone where no work stream exists (a deployment that never had one)", async () => {
    const nu = names("lu");
    const lines: { level: number; msg: string }[] = [];
    const watched = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l)) });
    // limits retention keeps acked messages: the crash's leftovers, made at will (see above)
    await jsm.streams.add({
      storage: StorageType.Memory,
      name: nu.tasksStream,
      subjects: [nu.tasksSubjectAll],
    });
    await jsm.consumers.add(nu.tasksStream, {
      durable_name: nu.tasksConsumer("normal", "left.u"),
      filter_subject: nu.tasksSubject("normal", "left.u"),
      ack_policy: AckPolicy.Explicit,
    });
    const js = jetstream(nc);
    for (const id of ["u1", "u2", "u3"])
      await js.publish(
        nu.tasksSubject("normal", "left.u"),
        JSON.stringify({ id, type: "left.u", enqueuedAt: 1 }),
      );
    // u1 and u2 run and are acked by their worker; u3 waits
    const c = await js.consumers.get(nu.tasksStream, nu.tasksConsumer("normal", "left.u"));
    for (let i = 0; i < 2; i++) await (await c.next({ expires: 2000 }))!.ackAck();
    const sweeper = new LeftoverSweeper({ jsm, names: nu, log: watched });
    expect(await sweeper.sweep()).toEqual({ [nu.tasksStream]: 2 });
    expect((await jsm.streams.info(nu.tasksStream)).state.messages).toBe(1);
    // the missing work stream is not a failure
    expect(lines.filter((l) => l.level >= 40).map((l) => l.msg)).toEqual([
      "removed acked messages a work-queue stream kept",
    ]);
  });

  it("counts everything delivered as done when every delivery is acked, even with the stream floor behind", () => {
    const info = (o: { d: [number, number]; a: [number, number]; ap: number }) =>
      ({
        delivered: { consumer_seq: o.d[0], stream_seq: o.d[1] },
        ack_floor: { consumer_seq: o.a[0], stream_seq: o.a[1] },
        num_ack_pending: o.ap,
      }) as ConsumerInfo;
    // what nats-server 2.9.10 reported after a SIGKILL and restart, with 10 leftovers above seq 280
    expect(doneUpTo(info({ d: [900, 1000], a: [900, 280], ap: 0 }))).toBe(1000);
    // one delivery unacked: only the floor is certain
    expect(doneUpTo(info({ d: [901, 1001], a: [900, 280], ap: 1 }))).toBe(280);
    expect(doneUpTo(info({ d: [5, 9], a: [3, 4], ap: 2 }))).toBe(4);
  });
});
