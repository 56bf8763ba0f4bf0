import { jetstreamManager } from "@nats-io/jetstream";
import { connect, headers, type NatsConnection } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import { Headers } from "../../shared/headers.ts";
import { names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { consumerSource, Puller } from "../../shared/nats/puller.ts";
import type { Priority } from "../../shared/priority.ts";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

const n = names("sluice");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const dec = new TextDecoder();

/**
 * What counts as an attempt now that the dispatcher hands tasks straight to workers: the tasks message
 * comes back (a redelivery) when a worker died running it, but also when a dispatcher died holding it
 * or a worker turned it away. Only the first is an attempt; a redelivery records `running` before its
 * handler starts, so a task that kills its worker at once still runs out of attempts.
 */
describe("worker - attempts across redeliveries", () => {
  let stack: Stack | undefined;
  let nc: NatsConnection | undefined;
  afterEach(async () => {
    await nc?.close();
    nc = undefined;
    await stack?.cleanup();
    stack = undefined;
  });

  async function consumerInfo(priority: Priority, type: string) {
    const jsm = await jetstreamManager(nc!);
    return jsm.consumers.info(n.tasksStream, n.tasksConsumer(priority, type));
  }

  it("runs tasks a SIGKILLed dispatcher held as attempt 1, once each", async () => {
    stack = await startStack();
    nc = await connect({ servers: stack.nats.url });
    const d1 = await stack.dispatcher({ DISPATCHER_ID: "d1" });
    await d1.waitForLog((l) => l.msg === "became leader");
    // one slot, a short ack wait (the consumers take it): held messages come back a second after d1 dies
    const worker = await stack.worker({ WORKER_TYPES: "test.sleep", WORK_ACK_WAIT_MS: "1000" });
    const blocker = (await stack.post({ type: "test.sleep", payload: { ms: 55_000, tag: "blocker" } })).body
      .id as string;
    await waitFor(() => stack!.runs().some((r) => r.id === blocker));

    // the slot is busy, so nobody asks: d1 holds these (a window of one per priority)
    const held = new Map<Priority, string>();
    for (const priority of ["urgent", "normal", "bulk"] as const) {
      const r = await stack.post({
        type: "test.sleep",
        payload: { ms: 0, tag: `held-${priority}` },
        priority,
      });
      expect(r.status).toBe(202);
      held.set(priority, r.body.id as string);
    }
    await waitFor(async () => {
      for (const p of held.keys()) {
        const info = await consumerInfo(p, "test.sleep");
        const expected = p === "normal" ? 2 : 1; // the blocker is a normal one
        if (info.num_pending !== 0 || info.num_ack_pending !== expected) return false;
      }
      return true;
    });
    expect(stack.runs().map((r) => r.id)).toEqual([blocker]);

    await d1.stop("SIGKILL");
    const d2 = await stack.dispatcher({ DISPATCHER_ID: "d2" });
    await d2.waitForLog((l) => l.msg === "became leader", 15_000);
    // free the slot: the held tasks, delivered again (to d2), reach the worker one by one
    expect([200, 202]).toContain((await stack.call("POST", `/v1/tasks/${blocker}/cancel`)).status);

    for (const [p, id] of held) {
      const s = await stack.waitForStatus(id, ["completed"], 20_000);
      expect(s.attempts, p).toBe(1);
      const runs = stack.runs().filter((r) => r.id === id);
      expect(
        runs.map((r) => [r.attempt, r.pid]),
        p,
      ).toEqual([[1, worker.child.pid]]);
    }
    // each tasks message really was delivered twice (held by d1, then by d2), not once
    for (const p of ["urgent", "bulk"] as const) {
      const info = await consumerInfo(p, "test.sleep");
      expect(info.delivered.consumer_seq, p).toBeGreaterThanOrEqual(2);
      expect(info.num_ack_pending, p).toBe(0);
    }
    expect((await consumerInfo("normal", "test.sleep")).delivered.consumer_seq).toBeGreaterThanOrEqual(3);
  });

  it("ends a task that kills its worker within milliseconds as dead (worker_lost) after a bounded number of runs", async () => {
    stack = await startStack();
    await stack.dispatcher();
    const r = await stack.post({ type: "test.crash", payload: { tag: "fast" } });
    const id = r.body.id as string;
    // a worker is always there: each run kills its worker, the next one gets the redelivery after the ack wait
    let done = false;
    let last: ServiceProcess | undefined;
    const keeper = (async () => {
      while (!done) {
        try {
          last = await stack!.worker({ WORKER_TYPES: "test.crash", WORK_ACK_WAIT_MS: "1000" });
        } catch {
          continue; // killed by the task before it said ready
        }
        while (!done && last.child.exitCode === null && last.child.signalCode === null) await sleep(50);
      }
    })();
    let s: Awaited<ReturnType<Stack["waitForStatus"]>>;
    try {
      s = await stack.waitForStatus(id, ["dead"], 40_000);
    } finally {
      done = true;
      await keeper;
    }
    expect(s.error?.code).toBe("worker_lost");
    const runs = stack.runs().filter((x) => x.id === id);
    // test.crash has maxAttempts 2. The first run died before its `running` write (due after
    // RUNNING_WRITE_AFTER_MS, 250 ms), so it is not counted; each redelivery writes `running` before
    // its handler starts, so the two after it are; the next delivery is attempt 3 and gives up.
    expect(runs.map((x) => x.attempt)).toEqual([1, 1, 2]);
    expect(new Set(runs.map((x) => x.pid)).size).toBe(runs.length);
    expect(s.attempts).toBe(3);
    const dlq = await stack.call("GET", `/v1/dlq/${id}`);
    expect(dlq.body).toMatchObject({ id, status: "dead" });
    // nothing runs it again: a live worker sees no redelivery over two more ack waits
    expect(last?.child.exitCode).toBeNull();
    expect(last?.child.signalCode).toBeNull();
    await sleep(2_500);
    expect(stack.runs().filter((x) => x.id === id)).toHaveLength(3);
    expect((await stack.get(id))?.status).toBe("dead");
  });

  it("does not count an attempt for a delivery a draining worker turned away (nak)", async () => {
    stack = await startStack();
    const c = await connect({ servers: stack.nats.url });
    nc = c;
    // The test is the dispatcher leader at first: it takes the worker's pull requests and hands it
    // tasks itself, so the task reaches the worker's live request after the worker began draining (a
    // real leader forgets a draining worker's requests, which makes the race rare, not impossible).
    const requests: { reply: string; at: number }[] = [];
    const leader = c.subscribe(n.demandSubject("test.sleep"), {
      callback: (_e, m) => {
        if (m.reply) requests.push({ reply: m.reply, at: Date.now() });
      },
    });
    const naks: string[] = [];
    c.subscribe(`$JS.ACK.${n.tasksStream}.>`, {
      callback: (_e, m) => {
        if (dec.decode(m.data).startsWith("-NAK")) naks.push(m.subject);
      },
    });
    await c.flush();
    /** Take the next message of a tasks consumer, as the dispatcher does. */
    const takeTask = async (priority: Priority): Promise<Delivery> => {
      let got: Delivery | undefined;
      const p = new Puller(c, consumerSource(n.tasksStream, n.tasksConsumer(priority, "test.sleep")), {
        onMessage: (d) => {
          got = d;
        },
        expiresMs: 5_000,
      });
      try {
        p.request(1);
        return await waitFor(() => got);
      } finally {
        p.close();
      }
    };
    /** Hand a task to a worker's pull request, as the dispatcher does. */
    const handTo = (reply: string, d: Delivery) => {
      const h = headers();
      h.set(Headers.dispatchedAt, String(Date.now()));
      h.set(Headers.ack, d.ackSubject);
      c.publish(reply, d.data, { headers: h });
    };

    const w1 = await stack.worker({
      WORKER_TYPES: "test.sleep",
      WORKER_CONCURRENCY: "2",
      SHUTDOWN_GRACE_MS: "50000",
    });
    await waitFor(() => requests.length > 0);
    const blocker = (await stack.post({ type: "test.sleep", payload: { ms: 55_000, tag: "blocker" } })).body
      .id as string;
    handTo(requests.at(-1)!.reply, await takeTask("normal"));
    await waitFor(() => stack!.runs().some((r) => r.id === blocker));
    const victim = (
      await stack.post({ type: "test.sleep", payload: { ms: 0, tag: "victim" }, priority: "urgent" })
    ).body.id as string;
    const task = await takeTask("urgent");
    expect(task.deliveryCount).toBe(1);
    // w1 still asks for its second slot, again each time its request expires (5 s): wait for a fresh
    // one, so that it is still subscribed to when w1 drains
    const seen = requests.length;
    await waitFor(() => requests.length > seen, 10_000, 10);
    const fresh = requests.at(-1)!;
    w1.child.kill("SIGTERM");
    await w1.waitForLog((l) => l.msg === "worker draining");
    expect(Date.now() - fresh.at).toBeLessThan(4_000);
    handTo(fresh.reply, task);
    await waitFor(() => naks.length > 0);
    expect(naks).toEqual([task.ackSubject]);
    expect(stack.runs().some((r) => r.id === victim)).toBe(false);
    leader.unsubscribe();

    // w1 goes (its blocker cancelled); a real dispatcher and a worker take the victim from here
    expect([200, 202]).toContain((await stack.call("POST", `/v1/tasks/${blocker}/cancel`)).status);
    expect(await w1.exited).toBe(0);
    await stack.dispatcher();
    const w2 = await stack.worker({ WORKER_TYPES: "test.sleep" });
    const s = await stack.waitForStatus(victim, ["completed"], 20_000);
    expect(s.attempts).toBe(1);
    expect(
      stack
        .runs()
        .filter((r) => r.id === victim)
        .map((r) => [r.attempt, r.pid]),
    ).toEqual([[1, w2.child.pid]]);
    // the same message, delivered a second time: turned away once, then run
    const info = await consumerInfo("urgent", "test.sleep");
    expect(info.delivered.consumer_seq).toBe(2);
    expect(info.delivered.stream_seq).toBe(task.streamSeq);
  });
});
