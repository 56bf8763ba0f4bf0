import type { JetStreamManager } from "@nats-io/jetstream";
import type { Names } from "../../shared/names.ts";
import type { ServiceProcess } from "../../test/support/processes.ts";
import { epochMs, sleep } from "../lib/clock.ts";
import type { SendRun } from "../lib/drive.ts";
import type { RoleHandle } from "../lib/rpc.ts";
import { type ProcUsage, sampleProcesses } from "../lib/sampler.ts";
import type { Settings } from "../lib/settings.ts";
import { unfinished, untilEmpty } from "../lib/sluice-checks.ts";
import { type LatencySummary, perSec, round, summarize } from "../lib/stats.ts";
import { type Rate, rateOf } from "./peer.ts";

/**
 * The two Sluice measures taken with a backlog waiting (issue #7): how long an urgent task waits to start
 * while a `bulk` backlog drains, and how much memory each process holds while a very large backlog
 * drains. Both queue their backlog while no worker runs, then start one.
 */

/** Ids of the urgent tasks: a subject token, so the observer's watch carries only their records. */
const URGENT_IDS = "urgent.";
const BULK_IDS = "bulk-";
/** Ids of the memory measure's backlog. Most of it is purged unrun, so the audit counts them apart. */
export const BACKLOG_IDS = "backlog-";

/** Urgent tasks sent at a steady rate while a backlog of `bulk` tasks drains. */
export type UrgentUnderBacklog = {
  /** `bulk` tasks queued (direct publish, no worker running) before the measure. */
  bulk: number;
  bulkPublishPerSec: number;
  /** From the worker being ready to the tasks stream empty: the bulk tasks and the urgent ones among them. */
  bulkDrain: Rate;
  urgentRatePerSec: number;
  urgentSent: number;
  /** Per urgent task: its record's `startedAt` (worker, whole ms) − the producer's send time, ms. */
  wait: LatencySummary;
  /**
   * The same wait in two parts, at the record's `dispatchedAt` (the dispatcher's clock): until the
   * dispatcher handed it to a worker that asked for a task (pulled, held until a worker had a free
   * slot), and from there until that worker started it (the hand-off over core NATS and the worker's
   * own start-up of the task).
   */
  stages: { toDispatched: LatencySummary; dispatchedToStarted: LatencySummary };
};

/** Memory while a large backlog drains; what is left after the sampling is purged. */
export type MillionBacklog = {
  /** Tasks queued (direct publish, priorities cycled, no worker running). */
  published: number;
  publishRatePerSec: number;
  /** How long the drain was sampled (from the worker being ready), and the tasks that ended meanwhile. */
  sampledSeconds: number;
  drained: number;
  drainRatePerSec: number;
  /** Messages purged from the tasks stream after the sampling (the tasks not finished by then). */
  purged: number;
  /** RSS and CPU of the services and the nats-server over the sampled drain. */
  rss: Record<string, ProcUsage>;
};

/** What the backlog measures need from the Sluice part. */
export type BacklogRig = {
  jsm: JetStreamManager;
  n: Names;
  prod: RoleHandle;
  /** Start a state observer role for ids with this prefix (stopped at the end of the part at the latest). */
  observe(idPrefix: string): Promise<RoleHandle>;
  /** Start the worker (stopped at the end of the part if still running). */
  startWorker(): Promise<ServiceProcess>;
  /** SIGTERM a worker, wait until it has drained and exited, and keep its exit code. */
  stopWorker(w: ServiceProcess): Promise<void>;
  /** Processes whose memory the large backlog measure samples, besides the worker. */
  pids: Record<string, number>;
};

/**
 * With no worker running, queue `urgentBulkCount` bulk tasks; then start a worker and, until the tasks
 * stream is empty, send urgent tasks at `urgentRatePerSec`. Returns the figures and the worker, still running.
 */
export async function urgentUnderBacklog(
  s: Settings,
  rig: BacklogRig,
): Promise<{ result: UrgentUnderBacklog; worker: ServiceProcess }> {
  const bulk = await rig.prod.call<SendRun>(
    "burst",
    { count: s.urgentBulkCount, idPrefix: BULK_IDS, priority: "bulk" },
    Math.max(120_000, s.urgentBulkCount),
  );
  const obs = await rig.observe(URGENT_IDS);
  const worker = await rig.startWorker();
  const drainTimeoutMs = Math.max(60_000, s.urgentBulkCount);
  const drainStart = epochMs();
  // paced, never in bursts: each urgent task meets the backlog on its own, as a user's would
  const urgent = rig.prod.call<SendRun & { sentAt: number[] }>(
    "paced",
    {
      ratePerSec: s.urgentRatePerSec,
      durationMs: drainTimeoutMs,
      warmupMs: 0,
      idPrefix: URGENT_IDS,
      priority: "urgent",
    },
    drainTimeoutMs + 60_000,
  );
  urgent.catch(() => undefined); // awaited below; a failure here must not go unhandled meanwhile
  let drainEnd: number;
  try {
    drainEnd = await untilEmpty(rig.jsm, rig.n, drainTimeoutMs);
  } finally {
    await rig.prod.call("stopPaced");
  }
  const run = await urgent;
  await obs.call("waitFinal", { target: run.sent }, 60_000);
  const seen = await obs.call<{ startedAt: number[]; dispatchedAt: number[] }>("take");
  await obs.stop();
  const waits: number[] = [];
  const toDispatched: number[] = [];
  const dispatchedToStarted: number[] = [];
  for (let i = 0; i < run.sent; i++) {
    const started = seen.startedAt[i];
    const dispatched = seen.dispatchedAt[i];
    if (started === undefined || dispatched === undefined)
      throw new Error(`urgent task ${URGENT_IDS}${i} ended without a startedAt or dispatchedAt`);
    waits.push(started - run.sentAt[i]!);
    toDispatched.push(dispatched - run.sentAt[i]!);
    dispatchedToStarted.push(started - dispatched);
  }
  return {
    result: {
      bulk: bulk.sent,
      bulkPublishPerSec: perSec(bulk.sent, bulk.finishedAt - bulk.startedAt),
      bulkDrain: rateOf(bulk.sent, drainStart, drainEnd),
      urgentRatePerSec: s.urgentRatePerSec,
      urgentSent: run.sent,
      wait: summarize(waits),
      stages: {
        toDispatched: summarize(toDispatched),
        dispatchedToStarted: summarize(dispatchedToStarted),
      },
    },
    worker,
  };
}

/**
 * With no worker running, queue `backlogCount` tasks; then start a worker and sample every process's
 * memory for `backlogSampleMs` of draining (less if it drains sooner). Draining it all would take minutes
 * and measure nothing new, so the worker is then stopped and the tasks stream is purged: the tasks that
 * did not end keep whatever record they had (none, `dispatched`), which the audit allows for their ids.
 */
export async function millionBacklog(s: Settings, rig: BacklogRig): Promise<MillionBacklog> {
  const pub = await rig.prod.call<SendRun>(
    "burst",
    { count: s.backlogCount, idPrefix: BACKLOG_IDS },
    Math.max(120_000, s.backlogCount / 5),
  );
  const mem = sampleProcesses(rig.pids);
  let rss: Record<string, ProcUsage>;
  let left: number;
  let t0: number;
  let t1: number;
  const worker = await rig.startWorker();
  try {
    mem.add("worker", worker.child.pid!);
    t0 = epochMs();
    for (;;) {
      left = await unfinished(rig.jsm, rig.n);
      t1 = epochMs();
      if (left === 0 || t1 - t0 >= s.backlogSampleMs) break;
      await sleep(250);
    }
  } finally {
    // the worker's shutdown is not part of the figures
    rss = mem.stop();
  }
  await rig.stopWorker(worker);
  // every task not finished is in the tasks stream, the ones the dispatcher still holds included
  const purged = (await rig.jsm.streams.purge(rig.n.tasksStream)).purged;
  const drained = Math.max(0, pub.sent - left);
  return {
    published: pub.sent,
    publishRatePerSec: perSec(pub.sent, pub.finishedAt - pub.startedAt),
    sampledSeconds: round((t1 - t0) / 1000, 1),
    drained,
    drainRatePerSec: perSec(drained, t1 - t0),
    purged,
    rss,
  };
}
