import { type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetentionSweeper } from "../../services/dispatcher/retention.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import type { TaskState } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";

/**
 * The retention sweep runs once a minute on the dispatcher leader, under whatever load there is. When
 * no record is old enough to be looked at, it must not read any: the stream's first timestamp says so.
 * (It used to open a consumer and have the server send a batch of the oldest records, which showed as
 * a ~150 ms stall of the whole pipeline once a minute in the bench.) The server counts what a stream
 * delivered to its consumers nowhere we can read after the fact, so the test watches for the consumer.
 */
describe("dispatcher - retention sweep with nothing old enough", () => {
  let nats: TestNats;
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  let pub: AckedPublisher;
  const n = names("rs");
  const stream = `KV_${n.stateBucket}`;
  const log = createLogger({ service: "test", level: "silent", format: "json" });

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc, n, { replicas: 1, storage: "memory" });
    jsm = await jetstreamManager(nc);
    pub = new AckedPublisher(nc);
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  /** Consumers on the state bucket's stream, polled for `ms` (an ephemeral one may appear late). */
  async function consumersSeen(ms: number): Promise<number> {
    let most = 0;
    for (const end = Date.now() + ms; Date.now() < end; ) {
      most = Math.max(most, (await jsm.streams.info(stream)).state.consumer_count);
      await new Promise((r) => setTimeout(r, 20));
    }
    return most;
  }

  it("reads nothing while the oldest record is younger than the retention, and removes it after", async () => {
    const now = Date.now();
    await Promise.all(
      Array.from({ length: 50 }, (_, i) => {
        const s: TaskState = {
          id: `done-${i}`,
          type: "rs.t",
          priority: "normal",
          status: "completed",
          attempts: 1,
          enqueuedAt: now,
          finishedAt: now,
          updatedAt: now,
        };
        return pub.publish(`$KV.${n.stateBucket}.${s.id}`, JSON.stringify(s));
      }),
    );
    const sweeper = new RetentionSweeper(
      { nc, jsm, names: n, log },
      { completedMs: 60_000, failedMs: 120_000, sweepMs: 60_000 },
    );
    expect(await consumersSeen(100)).toBe(0);

    // a minute of retention, swept now: nothing is due, and nothing is read
    const idle = sweeper.sweep(Date.now());
    const seen = consumersSeen(500);
    expect(await idle).toEqual({ removed: 0, kept: 0, stranded: 0 });
    expect(await seen).toBe(0);
    expect((await jsm.streams.info(stream)).state.messages).toBe(50);

    // the same records two minutes later: the sweep walks them and removes every one
    expect(await sweeper.sweep(Date.now() + 120_000)).toEqual({ removed: 50, kept: 0, stranded: 0 });
    expect((await jsm.streams.info(stream)).state.messages).toBe(0);
    sweeper.stop();
  });
});
