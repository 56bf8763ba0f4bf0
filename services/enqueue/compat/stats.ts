import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Names } from "../../../shared/names.ts";
import { noticeCount } from "../../../shared/outcome-notice.ts";
import type { Session } from "../link.ts";
import { dispatcherConsumer } from "../queue-views.ts";
import { readWorkers } from "../workers.ts";

/**
 * The numbers behind the legacy stats routes. Queue depth and running tasks are read live from
 * JetStream and the workers bucket. Finished-task totals have no durable counter in Sluice (the
 * state bucket would have to be scanned), so, like the predecessor's in-memory counters, they count
 * outcomes since this gateway process started, from the workers' `<prefix>.events.<status>.<type>`
 * notices (best effort: a notice lost in a reconnect is not counted). Replicas count independently.
 */

/** Outcomes seen since start. */
export type OutcomeCounts = {
  completed: number;
  failed: number;
  timedOut: number;
  cancelled: number;
  dead: number;
};

/** The counter each outcome status adds to. */
const KEYS: Record<string, keyof OutcomeCounts> = {
  completed: "completed",
  failed: "failed",
  timed_out: "timedOut",
  cancelled: "cancelled",
  dead: "dead",
};

/** Counts the workers' outcome notices (batched: each says how many tasks it stands for); one core subscription. */
export class OutcomeCounters {
  readonly #counts: OutcomeCounts = { completed: 0, failed: 0, timedOut: 0, cancelled: 0, dead: 0 };
  #sub: Subscription | undefined;

  /** Subscribe (once); the subscription survives reconnects. */
  start(nc: NatsConnection, names: Names): void {
    if (this.#sub) return;
    const statusToken = names.prefix.split(".").length + 1;
    this.#sub = nc.subscribe(names.eventsSubjectAll, {
      callback: (_err, m) => {
        const status = m.subject.split(".")[statusToken];
        if (status === undefined || !Object.hasOwn(KEYS, status)) return; // not an outcome (retrying, paused, …)
        this.#counts[KEYS[status]!] += noticeCount(m.data);
      },
    });
  }

  stop(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
  }

  get counts(): Readonly<OutcomeCounts> {
    return { ...this.#counts };
  }
}

/**
 * The live part of the stats. A task's message stays in the tasks stream until its worker has stored
 * the outcome, so the stream's messages are every task accepted and not finished: `queued + inWork`.
 */
export type QueueSnapshot = {
  /** Tasks waiting: in the tasks stream and not delivered to the dispatcher (every type and priority). */
  queued: number;
  /**
   * Tasks in flight: held by the dispatcher leader or handed to a worker and not yet acked (running, or
   * storing the outcome): the tasks consumers' `num_ack_pending`.
   */
  inWork: number;
  /** Busy slots of live workers. */
  busy: number;
  /** Slots of live workers. */
  slots: number;
  liveWorkers: number;
  /** Types served by live workers. */
  types: string[];
  /** The tasks stream's message limit, -1 when unlimited (JetStream's convention). */
  maxQueued: number;
};

const CACHE_MS = 1_000;

/** Reads the live numbers, at most once a second however often dashboards poll. */
export class QueueSnapshots {
  #cached: { at: number; value: Promise<QueueSnapshot> } | undefined;

  async read(s: Session, names: Names): Promise<QueueSnapshot> {
    const now = Date.now();
    if (this.#cached && now - this.#cached.at < CACHE_MS) return this.#cached.value;
    const value = readSnapshot(s, names);
    this.#cached = { at: now, value };
    value.catch(() => {
      if (this.#cached?.value === value) this.#cached = undefined;
    });
    return value;
  }
}

async function readSnapshot(s: Session, names: Names): Promise<QueueSnapshot> {
  const [tasks, inWork, workers] = await Promise.all([
    s.jsm.streams.info(names.tasksStream),
    ackPending(s, names),
    readWorkers(s.workers),
  ]);
  let busy = 0;
  let slots = 0;
  for (const c of Object.values(workers.types)) {
    busy += c.busy;
    slots += c.slots;
  }
  return {
    // the rest of the stream waits, messages of types no worker has prepared (no consumer) included
    queued: Math.max(0, tasks.state.messages - inWork),
    inWork,
    busy,
    slots,
    liveWorkers: workers.workers.length,
    types: Object.keys(workers.types).sort(),
    maxQueued: tasks.config.max_msgs > 0 ? tasks.config.max_msgs : -1,
  };
}

/** Messages of the tasks stream delivered and not yet acked, summed over the dispatcher's consumers. */
async function ackPending(s: Session, names: Names): Promise<number> {
  let n = 0;
  for await (const ci of s.jsm.consumers.list(names.tasksStream))
    if (dispatcherConsumer(names, ci)) n += ci.num_ack_pending;
  return n;
}
