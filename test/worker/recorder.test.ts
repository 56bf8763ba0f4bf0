import { setTimeout as sleep } from "node:timers/promises";
import { type JetStreamClient, type JetStreamManager, jetstream } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { loadConfig as loadDispatcherConfig } from "../../services/dispatcher/config.ts";
import { Dispatcher } from "../../services/dispatcher/dispatcher.ts";
import { loadConfig, MAX_RESULT_LIMIT_BYTES } from "../../services/worker/config.ts";
import { defineTask } from "../../services/worker/sdk.ts";
import { Worker } from "../../services/worker/worker.ts";
import { names as buildNames } from "../../shared/names.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { PRIORITIES } from "../../shared/priority.ts";
import type { TaskMessage, TaskState } from "../../shared/task.ts";
import { startTestNats, type TestNats } from "../support/nats.ts";
import { waitFor } from "../support/processes.ts";

const MiB = 1024 * 1024;
/** Handler runs per task id. */
const runs = new Map<string, number>();
const ran = (id: string) => runs.set(id, (runs.get(id) ?? 0) + 1);

const Big = z.object({ bytes: z.number().int() });
/** Returns a string result of `bytes` characters. */
const bigResult = async (p: z.infer<typeof Big>, ctx: { id: string }) => {
  ran(ctx.id);
  return "x".repeat(p.bytes);
};
const definitions = [
  // the same result, dead-lettered or not when given up
  defineTask({ type: "big.result", payload: Big, handler: bigResult }),
  defineTask({ type: "big.result.nodlq", payload: Big, deadLetter: false, handler: bigResult }),
  /**
   * Checkpoints a small state, then `bytes` characters; reports what the second checkpoint did, then
   * reports progress with a message of `progressBytes` characters and returns a small result.
   */
  defineTask({
    type: "big.checkpoint",
    payload: Big.extend({ progressBytes: z.number().int() }),
    handler: async (p, ctx) => {
      ran(ctx.id);
      await ctx.checkpoint({ small: true });
      const refused = await ctx.checkpoint("x".repeat(p.bytes)).then(
        () => undefined,
        (err: Error) => err.message,
      );
      ctx.progress(50, "y".repeat(p.progressBytes));
      return { refused };
    },
  }),
  /** Any JSON payload: zod's z.json() recurses, so a deep enough one overflows the stack. */
  defineTask({
    type: "deep.json",
    payload: z.json(),
    handler: async (_p, ctx) => {
      ran(ctx.id);
      return null;
    },
  }),
];

describe("worker - outcomes NATS will never store", () => {
  const names = buildNames("sluice");
  const logs: Record<string, unknown>[] = [];
  const log = pino({ level: "info" }, { write: (s: string) => void logs.push(JSON.parse(s)) });
  let nats: TestNats;
  let nc: NatsConnection;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  let state: KV;
  let worker: Worker;
  let dispatcher: Dispatcher;
  let n = 0;

  beforeAll(async () => {
    nats = await startTestNats();
    nc = await connect({ servers: nats.url });
    const dconfig = loadDispatcherConfig({
      DISPATCHER_ID: "d1",
      LEASE_TTL_MS: "2000",
      LEASE_RENEW_MS: "500",
    });
    const topo = await ensureTopology(nc, names, {
      replicas: 1,
      storage: "file",
      leaseTtlMs: dconfig.leaseTtlMs,
    });
    ({ jsm, state } = topo);
    js = jetstream(nc);
    // the dispatcher hands each task to the worker's pull request, with its tasks message to ack
    dispatcher = new Dispatcher({
      ...topo,
      nc,
      names,
      config: dconfig,
      log: log.child({ service: "dispatcher" }),
    });
    await dispatcher.start();
    worker = new Worker({
      ...topo,
      nc,
      names,
      // MAX_RESULT_BYTES stops at what the state bucket stores; the field set past it lets results
      // through to NATS, whose refusals the worker must still handle (a server whose max_payload is
      // below 2 MiB, like nats-server's default 1 MB, refuses results the cap allows)
      config: { ...loadConfig({ WORKER_ID: "w1", HEARTBEAT_MS: "500" }), maxResultBytes: 8 * MiB },
      definitions,
      log,
    });
    await worker.start();
    await waitFor(() => dispatcher.state === "leading", 10_000);
  });
  afterAll(async () => {
    await worker?.shutdown(1000);
    await dispatcher?.stop();
    await nc?.close();
    await nats?.cleanup();
  });

  /**
   * Put a gateway-shaped task straight on the tasks stream (the dispatcher hands it to the worker as it
   * is) and return its id.
   */
  async function dispatch(type: string, payload: unknown): Promise<string> {
    const id = `t${++n}-${Date.now()}`;
    const msg: TaskMessage = { id, type, priority: "normal", payload, enqueuedAt: Date.now() };
    await js.publish(names.tasksSubject("normal", type), JSON.stringify(msg));
    return id;
  }

  async function finalState(id: string, statuses: string[]): Promise<TaskState> {
    return waitFor(async () => {
      const e = await state.get(id);
      const s = e?.operation === "PUT" ? e.json<TaskState>() : undefined;
      return s && statuses.includes(s.status) ? s : undefined;
    }, 10_000);
  }

  /**
   * The tasks consumers of `type` hold nothing: every message they delivered was acked or terminated
   * (by the worker, which acks the tasks message itself), none is waiting for a redelivery.
   */
  async function settled(type: string): Promise<void> {
    await waitFor(async () => {
      const cis = await Promise.all(
        PRIORITIES.map((p) => jsm.consumers.info(names.tasksStream, names.tasksConsumer(p, type))),
      );
      return cis.every((ci) => ci.num_pending === 0 && ci.num_ack_pending === 0 && ci.num_redelivered === 0);
    }, 5_000);
  }

  it("gives up, dead with result_too_large, a task whose record is over the bucket's value size", async () => {
    const id = await dispatch("big.result", { bytes: 3 * MiB });
    const s = await finalState(id, ["dead", "completed"]);
    expect(s).toMatchObject({ status: "dead", attempts: 1, error: { code: "result_too_large" } });
    expect(s.error?.message).toMatch(/maximum/);
    expect(s.result).toBeUndefined();
    // through the normal dead-letter path: the entry keeps the task for a replay
    const dlq = await jsm.streams.getMessage(names.dlqStream, {
      last_by_subj: names.dlqSubject("big.result"),
    });
    expect(dlq?.json<{ task: TaskMessage }>().task.id).toBe(id);
    expect(s.dlqSeq).toBe(dlq?.seq);
    // settled once: the tasks message acked, the handler not run again
    await settled("big.result");
    await sleep(1500);
    expect(runs.get(id)).toBe(1);
    expect((await state.get(id))?.json<TaskState>().status).toBe("dead");
    expect(logs.some((l) => l.taskId === id && /NATS refused the completed record/.test(String(l.msg)))).toBe(
      true,
    );
  });

  it("gives up a result over the server's max_payload, refused before it is sent", async () => {
    // within the worker's limit (8 MiB here), but its record is over the test server's 8 MB max_payload
    const id = await dispatch("big.result", { bytes: 8 * MiB - 100 });
    const s = await finalState(id, ["dead", "completed"]);
    expect(s).toMatchObject({ status: "dead", attempts: 1, error: { code: "result_too_large" } });
    expect(s.error?.message).toMatch(/max_payload/);
    await settled("big.result");
    expect(runs.get(id)).toBe(1);
  });

  it("records failed with result_too_large for a type that keeps no dead letters", async () => {
    const id = await dispatch("big.result.nodlq", { bytes: 3 * MiB });
    const s = await finalState(id, ["failed", "completed"]);
    expect(s).toMatchObject({ status: "failed", attempts: 1, error: { code: "result_too_large" } });
    expect(s.task?.id).toBe(id); // kept for POST /v1/tasks/:id/retry
    await settled("big.result.nodlq");
    expect(runs.get(id)).toBe(1);
  });

  it("completes a task whose checkpoint was too large, with the last checkpoint stored", async () => {
    const id = await dispatch("big.checkpoint", { bytes: 3 * MiB, progressBytes: 10 });
    const s = await finalState(id, ["completed", "dead"]);
    expect(s.status).toBe("completed");
    // the handler saw its checkpoint refused; later records carry the one before it
    expect((s.result as { refused?: string }).refused).toMatch(/maximum/);
    expect(s.checkpoint).toEqual({ small: true });
    expect(s.progress).toEqual({ percent: 50, message: "y".repeat(10) });
    await settled("big.checkpoint");
    expect(runs.get(id)).toBe(1);
  });

  it("completes a task whose progress message is too large, storing the record without it", async () => {
    const id = await dispatch("big.checkpoint", { bytes: 10, progressBytes: 3 * MiB });
    const s = await finalState(id, ["completed", "dead"]);
    expect(s.status).toBe("completed");
    expect(s.result).toEqual({});
    expect(s.progress).toBeUndefined();
    expect(s.checkpoint).toBeUndefined();
    await settled("big.checkpoint");
    expect(runs.get(id)).toBe(1);
  });

  it("records dead, without the task message, a task whose dead letter cannot be serialised", async () => {
    // the repro of docs/reliability.md: a payload so deep that every JSON.stringify of it overflows
    const id = `deep-${Date.now()}`;
    const depth = 100_000;
    const body = `{"id":"${id}","type":"deep.json","priority":"normal","enqueuedAt":1,"maxAttempts":1,"payload":${"[".repeat(depth)}${"]".repeat(depth)}}`;
    await js.publish(names.tasksSubject("normal", "deep.json"), body);
    const s = await finalState(id, ["dead"]);
    expect(s.attempts).toBe(2); // the first delivery failed in validation and was nak'd
    expect(s.task).toBeUndefined();
    expect(s.dlqSeq).toBeUndefined();
    await settled("deep.json");
    expect(runs.get(id)).toBeUndefined();
  });

  it("still completes results that fit", async () => {
    const id = await dispatch("big.result", { bytes: MiB });
    const s = await finalState(id, ["completed", "dead"]);
    expect(s.status).toBe("completed");
    expect((s.result as string).length).toBe(MiB);
  });

  it("stores a result as large as MAX_RESULT_BYTES may be set", async () => {
    // the string's JSON is its characters plus two quotes: exactly the limit
    const id = await dispatch("big.result", { bytes: MAX_RESULT_LIMIT_BYTES - 2 });
    const s = await finalState(id, ["completed", "dead"]);
    expect(s.status).toBe("completed");
    expect((s.result as string).length).toBe(MAX_RESULT_LIMIT_BYTES - 2);
  });
});
