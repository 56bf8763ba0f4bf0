import { AckPolicy, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type { SendRun } from "../lib/drive.ts";
import { type RoleHandle, startRole } from "../lib/rpc.ts";
import { startNats } from "../lib/servers.ts";
import type { Settings } from "../lib/settings.ts";
import { measureE2e, measureLatency, type PeerResult, rateOf, sampled } from "./peer.ts";

/** Publishes kept unacknowledged at once by the producer. */
const PUBLISH_WINDOW = 1000;
/** `consume()` buffer of the consumer (messages asked for per pull). */
const CONSUME_MAX_MESSAGES = 500;

/**
 * Raw JetStream: a work-queue stream on a file store, the stock client, producer and consumer in their
 * own processes. The ceiling for anything built on JetStream on this machine.
 */
export async function benchJetstream(s: Settings, log: (m: string) => void): Promise<PeerResult> {
  const nats = await startNats();
  const nc = await connect({ servers: nats.url, name: "bench-orchestrator" });
  const roles: RoleHandle[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    const stream = (name: string, subject: string) =>
      jsm.streams.add({
        name,
        subjects: [subject],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
      });
    const prod = await startRole("jetstream.producer", { url: nats.url });
    roles.push(prod);

    log("jetstream: enqueue");
    await stream("BENCH_ENQ", "bench.enq");
    const burst = (subject: string) => (count: number) => ({ subject, count, window: PUBLISH_WINDOW });
    await prod.call("burst", burst("bench.enq")(s.warmupCount));
    const enq = await prod.call<SendRun>("burst", burst("bench.enq")(s.enqueueCount));
    await jsm.streams.delete("BENCH_ENQ");

    log("jetstream: end to end");
    await stream("BENCH", "bench.jobs");
    await jsm.consumers.add("BENCH", { durable_name: "work", ack_policy: AckPolicy.Explicit });
    const cons = await startRole("jetstream.consumer", {
      url: nats.url,
      stream: "BENCH",
      consumer: "work",
      maxMessages: CONSUME_MAX_MESSAGES,
    });
    roles.push(cons);
    const pids = { "nats-server": nats.pid, producer: prod.pid, consumer: cons.pid };
    const [[e2e, latency], processes] = await sampled(pids, async () => {
      const e2e = await measureE2e(s, prod, cons, burst("bench.jobs"));
      log("jetstream: latency");
      const latency = await measureLatency(s, prod, cons, { subject: "bench.jobs" });
      return [e2e, latency] as const;
    });
    return {
      enqueue: rateOf(enq.sent, enq.startedAt, enq.finishedAt),
      e2e,
      latency,
      processes,
      settings: {
        storage: "file",
        retention: "workqueue",
        publishWindow: PUBLISH_WINDOW,
        consumeMaxMessages: CONSUME_MAX_MESSAGES,
      },
    };
  } finally {
    for (const r of roles) await r.stop();
    await nc.close();
    await nats.stop();
  }
}
