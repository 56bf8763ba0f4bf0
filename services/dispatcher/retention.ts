import { DeliverPolicy, type JetStreamManager, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { AckedPublisher, isWrongLastSequence } from "../../shared/nats/publisher.ts";
import { isFinal, type TaskState, type TaskStatus } from "../../shared/task.ts";

/** How long finished records are kept, by how they finished. */
export type RetentionOptions = {
  /** completed and cancelled records, ms (default 24 h). */
  completedMs: number;
  /** failed, timed_out and dead records, ms (default 7 days). */
  failedMs: number;
  /** Interval between sweeps, ms. */
  sweepMs: number;
  /** Most records examined in one sweep (bounds its time and memory). */
  batchMax?: number;
};

const decoder = new TextDecoder();

/**
 * Removes finished task records once their retention has passed, so the state bucket (and with it
 * idempotency keys) stays bounded under constant load. Runs on the dispatcher leader only.
 *
 * The bucket keeps one message per key, so its stream is ordered by each record's last write. A sweep
 * walks it from the oldest message while messages are older than the shortest retention; a record that
 * must stay (not final yet, or a failure younger than its longer retention) is written again, which moves
 * it to the tail; then one purge removes everything before the first message it did not walk. One purge
 * per sweep instead of one delete per record, and no delete markers left behind.
 */
export class RetentionSweeper {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #names: Names;
  readonly #log: Logger;
  readonly #o: Required<RetentionOptions>;
  readonly #publisher: AckedPublisher;
  #timer: NodeJS.Timeout | undefined;
  #running = false;

  constructor(
    deps: { nc: NatsConnection; jsm: JetStreamManager; names: Names; log: Logger },
    o: RetentionOptions,
  ) {
    this.#nc = deps.nc;
    this.#jsm = deps.jsm;
    this.#names = deps.names;
    this.#log = deps.log;
    this.#o = { batchMax: 100_000, ...o };
    this.#publisher = new AckedPublisher(deps.nc);
  }

  /** Sweep every `sweepMs` until stopped. */
  start(): void {
    this.#timer = setInterval(() => void this.sweep(), this.#o.sweepMs);
    this.#timer.unref();
  }

  /** Stop sweeping. */
  stop(): void {
    clearInterval(this.#timer);
    this.#publisher.close();
  }

  /** One sweep; answers how many records it removed and how many it moved to the tail. */
  async sweep(now = Date.now()): Promise<{ removed: number; kept: number }> {
    if (this.#running) return { removed: 0, kept: 0 };
    this.#running = true;
    try {
      return await this.#sweep(now);
    } catch (err) {
      this.#log.warn({ err: String(err) }, "retention sweep failed; will try again");
      return { removed: 0, kept: 0 };
    } finally {
      this.#running = false;
    }
  }

  async #sweep(now: number): Promise<{ removed: number; kept: number }> {
    const stream = `KV_${this.#names.stateBucket}`;
    const info = await this.#jsm.streams.info(stream);
    if (info.state.messages === 0) return { removed: 0, kept: 0 };
    const cutoff = now - Math.min(this.#o.completedMs, this.#o.failedMs);
    const js = jetstream(this.#nc);
    const c = await js.consumers.get(stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: info.state.first_seq,
    });
    const keep: { subject: string; data: Uint8Array; seq: number }[] = [];
    let removed = 0;
    let purgeBelow = 0;
    let seen = 0;
    walk: while (seen < this.#o.batchMax) {
      const batch = await c.fetch({ max_messages: Math.min(1000, this.#o.batchMax - seen), expires: 2000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        seen++;
        if (m.info.timestampNanos / 1e6 >= cutoff) {
          purgeBelow = m.seq;
          break walk;
        }
        purgeBelow = m.seq + 1;
        const op = m.headers?.get("KV-Operation");
        if (op === "DEL" || op === "PURGE") {
          removed++;
          continue;
        }
        if (this.#expired(m.data, now)) removed++;
        else keep.push({ subject: m.subject, data: m.data, seq: m.seq });
        if (m.info.pending === 0) break walk;
      }
      if (got === 0) break;
    }
    if (purgeBelow <= info.state.first_seq) return { removed: 0, kept: 0 };
    // move the records that stay past the purge point; a record rewritten meanwhile is there already
    await Promise.all(
      keep.map((k) =>
        this.#publisher.publish(k.subject, k.data, { expectLastSubjectSeq: k.seq }).catch((err) => {
          if (!isWrongLastSequence(err)) throw err;
        }),
      ),
    );
    await this.#jsm.streams.purge(stream, { seq: purgeBelow });
    if (removed > 0)
      this.#log.info({ removed, kept: keep.length }, "retention: finished task records removed");
    return { removed, kept: keep.length };
  }

  #expired(data: Uint8Array, now: number): boolean {
    let s: TaskState;
    try {
      s = JSON.parse(decoder.decode(data)) as TaskState;
    } catch {
      return true; // unreadable: nothing can use it
    }
    if (!isFinal(s.status)) return false;
    const at = s.finishedAt ?? s.updatedAt;
    return at + this.#retention(s.status) <= now;
  }

  #retention(status: TaskStatus): number {
    return status === "completed" || status === "cancelled" ? this.#o.completedMs : this.#o.failedMs;
  }
}
