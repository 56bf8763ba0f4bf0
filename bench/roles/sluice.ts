import { Kvm, KvWatchInclude } from "@nats-io/kv";
import { names } from "../../shared/names.ts";
import { connectNats } from "../../shared/nats/connection.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import { isFinal, type TaskState } from "../../shared/task.ts";
import { epochMs } from "../lib/clock.ts";
import { paced, windowed } from "../lib/drive.ts";
import { makePayload } from "../lib/payload.ts";

/**
 * Sluice's producer and completion observer. The services themselves run as their real processes; these
 * roles only talk to NATS the way a client would: direct publishes of `DirectTaskBody` to the tasks
 * subjects (with the shared AckedPublisher, msg id = task id, priorities cycled over all five like
 * BullMQ's like-for-like jobs unless a run names one), or request/reply on `<prefix>.enqueue`.
 */

type Spec = { url: string; prefix: string; type: string };

const TASK_WINDOW = 1000;

const natsCfg = (url: string) => ({
  natsUrl: [url],
  natsUser: undefined,
  natsPass: undefined,
  natsToken: undefined,
});

/** Sends tasks straight to the tasks stream, or through the enqueue service's request API. */
export const producer = {
  async create(spec: Spec) {
    const n = names(spec.prefix);
    const nc = await connectNats(natsCfg(spec.url), { name: "bench-sluice-producer" });
    const pub = new AckedPublisher(nc, { timeoutMs: 30_000 });
    const direct = (id: string, seq: number, rec: boolean, priority?: Priority) => {
      const body = { id, payload: makePayload(seq, rec), enqueuedAt: Date.now() };
      const subject = n.tasksSubject(priority ?? PRIORITIES[seq % PRIORITIES.length]!, spec.type);
      return pub.publish(subject, JSON.stringify(body), { msgId: id });
    };
    // the paced run under way, so that `stopPaced` can end one that runs "until told"
    let pacing: AbortController | undefined;
    return {
      burst: (a: { count: number; idPrefix: string; priority?: Priority }) =>
        windowed(a.count, TASK_WINDOW, (i) => direct(`${a.idPrefix}${i}`, i, false, a.priority)),
      request: (a: { count: number; window: number }) =>
        windowed(a.count, a.window, async (i) => {
          const input = { type: spec.type, payload: makePayload(i, false), priority: (i % 5) + 1 };
          const r = await nc.request(n.enqueueSubject, JSON.stringify(input), { timeout: 30_000 });
          const reply = r.json<{ id?: string; error?: { code: string; message: string } }>();
          if (!reply.id) throw new Error(`enqueue replied ${JSON.stringify(reply.error ?? reply)}`);
        }),
      /**
       * Returns the send time of every task, indexed by its sequence number. Runs for `durationMs`, or
       * until `stopPaced` if that comes first.
       */
      paced: async (a: {
        ratePerSec: number;
        durationMs: number;
        warmupMs: number;
        idPrefix: string;
        priority?: Priority;
      }) => {
        const sentAt: number[] = [];
        const stop = new AbortController();
        pacing = stop;
        const run = await paced(
          a.ratePerSec,
          a.durationMs,
          (i) => {
            sentAt[i] = epochMs();
            return direct(`${a.idPrefix}${i}`, i, (i * 1000) / a.ratePerSec >= a.warmupMs, a.priority);
          },
          stop.signal,
        );
        if (pacing === stop) pacing = undefined;
        if (run.failed > 0) throw new Error(`${run.failed} paced publishes failed`);
        return { ...run, sentAt };
      },
      stopPaced: async () => {
        pacing?.abort();
      },
      close: async () => {
        pub.close();
        await nc.close();
      },
    };
  },
};

/**
 * Watches the state bucket and notes when each task with the watched id prefix reaches a final status:
 * the time it saw the record, the record's own `finishedAt − enqueuedAt` (whole ms, two clocks) and its
 * `startedAt` (the worker's `Date.now()`) and `dispatchedAt` (the dispatcher's). A prefix ending in "." (`urgent.`) is a subject token, so the
 * server filters the watch to those keys; any other prefix means watching every update.
 */
export const observer = {
  async create(spec: Spec & { idPrefix: string }) {
    const n = names(spec.prefix);
    const nc = await connectNats(natsCfg(spec.url), { name: "bench-sluice-observer" });
    const kv = await new Kvm(nc).open(n.stateBucket);
    const key = spec.idPrefix.endsWith(".") ? `${spec.idPrefix}>` : ">";
    const watch = await kv.watch({ key, include: KvWatchInclude.UpdatesOnly });
    const observedAt: number[] = [];
    const recordMs: number[] = [];
    const startedAt: number[] = [];
    const dispatchedAt: number[] = [];
    // the server's store time of the final record (ms): splits the latency into "stored" and "seen"
    const storedAt: number[] = [];
    const statuses = new Map<string, number>();
    let finals = 0;
    let waiter: { target: number; resolve: () => void } | undefined;
    const loop = (async () => {
      for await (const e of watch) {
        if (e.operation !== "PUT") continue;
        if (!e.key.startsWith(spec.idPrefix)) continue;
        const st = e.json<TaskState>();
        if (!isFinal(st.status)) continue;
        const seq = Number(e.key.slice(spec.idPrefix.length));
        if (observedAt[seq] !== undefined) continue; // a repeat of a final write
        observedAt[seq] = epochMs();
        if (st.finishedAt !== undefined) recordMs[seq] = st.finishedAt - st.enqueuedAt;
        if (st.startedAt !== undefined) startedAt[seq] = st.startedAt;
        if (st.dispatchedAt !== undefined) dispatchedAt[seq] = st.dispatchedAt;
        storedAt[seq] = e.created.getTime();
        statuses.set(st.status, (statuses.get(st.status) ?? 0) + 1);
        finals++;
        if (waiter && finals >= waiter.target) {
          waiter.resolve();
          waiter = undefined;
        }
      }
    })();
    return {
      waitFinal: (a: { target: number }) =>
        finals >= a.target
          ? Promise.resolve(finals)
          : new Promise<number>((resolve) => {
              waiter = { target: a.target, resolve: () => resolve(finals) };
            }),
      take: async () => ({
        observedAt,
        recordMs,
        startedAt,
        dispatchedAt,
        storedAt,
        statuses: Object.fromEntries(statuses),
      }),
      close: async () => {
        watch.stop();
        await loop.catch(() => undefined);
        await nc.close();
      },
    };
  },
};
