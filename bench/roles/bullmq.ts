import { type JobsOptions, Queue, Worker } from "bullmq";
import { ConsumerTally } from "../lib/consumer-state.ts";
import { paced, windowed } from "../lib/drive.ts";
import { type BenchPayload, makePayload } from "../lib/payload.ts";

/**
 * BullMQ in its two shapes. Like-for-like: what a team gets when it asks BullMQ for what Sluice always
 * gives (persistent Redis is the orchestrator's job; here: a priority on every job spread over 5 levels,
 * completed jobs kept 24 h, failed ones 7 days). Fastest: no priorities, completed jobs deleted.
 */

/** Which BullMQ setup a role runs. */
export type BullVariant = "likeForLike" | "fastest";

type Spec = { port: number; queue: string; variant: BullVariant };

const connection = (port: number) => ({ host: "127.0.0.1", port, maxRetriesPerRequest: null });

/** Job options of a variant; like-for-like jobs cycle through priorities 1–5. */
export function jobOptions(variant: BullVariant, seq: number): JobsOptions {
  if (variant === "fastest") return { removeOnComplete: true };
  return {
    priority: (seq % 5) + 1,
    removeOnComplete: { age: 86_400 },
    removeOnFail: { age: 604_800 },
  };
}

/** Adds bench jobs: `addBulk` chunks with a window of chunks in flight, or one `add` per job at a steady rate. */
export const producer = {
  async create(spec: Spec) {
    const queue = new Queue<BenchPayload>(spec.queue, { connection: connection(spec.port) });
    await queue.waitUntilReady();
    return {
      burst: (a: { count: number; chunk: number; window: number }) => {
        const chunks = Math.ceil(a.count / a.chunk);
        return windowed(chunks, a.window, (c) => {
          const jobs = [];
          for (let i = c * a.chunk; i < Math.min(a.count, (c + 1) * a.chunk); i++) {
            jobs.push({ name: "noop", data: makePayload(i, false), opts: jobOptions(spec.variant, i) });
          }
          return queue.addBulk(jobs);
        }).then((r) => ({ ...r, sent: a.count }));
      },
      paced: (a: { ratePerSec: number; durationMs: number; warmupMs: number }) =>
        paced(a.ratePerSec, a.durationMs, (i) =>
          queue.add(
            "noop",
            makePayload(i, (i * 1000) / a.ratePerSec >= a.warmupMs),
            jobOptions(spec.variant, i),
          ),
        ),
      counts: () => queue.getJobCounts(),
      close: () => queue.close(),
    };
  },
};

/** A worker with concurrency 100 and a no-op processor; counts jobs once BullMQ has marked them completed. */
export const worker = {
  async create(spec: Spec & { concurrency: number }) {
    const tally = new ConsumerTally();
    const w = new Worker<BenchPayload>(spec.queue, async () => undefined, {
      connection: connection(spec.port),
      concurrency: spec.concurrency,
    });
    let failed = 0;
    w.on("completed", (job) => tally.done(job.data));
    w.on("failed", () => {
      failed++;
    });
    await w.waitUntilReady();
    return {
      waitCount: (a: { target: number }) => tally.waitCount(a.target),
      takeLatencies: async () => tally.takeLatencies(),
      failed: async () => failed,
      close: () => w.close(),
    };
  },
};
