import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TypeDispatcher } from "../../services/dispatcher/type-dispatcher.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology, ensureTypeConsumers } from "../../shared/nats/topology.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

/**
 * The dispatcher's in-flight count against a real server. Consumer info is an upper bound of what is
 * really in flight (it is taken at some moment while publishes go on, and still counts tasks whose
 * slot is already freed), so a reconcile may lower the count to it but not raise it: taking it as the
 * count stalled dispatch under load until the next reconcile. Only after a quiet second, when nothing
 * can be under way, is it exact and taken in both directions.
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
    const publisher = new AckedPublisher(nc);
    const td = new TypeDispatcher(type, {
      nc,
      jsm,
      names: n,
      publisher,
      log,
      prefetchRatio: 0,
      prefetchMs: 0,
      windowMax: 16,
      capacity: () => capacity,
      // long enough that the steps below run well inside it even on a loaded machine
      quietMs: 2_000,
    });
    return { td, jsm, publisher };
  }

  it("is not raised by work it did not dispatch while busy, is lowered when work vanished, is exact when quiet", async () => {
    const type = "rc.a";
    const { td, jsm, publisher } = await dispatcher(type, 4);
    td.start();
    await waitFor(() => td.inFlight === 0 || undefined);
    // work in the stream that this dispatcher never counted (what a slow consumer-info answer looks
    // like: publishes counted twice, or tasks already freed whose final write is under way)
    for (let i = 0; i < 3; i++) await publisher.publish(n.workSubject(type), JSON.stringify({ i }));
    await td.reconcile();
    expect(td.inFlight).toBe(0);
    // four tasks dispatched: the count follows its own dispatches
    for (let i = 0; i < 6; i++) {
      await publisher.publish(
        n.tasksSubject("normal", type),
        JSON.stringify({ id: `t${i}`, type, priority: "normal", payload: i, enqueuedAt: Date.now() }),
        { msgId: `t${i}` },
      );
    }
    // the six arrive in pulls of their own, so wait until all are here; the count must then stay at
    // capacity with the other two held (the first check alone raced the last pull in CI)
    const heldSum = () => td.held().reduce((a, b) => a + b, 0);
    await waitFor(() => (td.inFlight === 4 && heldSum() === 2) || undefined);
    await new Promise((r) => setTimeout(r, 100));
    expect(td.inFlight).toBe(4);
    expect(heldSum()).toBe(2);
    // the work vanishes with no "slots freed" notice (as when notices are lost in a reconnect):
    // the reconcile lowers the count, and the held tasks go out
    await jsm.streams.purge(n.workStream);
    await td.reconcile();
    td.pump();
    await waitFor(() => (td.inFlight === 2 && td.held().every((h) => h === 0)) || undefined);
    // after a quiet spell nothing can be under way, so consumer info is exact and raises it too:
    // two more messages nobody dispatched (as when a slot was freed twice and the count ran low)
    for (let i = 0; i < 2; i++) await publisher.publish(n.workSubject(type), JSON.stringify({ i }));
    await td.reconcile();
    expect(td.inFlight).toBe(2);
    await new Promise((r) => setTimeout(r, 2_100));
    await td.reconcile();
    expect(td.inFlight).toBe(4);
    td.stop();
    publisher.close();
  });
});
