import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { ConsumerTally } from "../lib/consumer-state.ts";
import { paced, windowed } from "../lib/drive.ts";
import type { BenchPayload } from "../lib/payload.ts";
import { payloadBytes } from "../lib/payload.ts";

/**
 * Raw JetStream with the stock nats.js v3 API: the ceiling any system on JetStream works under.
 * Producer: `jetstream(nc).publish` with a window of unacknowledged publishes. Consumer: a durable pull
 * consumer read with `consume()`, one ack per message.
 */

type Conn = { url: string };

/** Publishes bench payloads to a stream subject. */
export const producer = {
  async create(spec: Conn) {
    const nc = await connect({ servers: spec.url, name: "bench-js-producer", noAsyncTraces: true });
    const js = jetstream(nc);
    return {
      burst: (a: { subject: string; count: number; window: number }) =>
        windowed(a.count, a.window, (i) => js.publish(a.subject, payloadBytes(i, false))),
      paced: (a: { subject: string; ratePerSec: number; durationMs: number; warmupMs: number }) =>
        paced(a.ratePerSec, a.durationMs, (i) =>
          js.publish(a.subject, payloadBytes(i, (i * 1000) / a.ratePerSec >= a.warmupMs)),
        ),
      close: () => nc.close(),
    };
  },
};

/** Consumes and acks every message of a durable consumer; tallies completions and latencies. */
export const consumer = {
  async create(spec: Conn & { stream: string; consumer: string; maxMessages: number }) {
    const nc = await connect({ servers: spec.url, name: "bench-js-consumer", noAsyncTraces: true });
    const js = jetstream(nc);
    const c = await js.consumers.get(spec.stream, spec.consumer);
    const messages = await c.consume({ max_messages: spec.maxMessages });
    const tally = new ConsumerTally();
    const loop = (async () => {
      for await (const m of messages) {
        const p = m.json<BenchPayload>();
        m.ack();
        tally.done(p);
      }
    })();
    return {
      waitCount: (a: { target: number }) => tally.waitCount(a.target),
      takeLatencies: async () => tally.takeLatencies(),
      close: async () => {
        messages.stop();
        await loop;
        await nc.close();
      },
    };
  },
};
