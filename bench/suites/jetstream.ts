import { AckPolicy, jetstreamManager, RetentionPolicy, StorageType } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { SendRun } from "../lib/drive.ts";
import type { Contender } from "../lib/rounds.ts";
import { type RoleHandle, startRole } from "../lib/rpc.ts";
import { startNats } from "../lib/servers.ts";
import type { Settings } from "../lib/settings.ts";
import { type PeerResult, peerRounds, rateOf } from "./peer.ts";

/** Publishes kept unacknowledged at once by the producer. */
const PUBLISH_WINDOW = 1000;
/** `consume()` buffer of the consumer (messages asked for per pull). */
const CONSUME_MAX_MESSAGES = 500;

/**
 * Raw JetStream: a work-queue stream on a file store, the stock client, producer and consumer in their
 * own processes. The ceiling for anything built on JetStream on this machine. Opening it runs the
 * enqueue measure and leaves it set up for the rounds (bench/lib/rounds.ts).
 */
export async function openJetstream(s: Settings, log: (m: string) => void): Promise<Contender<PeerResult>> {
  const nats = await startNats();
  const roles: RoleHandle[] = [];
  let nc: NatsConnection | undefined;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const r of roles) await r.stop();
    await nc?.close();
    await nats.stop();
  };
  try {
    nc = await connect({ servers: nats.url, name: "bench-orchestrator" });
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

    log("jetstream: ready for the rounds");
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
    const rounds = await peerRounds(s, prod, cons, pids, burst("bench.jobs"), { subject: "bench.jobs" });
    return {
      e2eRun: rounds.e2eRun,
      latencyRun: rounds.latencyRun,
      close,
      async finish(used) {
        try {
          return {
            enqueue: rateOf(enq.sent, enq.startedAt, enq.finishedAt),
            ...rounds.figures(used),
            settings: {
              storage: "file",
              retention: "workqueue",
              publishWindow: PUBLISH_WINDOW,
              consumeMaxMessages: CONSUME_MAX_MESSAGES,
            },
          };
        } finally {
          await close();
        }
      },
    };
  } catch (e) {
    await close();
    throw e;
  }
}
