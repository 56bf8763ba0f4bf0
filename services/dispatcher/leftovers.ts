import type { ConsumerInfo, JetStreamManager, MsgRequest } from "@nats-io/jetstream";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { isNotFound } from "../../shared/nats/topology.ts";

/** Most leftovers one sweep deletes per subject: bounds a sweep's time; the next one goes on. */
const MAX_DELETES_PER_SUBJECT = 10_000;

/** What one sweep removed, per stream (only streams where something was removed). */
export type LeftoverSweep = Record<string, number>;

/**
 * Removes messages a work-queue stream kept although their consumer had acked them. A nats-server
 * killed with SIGKILL can lose an ack's delete that was not on disk yet while the consumer's ack floor
 * survives past it (seen on 2.9.10 in every restart test; docs/reliability.md): the message is then
 * never delivered again and never removed. It is not work, but it counts in the stream's `messages`,
 * and the gateway reads queue depth from there, so a queue could answer 429 early.
 *
 * Below a consumer's ack floor ({@link doneUpTo}), every message of its filter subject was acked, and in
 * a work-queue stream no other consumer may read that subject: deleting the subject's messages up to
 * there removes only such leftovers. That holds whoever acks: in the tasks stream a message held by
 * the dispatcher or handed to a worker is unacked (the worker acks it once the outcome is stored), so
 * the floor stays below every unfinished task.
 *
 * Swept: the tasks stream, and the work stream of earlier versions while it exists (a leftover there
 * would never be delivered, so ./legacy-work.ts could never empty it). Runs on the dispatcher leader,
 * every `RETENTION_SWEEP_MS`. A sweep reads each stream's info and its consumers; only when the stream
 * holds more messages than its consumers have pending or unacked does it look further (normally: a
 * read, no write).
 */
export class LeftoverSweeper {
  readonly #jsm: JetStreamManager;
  readonly #names: Names;
  readonly #log: Logger;
  readonly #onRemoved: ((stream: string, n: number) => void) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(deps: {
    jsm: JetStreamManager;
    names: Names;
    log: Logger;
    /** Metrics hook: `n` leftovers removed from `stream`. */
    onRemoved?: (stream: string, n: number) => void;
  }) {
    this.#jsm = deps.jsm;
    this.#names = deps.names;
    this.#log = deps.log;
    this.#onRemoved = deps.onRemoved;
  }

  /** Sweep every `intervalMs` until stopped. */
  start(intervalMs: number): void {
    this.#timer = setInterval(() => void this.sweep(), intervalMs);
    this.#timer.unref();
  }

  /** Stop sweeping. */
  stop(): void {
    clearInterval(this.#timer);
  }

  /** One sweep of the tasks stream (and the work stream, if any); answers what it removed. Never throws. */
  async sweep(): Promise<LeftoverSweep> {
    if (this.#running) return {};
    this.#running = true;
    const removed: LeftoverSweep = {};
    try {
      for (const stream of [this.#names.tasksStream, this.#names.workStream]) {
        try {
          const n = await this.#sweepStream(stream);
          if (n > 0) removed[stream] = n;
        } catch (err) {
          this.#log.warn({ err: String(err), stream }, "leftover sweep failed; will try again");
        }
      }
    } finally {
      this.#running = false;
    }
    return removed;
  }

  async #sweepStream(stream: string): Promise<number> {
    let state: Awaited<ReturnType<JetStreamManager["streams"]["info"]>>["state"];
    try {
      ({ state } = await this.#jsm.streams.info(stream));
    } catch (err) {
      // the work stream exists only in deployments upgraded from an earlier version
      if (stream === this.#names.workStream && isNotFound(err)) return 0;
      throw err;
    }
    if (state.messages === 0) return 0;
    const consumers = [];
    for await (const ci of this.#jsm.consumers.list(stream)) consumers.push(ci);
    // a message is work while some consumer has it pending or unacked; when the stream holds no more
    // than that, there are no leftovers and nothing is deleted (the usual case: a read, no write)
    const work = consumers.reduce((n, ci) => n + ci.num_pending + ci.num_ack_pending, 0);
    if (state.messages <= work) return 0;
    // which subjects hold messages (asked only now: the answer lists every subject)
    const { state: bySubject } = await this.#jsm.streams.info(stream, { subjects_filter: ">" });
    let total = 0;
    for (const ci of consumers) {
      const filter = ci.config.filter_subject;
      if (!filter || !bySubject.subjects?.[filter]) continue;
      const upTo = doneUpTo(ci);
      if (upTo < bySubject.first_seq) continue; // nothing of any subject lies at or below it
      const n = await this.#deleteDone(stream, filter, bySubject.first_seq, upTo);
      if (n > 0) {
        total += n;
        this.#onRemoved?.(stream, n);
        this.#log.warn(
          { stream, consumer: ci.name, filter, doneUpTo: upTo, removed: n },
          "removed acked messages a work-queue stream kept",
        );
      }
    }
    return total;
  }

  /**
   * Delete the messages of `filter` from `from` up to `upTo`, one by one. Not a purge: a filtered purge
   * on nats-server 2.9.10 also forgot every unacked delivery of the subject's consumer (checked: its
   * `num_ack_pending` went 1 → 0 for a message above the purge), which would lose that task if its
   * worker then died. Deleting single messages leaves consumer state alone.
   */
  async #deleteDone(stream: string, filter: string, from: number, upTo: number): Promise<number> {
    let n = 0;
    for (let seq = from; seq <= upTo && n < MAX_DELETES_PER_SUBJECT; ) {
      // the first message of the subject at or after `seq` (`next_by_subj`: nats-server 2.9+)
      const query = { seq, next_by_subj: filter } as unknown as MsgRequest;
      const m = await this.#jsm.streams.getMessage(stream, query);
      if (!m || m.seq > upTo) break;
      await this.#jsm.streams.deleteMessage(stream, m.seq, false);
      n++;
      seq = m.seq + 1;
    }
    return n;
  }
}

/**
 * The stream sequence up to which every message of the consumer's subject is done (delivered and
 * acked). The ack floor says so by definition. When nothing is unacked and every delivery is acked
 * (the floor's consumer sequence is the last delivered one), everything delivered is done too: after a
 * restart nats-server 2.9.10 was seen leaving the floor's *stream* sequence far behind in exactly that
 * state (consumer floor 900 of 900 delivered, stream floor 280 of 1,000), with the leftovers between.
 */
export function doneUpTo(ci: ConsumerInfo): number {
  const allAcked = ci.num_ack_pending === 0 && ci.ack_floor.consumer_seq === ci.delivered.consumer_seq;
  return allAcked ? Math.max(ci.ack_floor.stream_seq, ci.delivered.stream_seq) : ci.ack_floor.stream_seq;
}
