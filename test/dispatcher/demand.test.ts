import { connect, createInbox, headers, type Msg, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Demand } from "../../services/dispatcher/demand.ts";
import { Headers } from "../../shared/headers.ts";
import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { Puller } from "../../shared/nats/puller.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

const enc = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A pull request body as a worker's Puller sends it (expires in ns). */
function pull(batch: unknown, expiresMs?: number): Uint8Array {
  const body: Record<string, unknown> = { batch };
  if (expiresMs !== undefined) body.expires = expiresMs * 1_000_000;
  return enc.encode(JSON.stringify(body));
}

/** A v1 `$JS.ACK…` subject (9 tokens) for stream sequence `seq`, as a tasks consumer would give. */
function ackSubject(seq: number, delivered = 1): string {
  return `$JS.ACK.T_TASKS.d_normal_x.${delivered}.${seq}.${seq}.${Date.now() * 1_000_000}.0`;
}

/** Everything a reply subject receives, split into status messages (408/409) and the rest. */
function collect(nc: NatsConnection, subject: string) {
  const statuses: { code: number; description: string; pending: string | undefined }[] = [];
  const data: Msg[] = [];
  nc.subscribe(subject, {
    callback: (_e, m) => {
      const h = m.headers;
      if (h && h.code > 0 && m.data.length === 0) {
        statuses.push({ code: h.code, description: h.description, pending: h.get("Nats-Pending-Messages") });
      } else data.push(m);
    },
  });
  return { statuses, data };
}

/**
 * The dispatcher leader's side of the direct hand-off against a real server: workers' pull requests
 * (the JetStream `{batch, expires}` body over core NATS) are held per type, served in turn, and ended
 * the way nats-server ends a pull request (408 on expiry, 409 on leadership change, each with
 * `Nats-Pending-Messages`), so the worker's unchanged Puller recovers from both.
 */
describe("dispatcher - Demand (workers' pull requests)", () => {
  let nats: TestNats;
  /** The leader's connection. */
  let nc: NatsConnection;
  /** The workers' connection. */
  let wc: NatsConnection;
  const log = createLogger({ service: "test", level: "silent", format: "json" });
  let seq = 0;

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    wc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await wc?.close();
    await nc?.close();
    await nats?.cleanup();
  });

  /**
   * A started Demand on its own prefix, its subscription known to the server; `grown` lists the types
   * whose demand grew, in order.
   */
  async function demand() {
    const n = names(`dm${++seq}`);
    const grown: string[] = [];
    const d = new Demand(nc, n, log, (type) => grown.push(type));
    d.start();
    await nc.flush();
    return { n, d, grown };
  }

  it("serves requests from two inboxes in turn, one task each, and counts what is still owed", async () => {
    const { n, d, grown } = await demand();
    try {
      await nc.flush();
      const a = createInbox();
      const b = createInbox();
      wc.publish(n.demandSubject("t"), pull(2, 10_000), { reply: a });
      wc.publish(n.demandSubject("t"), pull(3, 10_000), { reply: b });
      wc.publish(n.demandSubject("other"), pull(1, 10_000), { reply: a });
      await wc.flush();
      await waitFor(() => d.outstanding("t") === 5 && d.outstanding("other") === 1, 5_000, 10);
      expect(grown).toEqual(["t", "t", "other"]);
      expect(d.outstanding("nothing-asked")).toBe(0);

      const order: (string | undefined)[] = [];
      const counts: number[] = [];
      for (let i = 0; i < 6; i++) {
        order.push(d.take("t")?.reply);
        counts.push(d.outstanding("t"));
      }
      // in turn while both want more, then the one that asked for more alone; then nothing
      expect(order).toEqual([a, b, a, b, b, undefined]);
      expect(counts).toEqual([4, 3, 2, 1, 0, 0]);
      // the other type's request was not touched
      expect(d.outstanding("other")).toBe(1);
      expect(d.take("other")?.reply).toBe(a);
      expect(d.take("other")?.reply).toBeUndefined();
      expect(d.take("never")?.reply).toBeUndefined();
    } finally {
      d.stop();
    }
  });

  it("ends an expired request with a 408 carrying what it still wanted, and does not serve it", async () => {
    const { n, d, grown } = await demand();
    const short = createInbox();
    const long = createInbox();
    const s = collect(wc, short);
    const l = collect(wc, long);
    try {
      await wc.flush();
      wc.publish(n.demandSubject("t"), pull(3, 1_000), { reply: short });
      wc.publish(n.demandSubject("t"), pull(2, 30_000), { reply: long });
      await wc.flush();
      await waitFor(() => grown.length === 2, 5_000, 10);
      // one task charged to the short request while it lives
      expect(d.take("t")?.reply).toBe(short);
      expect(d.outstanding("t")).toBe(4);
      await sleep(1_200);
      // expired: skipped (and ended) whether the sweep or this take gets to it first
      expect(d.take("t")?.reply).toBe(long);
      await waitFor(() => s.statuses.length > 0, 5_000, 10);
      expect(s.statuses).toEqual([{ code: 408, description: "Request Timeout", pending: "2" }]);
      expect(d.outstanding("t")).toBe(1);
      expect(d.take("t")?.reply).toBe(long);
      expect(d.take("t")?.reply).toBeUndefined();
      expect(d.outstanding("t")).toBe(0);
      // one 408, no more, even after further sweeps; the live request got none
      await sleep(700);
      await wc.flush();
      expect(s.statuses).toHaveLength(1);
      expect(l.statuses).toEqual([]);
      expect(s.data).toEqual([]);
    } finally {
      d.stop();
    }
  });

  it("remembers per request whether its worker reads hand-off replies", async () => {
    const { n, d } = await demand();
    const current = createInbox();
    const older = createInbox();
    try {
      const body = (extra: Record<string, string>) =>
        enc.encode(JSON.stringify({ ...extra, batch: 1, expires: 10_000 * 1_000_000 }));
      wc.publish(n.demandSubject("t"), body({ worker: "w1", handoff: "reply" }), { reply: current });
      wc.publish(n.demandSubject("t"), body({ worker: "w0" }), { reply: older });
      // an unknown form is read as the header form, which every worker version understands
      wc.publish(n.demandSubject("t"), body({ worker: "w2", handoff: "carrier-pigeon" }), { reply: older });
      await wc.flush();
      await waitFor(() => d.outstanding("t") === 3, 5_000, 10);
      const taken = [d.take("t"), d.take("t"), d.take("t")];
      expect(taken.map((x) => x && { reply: x.reply, ackInReply: x.ackInReply })).toEqual([
        { reply: current, ackInReply: true },
        { reply: older, ackInReply: false },
        { reply: older, ackInReply: false },
      ]);
    } finally {
      d.stop();
    }
  });

  it("ends an expired request on its sweep, with no dispatch to end it", async () => {
    const { n, d, grown } = await demand();
    const r = createInbox();
    const s = collect(wc, r);
    try {
      await wc.flush();
      wc.publish(n.demandSubject("t"), pull(4, 100), { reply: r });
      await wc.flush();
      await waitFor(() => grown.length === 1, 5_000, 10);
      await waitFor(() => s.statuses.length > 0, 5_000, 10);
      expect(s.statuses).toEqual([{ code: 408, description: "Request Timeout", pending: "4" }]);
      expect(d.outstanding("t")).toBe(0);
      expect(d.take("t")?.reply).toBeUndefined();
    } finally {
      d.stop();
    }
  });

  it("ends every request with a 409 on stop(), and takes no more requests", async () => {
    const { n, d, grown } = await demand();
    const a = createInbox();
    const b = createInbox();
    const sa = collect(wc, a);
    const sb = collect(wc, b);
    try {
      await wc.flush();
      wc.publish(n.demandSubject("t"), pull(3, 30_000), { reply: a });
      wc.publish(n.demandSubject("u"), pull(2, 30_000), { reply: b });
      await wc.flush();
      await waitFor(() => d.outstanding("t") === 3 && d.outstanding("u") === 2, 5_000, 10);
      expect(d.take("t")?.reply).toBe(a);
    } finally {
      d.stop();
    }
    await nc.flush();
    await waitFor(() => sa.statuses.length > 0 && sb.statuses.length > 0, 5_000, 10);
    expect(sa.statuses).toEqual([{ code: 409, description: "Leadership Change", pending: "2" }]);
    expect(sb.statuses).toEqual([{ code: 409, description: "Leadership Change", pending: "2" }]);
    expect(d.outstanding("t")).toBe(0);
    expect(d.outstanding("u")).toBe(0);
    expect(d.take("t")?.reply).toBeUndefined();
    // a stopped Demand (a standby) does not take requests
    const before = grown.length;
    wc.publish(n.demandSubject("t"), pull(1, 30_000), { reply: a });
    await wc.flush();
    await nc.flush();
    await sleep(100);
    expect(d.outstanding("t")).toBe(0);
    expect(grown).toHaveLength(before);
    await waitFor(() => sa.statuses.length === 2, 5_000, 10);
    // and a second stop() ends nothing twice
    d.stop();
    await nc.flush();
    await sleep(100);
    // nothing listens on the demand subject any more: the server itself answers "no responders"
    expect(sa.statuses.map((x) => x.code)).toEqual([409, 503]);
  });

  it("ignores malformed requests and requests without a reply subject", async () => {
    const { n, d, grown } = await demand();
    try {
      await nc.flush();
      const r = createInbox();
      const subj = n.demandSubject("t");
      wc.publish(subj, enc.encode("not json"), { reply: r });
      wc.publish(subj, enc.encode("[1,2]"), { reply: r });
      wc.publish(subj, enc.encode("null"), { reply: r });
      wc.publish(subj, new Uint8Array(0), { reply: r });
      wc.publish(subj, pull(0, 1_000), { reply: r });
      wc.publish(subj, pull(-3, 1_000), { reply: r });
      wc.publish(subj, pull("3", 1_000), { reply: r });
      wc.publish(subj, pull(0.5, 1_000), { reply: r });
      wc.publish(subj, enc.encode(JSON.stringify({ expires: 1_000_000_000 })), { reply: r });
      // well formed, but nowhere to send the tasks
      wc.publish(subj, pull(5, 1_000));
      // the one good request, last on the same connection: once it is counted, all above were seen
      wc.publish(subj, pull(2.9, 30_000), { reply: r });
      await wc.flush();
      await waitFor(() => d.outstanding("t") > 0, 5_000, 10);
      await nc.flush();
      expect(d.outstanding("t")).toBe(2);
      expect(grown).toEqual(["t"]);
      expect(d.take("t")?.reply).toBe(r);
      expect(d.take("t")?.reply).toBe(r);
      expect(d.take("t")?.reply).toBeUndefined();
    } finally {
      d.stop();
    }
  });

  it("forgets the requests of workers that left, and only theirs", async () => {
    const { n, d } = await demand();
    const a = createInbox();
    const b = createInbox();
    const c = createInbox();
    const sa = collect(wc, a);
    try {
      await wc.flush();
      const subj = n.demandSubject("t");
      const as = (worker: string, batch: number) =>
        enc.encode(JSON.stringify({ worker, batch, expires: 30_000 * 1_000_000 }));
      wc.publish(subj, as("w1", 2), { reply: a });
      wc.publish(subj, as("w2", 3), { reply: b });
      wc.publish(subj, pull(1, 30_000), { reply: c });
      await wc.flush();
      await waitFor(() => d.outstanding("t") === 6, 5_000, 10);
      d.dropWorkers(new Set());
      expect(d.outstanding("t")).toBe(6);
      d.dropWorkers(new Set(["w1", "w9"]));
      expect(d.outstanding("t")).toBe(4);
      expect([
        d.take("t")?.reply,
        d.take("t")?.reply,
        d.take("t")?.reply,
        d.take("t")?.reply,
        d.take("t")?.reply,
      ]).toEqual([b, c, b, b, undefined]);
      // a worker that left is not told anything (it no longer listens)
      await nc.flush();
      await sleep(100);
      expect(sa.statuses).toEqual([]);
      expect(sa.data).toEqual([]);
    } finally {
      d.stop();
    }
  });

  it("gives a Puller on the demand subject exactly what it asked for, and it asks again after a 408", async () => {
    const n = names(`dm${++seq}`);
    const type = "e2e";
    // the dispatcher's part: hand queued tasks to whoever asks, each with its ack subject in a header
    const queue: string[] = [];
    const handedTo: string[] = [];
    const dispatch = () => {
      while (queue.length > 0) {
        const to = pd.take(type);
        if (to === undefined) return;
        // this Puller does not ask for hand-off replies (a worker older than them): the header form
        expect(to.ackInReply).toBe(false);
        const h = headers();
        h.set(Headers.ack, ackSubject(++seq + 100));
        nc.publish(to.reply, enc.encode(queue.shift()!), { headers: h });
        handedTo.push(to.reply);
      }
    };
    const pd = new Demand(nc, n, log, () => dispatch());
    pd.start();
    await nc.flush();
    // every pull request the worker sends, seen from the side
    const requests: { reply: string; batch: number }[] = [];
    const spy = wc.subscribe(n.demandSubject(type), {
      callback: (_e, m) => {
        requests.push({ reply: m.reply!, batch: (m.json() as { batch: number }).batch });
      },
    });
    const got: Delivery[] = [];
    await nc.flush();
    await wc.flush();
    const p = new Puller(wc, n.demandSubject(type), { onMessage: (m) => got.push(m), expiresMs: 1_000 });
    try {
      queue.push("t1", "t2", "t3", "t4", "t5");
      p.request(3);
      await waitFor(() => got.length === 3, 5_000, 10);
      await sleep(200);
      await nc.flush();
      await wc.flush();
      // exactly the three asked for: the rest wait with the dispatcher
      expect(got.map((m) => new TextDecoder().decode(m.data))).toEqual(["t1", "t2", "t3"]);
      expect(queue).toEqual(["t4", "t5"]);
      expect(p.outstanding).toBe(0);
      expect(pd.outstanding(type)).toBe(0);
      expect(requests).toHaveLength(1);
      // the ack subject rode in the header: the worker acks the tasks message with it
      expect(got[0]!.ackSubject).toMatch(/^\$JS\.ACK\.T_TASKS\.d_normal_x\.1\.\d+\./);
      expect(got[0]!.deliveryCount).toBe(1);
      expect(got[0]!.streamSeq).toBeGreaterThan(0);

      // two more asked for while nothing is queued: the request waits, then expires with a 408
      const later = queue.splice(0);
      const statuses = collect(wc, `${requests[0]!.reply.split(".").slice(0, -1).join(".")}.*`).statuses;
      await wc.flush();
      p.request(2);
      await waitFor(() => requests.length === 2 && pd.outstanding(type) === 2, 5_000, 10);
      const sentAt = Date.now();
      expect(requests[1]!.batch).toBe(2);
      // a dispatch just after its expiry ends it with the 408 (usually before the puller's reaper, which
      // gives a request 250 ms more; either way the demand must be raised again exactly once)
      await sleep(Math.max(0, sentAt + 1_050 - Date.now()));
      expect(pd.take(type)).toBeUndefined();
      await waitFor(() => statuses.length > 0, 5_000, 10);
      expect(statuses[0]).toEqual({ code: 408, description: "Request Timeout", pending: "2" });
      // and the puller asks again for the same two, once
      await waitFor(() => requests.length === 3, 5_000, 10);
      expect(requests[2]!.batch).toBe(2);
      expect(requests[2]!.reply).not.toBe(requests[1]!.reply);
      await waitFor(() => pd.outstanding(type) === 2, 5_000, 10);
      expect(p.outstanding).toBe(2);

      // the re-asked request is served
      queue.push(...later, "t6");
      dispatch();
      await waitFor(() => got.length === 5, 5_000, 10);
      await sleep(200);
      expect(got.map((m) => new TextDecoder().decode(m.data))).toEqual(["t1", "t2", "t3", "t4", "t5"]);
      expect(queue).toEqual(["t6"]);
      expect(requests).toHaveLength(3);
      expect(p.outstanding).toBe(0);
      expect(pd.outstanding(type)).toBe(0);
      expect(new Set(handedTo.slice(3)).size).toBe(1);
      expect(handedTo[3]).toBe(requests[2]!.reply);
    } finally {
      p.close();
      pd.stop();
      spy.unsubscribe();
    }
  });
});
