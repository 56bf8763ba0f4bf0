import { connect, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { classifyWriteError } from "../../services/worker/write-errors.ts";
import { names as buildNames } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";

/** The error a write rejects with (fails the test if it is stored). */
async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("the write was stored");
}

describe("worker - write errors", () => {
  const names = buildNames("sluice");
  const key = (id: string) => `$KV.${names.stateBucket}.${id}`;
  let nats: TestNats;
  let nc: NatsConnection;
  let pub: AckedPublisher;

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    await ensureTopology(nc, names, { replicas: 1, storage: "file" });
    pub = new AckedPublisher(nc, { timeoutMs: 500 });
  });
  afterAll(async () => {
    pub?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  it("calls a record over the state bucket's value size too large (JetStream 10054)", async () => {
    const err = await failure(pub.publish(key("big"), "x".repeat(3 * 1024 * 1024)));
    expect(err).toMatchObject({ status: 400, apiCode: 10054 });
    expect(classifyWriteError(err)).toBe("too_large");
  });

  it("calls a message over the server's max_payload too large (refused by the client)", async () => {
    const max = nc.info!.max_payload;
    const err = await failure(pub.publish(key("huge"), "x".repeat(max + 1)));
    expect((err as Error).name).toBe("InvalidArgumentError");
    expect(classifyWriteError(err)).toBe("too_large");
  });

  it("calls another JetStream API refusal of the message permanent", async () => {
    await pub.publish(key("exists"), "1");
    // a create of a key that exists: 400, wrong last sequence
    const err = await failure(pub.publish(key("exists"), "2", { expectLastSubjectSeq: 0 }));
    expect(err).toMatchObject({ status: 400, apiCode: 10071 });
    expect(classifyWriteError(err)).toBe("refused");
  });

  it("calls a record that cannot be serialised permanent", () => {
    let err: unknown;
    try {
      JSON.stringify({ n: 1n });
    } catch (e) {
      err = e;
    }
    expect(classifyWriteError(err)).toBe("refused");
  });

  it("calls no stream, no ack in time and a closed connection transient", async () => {
    const noStream = await failure(pub.publish("nostream.here", "x"));
    expect(noStream).toMatchObject({ status: 503, apiCode: 0 });
    expect(classifyWriteError(noStream)).toBe("transient");

    // someone listens but never answers: the publisher's own timeout (408)
    const sub = nc.subscribe("silent.here");
    const timedOut = await failure(pub.publish("silent.here", "x"));
    sub.unsubscribe();
    expect(timedOut).toMatchObject({ status: 408 });
    expect(classifyWriteError(timedOut)).toBe("transient");

    const other = await connect({ servers: nats.url });
    const closedPub = new AckedPublisher(other);
    await other.close();
    const closed = await failure(closedPub.publish(key("closed"), "x"));
    closedPub.close();
    expect((closed as Error).name).toBe("ClosedConnectionError");
    expect(classifyWriteError(closed)).toBe("transient");
  });
});
