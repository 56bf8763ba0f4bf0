import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { consumerSource, Puller } from "../../shared/nats/puller.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

/**
 * The puller against a real server: it must receive exactly what its owner asked for — no task
 * hoarded beyond free slots, none left unasked after requests expire — although nats-server serves
 * waiting pull requests round robin and drops some expired ones without a 408.
 */
describe("Puller", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let spy: NatsConnection;
  let n = 0;

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    spy = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await spy?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  /** A fresh work-queue stream with one pull consumer, and a counter of the pull requests sent to it. */
  async function setup() {
    const name = `S${++n}`;
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name, subjects: [`${name}.>`], retention: "workqueue" as never });
    await jsm.consumers.add(name, { durable_name: "c", ack_policy: AckPolicy.Explicit, ack_wait: 30e9 });
    const requests: number[] = [];
    spy.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${name}.c`, {
      callback: (_e, m) => {
        requests.push((m.json() as { batch: number }).batch);
      },
    });
    await spy.flush();
    const js = jetstream(nc);
    const publish = async (count: number) => {
      for (let i = 0; i < count; i++) await js.publish(`${name}.x`, String(i));
    };
    return { name, jsm, requests, publish };
  }

  it("delivers exactly the demand, across round-robin service and expiring requests", async () => {
    const { requests, publish, jsm, name } = await setup();
    const got: Delivery[] = [];
    const p = new Puller(nc, consumerSource(name, "c"), { onMessage: (d) => got.push(d), expiresMs: 600 });
    try {
      // two requests waiting at once: the server alternates between them
      p.request(6);
      await nc.flush();
      p.request(6);
      await nc.flush();
      await publish(7);
      await waitFor(async () => got.length === 7, 5_000);
      expect(p.outstanding).toBe(5);
      // let both expire (408s, or dropped silently) and be raised again, twice over
      await new Promise((r) => setTimeout(r, 2_000));
      expect(p.outstanding).toBe(5);
      await publish(9);
      await waitFor(async () => got.length === 12, 5_000);
      await new Promise((r) => setTimeout(r, 300));
      // nothing beyond the 12 asked for: the other 4 wait in the stream
      expect(got.length).toBe(12);
      expect(p.outstanding).toBe(0);
      const info = await jsm.consumers.info(name, "c");
      expect(info.num_pending).toBe(4);
      expect(requests.length).toBeGreaterThanOrEqual(3);
    } finally {
      p.close();
    }
  });

  it("tops up in chunks while enough is asked for (lowWater)", async () => {
    const { requests, publish, name } = await setup();
    const got: Delivery[] = [];
    const p = new Puller(nc, consumerSource(name, "c"), {
      onMessage: (d) => got.push(d),
      expiresMs: 10_000,
      lowWater: 4,
    });
    try {
      p.request(16);
      await nc.flush();
      await spy.flush();
      expect(requests).toEqual([16]);
      await publish(3);
      await waitFor(async () => got.length === 3, 5_000);
      // three slots free again: 13 still asked for, so no request of 1 each
      p.request(1);
      p.request(1);
      p.request(1);
      await nc.flush();
      await spy.flush();
      expect(requests).toEqual([16]);
      expect(p.outstanding).toBe(16);
      // a chunk of lowWater goes out at once
      p.request(1);
      await nc.flush();
      await spy.flush();
      await waitFor(async () => requests.length === 2, 2_000);
      expect(requests[1]).toBe(4);
      // and when what the server owes falls to lowWater, held demand goes out too
      p.request(2);
      await publish(13);
      await waitFor(async () => got.length === 16, 5_000);
      await nc.flush();
      await spy.flush();
      await waitFor(async () => requests.length === 3, 2_000);
      expect(requests[2]).toBe(2);
      await publish(10);
      await waitFor(async () => got.length === 22, 5_000);
      await new Promise((r) => setTimeout(r, 200));
      expect(got.length).toBe(22);
      expect(p.outstanding).toBe(0);
    } finally {
      p.close();
    }
  });
});
