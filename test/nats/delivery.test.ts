import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, createInbox, headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Headers } from "../../shared/headers.ts";
import { type Delivery, handOffReply, toDelivery } from "../../shared/nats/delivery.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * How a task handed on by the dispatcher reaches a worker as a Delivery, against a real server: the
 * tasks message's `$JS.ACK…` subject rides in a hand-off reply (or, from older dispatchers, in a
 * header), and the worker's ack through it settles the real tasks message.
 */
describe("Delivery - hand-off forms", () => {
  let nats: TestNats;
  /** The dispatcher's connection (pulls the tasks message, hands it on). */
  let dc: NatsConnection;
  /** The worker's connection. */
  let wc: NatsConnection;
  let n = 0;

  beforeAll(async () => {
    nats = await startTestNats();
    dc = await connect({ servers: nats.url });
    wc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await wc?.close();
    await dc?.close();
    await nats?.cleanup();
  });

  /** A work-queue stream holding one message, pulled once by the dispatcher's side: its raw Msg. */
  async function pulledTask() {
    const name = `D${++n}`;
    const jsm = await jetstreamManager(dc);
    await jsm.streams.add({ name, subjects: [`${name}.>`], retention: "workqueue" as never });
    await jsm.consumers.add(name, { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: 30e9 });
    await jetstream(dc).publish(`${name}.x`, "task body");
    const inbox = createInbox();
    const sub = dc.subscribe(inbox, { max: 1 });
    dc.publish(`$JS.API.CONSUMER.MSG.NEXT.${name}.c`, JSON.stringify({ batch: 1, expires: 5e9 }), {
      reply: inbox,
    });
    let pulled: Msg | undefined;
    for await (const m of sub) pulled = m;
    if (!pulled) throw new Error("nothing pulled");
    expect(pulled.reply).toMatch(/^\$JS\.ACK\./);
    const left = async () => (await jsm.streams.info(name)).state.messages;
    return { msg: pulled, left };
  }

  /** The worker's inbox: every message it receives, as a Delivery (undefined when it is not one). */
  async function workerInbox() {
    const subject = createInbox();
    const got: { raw: Msg; d: Delivery | undefined }[] = [];
    wc.subscribe(subject, {
      callback: (_e, m) => {
        got.push({ raw: m, d: toDelivery(wc, m) });
      },
    });
    await wc.flush();
    return { subject, got };
  }

  it("reads a hand-off reply: the ack subject and the dispatch time, no header block, and acks the tasks message", async () => {
    const { msg, left } = await pulledTask();
    const inbox = await workerInbox();
    const at = Date.now();
    dc.publish(inbox.subject, msg.data, { reply: handOffReply(msg.reply!, at) });
    await waitFor(() => inbox.got.length === 1, 5_000, 10);
    const { raw, d } = inbox.got[0]!;
    expect(raw.headers).toBeUndefined();
    expect(d).toBeDefined();
    expect(d!.ackSubject).toBe(msg.reply);
    expect(d!.dispatchedAtMs).toBe(at);
    expect(d!.deliveryCount).toBe(1);
    expect(d!.streamSeq).toBe(1);
    expect(Math.abs(d!.storedAtMs - at)).toBeLessThan(5_000);
    expect(new TextDecoder().decode(d!.data)).toBe("task body");
    expect(await left()).toBe(1);
    d!.ack();
    await wc.flush();
    await waitFor(async () => (await left()) === 0, 5_000, 20);
  });

  it("reads the header form that older dispatchers send", async () => {
    const { msg, left } = await pulledTask();
    const inbox = await workerInbox();
    const h = headers();
    h.set(Headers.dispatchedAt, "1700000000123");
    h.set(Headers.ack, msg.reply!);
    dc.publish(inbox.subject, msg.data, { headers: h });
    await waitFor(() => inbox.got.length === 1, 5_000, 10);
    const d = inbox.got[0]!.d!;
    expect(d.ackSubject).toBe(msg.reply);
    expect(d.dispatchedAtMs).toBe(1700000000123);
    d.ack();
    await wc.flush();
    await waitFor(async () => (await left()) === 0, 5_000, 20);
  });

  it("is why the reply is renamed: the server drops a publish whose reply is a $JS.ACK subject", async () => {
    const { msg } = await pulledTask();
    const inbox = await workerInbox();
    // refused by nats-server as a reserved reply ("Permissions Violation for Publish with Reply of")
    dc.publish(inbox.subject, msg.data, { reply: msg.reply! });
    dc.publish(inbox.subject, msg.data, { reply: handOffReply(msg.reply!, Date.now()) });
    await waitFor(() => inbox.got.length === 1, 5_000, 10);
    await sleep(200);
    expect(inbox.got).toHaveLength(1);
    expect(inbox.got[0]!.raw.reply).toMatch(/^_SLUICE_ACK\.\d+\./);
  });

  it("is no delivery without an ack subject in any form", async () => {
    const inbox = await workerInbox();
    dc.publish(inbox.subject, "x");
    dc.publish(inbox.subject, "x", { reply: "_INBOX.someone" });
    await waitFor(() => inbox.got.length === 2, 5_000, 10);
    expect(inbox.got.map((g) => g.d)).toEqual([undefined, undefined]);
  });
});
