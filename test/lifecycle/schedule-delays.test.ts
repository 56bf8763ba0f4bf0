import { setTimeout as sleep } from "node:timers/promises";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { names as buildNames } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import { idForIdempotencyKey, initialState } from "../../shared/task.ts";
import { type ServiceProcess, waitFor } from "../support/processes.ts";
import { type Stack, startStack } from "../support/stack.ts";

describe("delays - delayMs and runAt", () => {
  let stack: Stack;
  let dispatcher: ServiceProcess;
  beforeAll(async () => {
    stack = await startStack();
    dispatcher = await stack.dispatcher();
    await stack.worker({ WORKER_TYPES: "test.record" });
  });
  afterAll(() => stack?.cleanup());

  it("records a delayed task as scheduled and runs it within 1 s of its due time", async () => {
    const before = Date.now();
    const r = await stack.post({ type: "test.record", payload: { n: 1 }, delayMs: 1500 });
    expect(r.status).toBe(202);
    expect(r.body.status).toBe("scheduled");
    const id = r.body.id as string;
    const waiting = await stack.get(id);
    expect(waiting?.status).toBe("scheduled");
    expect(waiting?.runAt).toBeGreaterThanOrEqual(before + 1500);
    expect(waiting?.runAt).toBeLessThanOrEqual(Date.now() + 1500);
    const done = await stack.waitForStatus(id, ["completed"], 10_000);
    const run = stack.runs().find((x) => x.id === id)!;
    expect(run.at).toBeGreaterThanOrEqual(waiting!.runAt!);
    expect(run.at - waiting!.runAt!).toBeLessThan(1000);
    expect(done.attempts).toBe(1);
  });

  it("accepts runAt as an ISO time and treats a past runAt as now", async () => {
    const iso = new Date(Date.now() + 1000).toISOString();
    const a = await stack.post({ type: "test.record", payload: { n: 2 }, runAt: iso });
    expect(a.body.status).toBe("scheduled");
    const past = await stack.post({ type: "test.record", payload: { n: 3 }, runAt: Date.now() - 60_000 });
    // not scheduled: queued, or already done if the worker beat the gateway's own state write
    expect(["queued", "running", "completed"]).toContain(past.body.status);
    await stack.waitForStatus(past.body.id as string, ["completed"], 5_000);
    const s = await stack.waitForStatus(a.body.id as string, ["completed"], 5_000);
    expect(s.startedAt).toBeGreaterThanOrEqual(Date.parse(iso));
  });

  it("refuses a task due more than 30 days ahead with 400", async () => {
    const far = Date.now() + 31 * 24 * 60 * 60 * 1000;
    const r = await stack.post({ type: "test.record", payload: { n: 4 }, runAt: far });
    expect(r.status).toBe(400);
    expect(r.body.code).toBe("invalid_request");
    const d = await stack.post({ type: "test.record", payload: { n: 5 }, delayMs: 31 * 24 * 60 * 60 * 1000 });
    expect(d.status).toBe(400);
    const ok = await stack.post({
      type: "test.record",
      payload: { n: 6 },
      runAt: far - 2 * 24 * 60 * 60 * 1000,
    });
    expect(ok.body.status).toBe("scheduled");
  });

  it("never runs a scheduled task cancelled before its due time", async () => {
    const r = await stack.post({ type: "test.record", payload: { n: 7 }, delayMs: 800 });
    const id = r.body.id as string;
    const c = await fetch(`${stack.url}/v1/tasks/${id}/cancel`, { method: "POST" });
    expect(c.status).toBe(200);
    await sleep(1800);
    expect((await stack.get(id))?.status).toBe("cancelled");
    expect(stack.runs().some((x) => x.id === id)).toBe(false);
  });

  it("stores the delayed message again when a request died between its two writes and is retried", async () => {
    // the first request wrote the `scheduled` record and died before storing the delayed message
    const nc = await connect({ servers: stack.nats.url });
    const runAt = Date.now() + 1_200;
    const id = idForIdempotencyKey("test.record", "half-written");
    const msg = {
      id,
      type: "test.record",
      priority: "normal" as const,
      payload: { n: 8 },
      enqueuedAt: Date.now(),
      runAt,
    };
    await jetstream(nc).publish(`$KV.sluice-state.${id}`, JSON.stringify(initialState(msg, "scheduled")));
    // the caller's retry with the same idempotency key finds it and stores the message
    const r = await stack.post({
      type: "test.record",
      payload: { n: 8 },
      idempotencyKey: "half-written",
      delayMs: 5_000,
    });
    expect(r.body).toEqual({ id, status: "scheduled", duplicate: true });
    const done = await stack.waitForStatus(id, ["completed"], 8_000);
    expect(done.startedAt).toBeGreaterThanOrEqual(runAt);
    expect(done.startedAt! - runAt).toBeLessThan(1_000);
    expect(stack.runs().filter((x) => x.id === id)).toHaveLength(1);
    await nc.close();
  });

  it("drops a delayed message whose task has no record (a cancelled task removed by retention)", async () => {
    const nc = await connect({ servers: stack.nats.url });
    const pub = new AckedPublisher(nc);
    const names = buildNames("sluice");
    const dueAt = Date.now() + 500;
    const msg = {
      id: "no-record-1",
      type: "test.record",
      priority: "normal" as const,
      payload: { n: 9 },
      enqueuedAt: Date.now(),
    };
    const ack = await scheduleTask(pub, names, msg, dueAt);
    const jsm = await jetstreamManager(nc);
    await waitFor(
      async () => (await jsm.streams.getMessage(names.delayedStream, { seq: ack.seq })) === null,
      5_000,
    );
    await sleep(500);
    expect(stack.runs().some((x) => x.id === "no-record-1")).toBe(false);
    expect(await stack.get("no-record-1")).toBeUndefined();
    pub.close();
    await nc.close();
  });

  it("fires 1,000 delayed tasks in due order, each once, across a dispatcher SIGKILL and restart", async () => {
    // every publish to the tasks subject, as the scheduler fires it (core NATS sees repeats the stream drops)
    const nc = await connect({ servers: stack.nats.url });
    const fired = new Map<string, number>();
    const publishes = new Map<string, number>();
    nc.subscribe("sluice.tasks.*.test.record", {
      callback: (_e, m) => {
        const id = (m.json() as { id: string }).id;
        if (!fired.has(id)) fired.set(id, Date.now());
        publishes.set(id, (publishes.get(id) ?? 0) + 1);
      },
    });
    await nc.flush();
    // far enough ahead that all are accepted before the first is due, even on a busy machine
    const t0 = Date.now() + 5_000;
    // due over 8 s, 8 ms apart, posted in shuffled order so stream order is not due order
    const order = Array.from({ length: 1000 }, (_, i) => i).sort(() => Math.random() - 0.5);
    const bodies = order.map((i) => ({ type: "test.record", payload: { n: 10_000 + i }, runAt: t0 + i * 8 }));
    // in four batches: 1,000 single POSTs took over 5 s on a loaded CI machine, and tasks already due
    // when accepted are queued at once instead of scheduled
    const accepted: Record<string, unknown>[] = [];
    const answers = await Promise.all(
      [0, 250, 500, 750].map((i) =>
        stack.call("POST", "/v1/tasks:batch", { tasks: bodies.slice(i, i + 250) }),
      ),
    );
    for (const a of answers) {
      expect(a.status).toBe(202);
      accepted.push(...(a.body.results as Record<string, unknown>[]));
    }
    expect(Date.now()).toBeLessThan(t0);
    const dueOf = new Map(accepted.map((b, k) => [b.id as string, bodies[k]!.runAt]));
    expect(accepted.every((b) => b.status === "scheduled")).toBe(true);

    // kill the leader while about a third of them have fired, start a replacement at once
    await sleep(Math.max(0, t0 + 2_600 - Date.now()));
    const killedAt = Date.now();
    await dispatcher.stop("SIGKILL");
    dispatcher = await stack.dispatcher();
    await dispatcher.waitForLog((l) => l.msg === "became leader", 10_000);
    const leadAt = Date.now();

    await waitFor(() => fired.size >= 1000, 15_000);
    // fired on time (within 1 s) unless due while no dispatcher led, and never early
    for (const [id, at] of fired) {
      const due = dueOf.get(id)!;
      expect(at).toBeGreaterThanOrEqual(due);
      if (due < killedAt - 1000 || due > leadAt + 500) expect(at - due).toBeLessThan(1000);
      else expect(at).toBeLessThan(leadAt + 1500);
    }
    // in due order: nothing fired after a task that was due later by more than a moment
    expect(worstInversion([...fired], dueOf)).toBeLessThan(150);
    // a re-fire by the new leader (the old one died mid-fire) is the only repeat on the wire
    expect([...publishes.values()].filter((n) => n > 1).length).toBeLessThanOrEqual(5);

    // each ran exactly once and never before it was due; a task the killed dispatcher was holding
    // comes back after the tasks consumer's ack wait (30 s), so allow for that
    const ours = () => stack.runs().filter((x) => dueOf.has(x.id));
    await waitFor(() => ours().length >= 1000, 40_000, 100);
    await sleep(500);
    const runs = ours();
    expect(runs).toHaveLength(1000);
    expect(new Set(runs.map((x) => x.id)).size).toBe(1000);
    for (const x of runs) expect(x.at).toBeGreaterThanOrEqual(dueOf.get(x.id)!);
    await nc.close();
  });
});

/** The most a task fired after another was due before it, ms. */
function worstInversion(fired: [string, number][], dueOf: Map<string, number>): number {
  let worst = 0;
  let maxDue = Number.NEGATIVE_INFINITY;
  for (const [id] of fired.sort((a, b) => a[1] - b[1])) {
    const due = dueOf.get(id)!;
    worst = Math.max(worst, maxDue - due);
    maxDue = Math.max(maxDue, due);
  }
  return worst;
}
