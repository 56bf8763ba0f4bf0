import { jetstreamManager } from "@nats-io/jetstream";
import { connect, createInbox, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TypeDispatcher } from "../../services/dispatcher/type-dispatcher.ts";
import { Headers } from "../../shared/headers.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { type Delivery, toDelivery } from "../../shared/nats/delivery.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { consumerSource, Puller } from "../../shared/nats/puller.ts";
import { ensureTopology, ensureTypeConsumers } from "../../shared/nats/topology.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

/**
 * The dispatcher's in-flight count against a real server. The truth is the tasks consumers' messages
 * awaiting their ack, less those the dispatcher holds; it is an upper bound of what is really in flight
 * (taken at some moment while dispatch goes on, and still counting tasks whose slot is already freed),
 * so a reconcile may lower the count to it but not raise it: taking it as the count stalled dispatch
 * under load until the next reconcile. Only after a quiet spell, when nothing can be under way, is it
 * exact and taken in both directions.
 */
describe("dispatcher - reconcile of the in-flight count", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  const n = names("rc");
  const log = createLogger({ service: "test", level: "silent", format: "json" });

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc, n, { replicas: 1, storage: "memory" });
  });
  afterAll(async () => {
    await nc?.close();
    await nats?.cleanup();
  });

  async function dispatcher(type: string, capacity: number) {
    const jsm = await jetstreamManager(nc);
    await ensureTypeConsumers(jsm, n, type, {});
    // a worker asking for `asked.n` tasks: what it is handed is collected (acked by the test)
    const inbox = createInbox();
    const asked = { n: capacity };
    const handed: Delivery[] = [];
    // the form each hand-off came in: its ack subject in the reply (workers that ask for it) or in
    // the Sluice-Ack header (workers older than that); the acks below go through both
    const forms: string[] = [];
    nc.subscribe(inbox, {
      callback: (_e, m) => {
        forms.push(
          m.reply?.startsWith("_SLUICE_ACK.") ? "reply" : m.headers?.has(Headers.ack) ? "header" : "none",
        );
        handed.push(toDelivery(nc, m)!);
      },
    });
    const td = new TypeDispatcher(type, {
      nc,
      jsm,
      names: n,
      log,
      demand: {
        outstanding: () => asked.n,
        take: () => {
          if (asked.n <= 0) return undefined;
          asked.n--;
          return { reply: inbox, ackInReply: asked.n % 2 === 0 };
        },
      },
      prefetchRatio: 0,
      prefetchMs: 0,
      windowMax: 16,
      capacity: () => capacity,
      // long enough that the steps below run well inside it even on a loaded machine
      quietMs: 2_000,
    });
    return { td, handed, asked, forms };
  }

  const publisher = () => new AckedPublisher(nc);
  const task = (type: string, id: string) =>
    JSON.stringify({ id, type, priority: "normal", payload: id, enqueuedAt: Date.now() });

  it("starts from the truth, is lowered when work vanished, is not raised while busy, is exact when quiet", async () => {
    const type = "rc.a";
    const pub = publisher();
    // three tasks with a worker before this dispatcher leads (another reader holds them unacked)
    const jsm = await jetstreamManager(nc);
    await ensureTypeConsumers(jsm, n, type, {});
    for (let i = 0; i < 3; i++)
      await pub.publish(n.tasksSubject("normal", type), task(type, `o${i}`), { msgId: `o${i}` });
    const other: Delivery[] = [];
    const outsider = new Puller(nc, consumerSource(n.tasksStream, n.tasksConsumer("normal", type)), {
      onMessage: (d) => other.push(d),
      expiresMs: 2_000,
    });
    outsider.request(3);
    await waitFor(() => other.length === 3 || undefined);
    outsider.close();

    // a new leader counts them
    const { td, handed, asked, forms } = await dispatcher(type, 4);
    td.start();
    await waitFor(() => td.inFlight === 3 || undefined);
    // they finish with no "slots freed" notice (as when notices are lost in a reconnect): lowered
    for (const d of other) d.ack();
    await nc.flush();
    await td.reconcile();
    expect(td.inFlight).toBe(0);

    // six tasks: four handed on (what the worker asked for), two held
    for (let i = 0; i < 6; i++)
      await pub.publish(n.tasksSubject("normal", type), task(type, `t${i}`), { msgId: `t${i}` });
    const heldSum = () => td.held().reduce((a, b) => a + b, 0);
    await waitFor(() => (td.inFlight === 4 && heldSum() === 2) || undefined);
    await new Promise((r) => setTimeout(r, 100));
    expect(td.inFlight).toBe(4);
    expect(heldSum()).toBe(2);
    expect(handed.length).toBe(4);
    // two slots freed twice (a worker died between freeing them and acking): the held two go out
    // and the count runs two low; while busy a reconcile does not raise it (the truth may still
    // count finished tasks), after a quiet spell it is exact
    td.freed(2);
    asked.n += 2;
    td.pump();
    await waitFor(() => (handed.length === 6 && td.inFlight === 4) || undefined);
    await td.reconcile();
    expect(td.inFlight).toBe(4);
    await new Promise((r) => setTimeout(r, 2_100));
    await td.reconcile();
    expect(td.inFlight).toBe(6);
    expect(forms.filter((f) => f === "reply")).toHaveLength(3);
    expect(forms.filter((f) => f === "header")).toHaveLength(3);
    for (const d of handed) expect(Math.abs(d.dispatchedAtMs! - Date.now())).toBeLessThan(60_000);
    for (const d of handed) d.ack();
    await nc.flush();
    await td.reconcile();
    expect(td.inFlight).toBe(0);
    td.stop();
    pub.close();
  });
});
