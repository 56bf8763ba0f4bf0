import { DeliverPolicy, type JetStreamManager, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { AckedPublisher, isWrongLastSequence } from "../../shared/nats/publisher.ts";
import { isFinal, type TaskState, type TaskStatus } from "../../shared/task.ts";
import { StrandedRecords } from "./stranded.ts";

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
  /** Metrics hook: `n` stranded `queued` records of `type` ended. */
  onStrandedEnded?: (type: string, n: number) => void;
};

/** What one sweep did. */
export type SweepResult = { removed: number; kept: number; stranded: number };

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A record's state; undefined when unreadable (nothing can use it: removed). */
function parseState(data: Uint8Array): TaskState | undefined {
  try {
    return JSON.parse(decoder.decode(data)) as TaskState;
  } catch {
    return undefined;
  }
}

/**
 * Removes finished task records once their retention has passed, so the state bucket (and with it
 * idempotency keys) stays bounded under constant load. Runs on the dispatcher leader only.
 *
 * The bucket keeps one message per key, so its stream is ordered by each record's last write. A sweep
 * walks it from the oldest message while messages are older than the shortest retention; a record that
 * must stay (not final yet, or a failure younger than its longer retention) is written again, which moves
 * it to the tail; then one purge removes everything before the first message it did not walk. One purge
 * per sweep instead of one delete per record, and no delete markers left behind.
 *
 * A `queued` record met there whose task message never reached the tasks stream is ended instead of
 * kept (./stranded.ts): otherwise it would say `queued` for ever, moved to the tail every sweep.
 */
export class RetentionSweeper {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager;
  readonly #names: Names;
  readonly #log: Logger;
  readonly #o: RetentionOptions & { batchMax: number };
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

  /**
   * One sweep; answers how many records it removed, how many it moved to the tail, and how many
   * stranded `queued` records it ended.
   */
  async sweep(now = Date.now()): Promise<SweepResult> {
    if (this.#running) return { removed: 0, kept: 0, stranded: 0 };
    this.#running = true;
    try {
      return await this.#sweep(now);
    } catch (err) {
      this.#log.warn({ err: String(err) }, "retention sweep failed; will try again");
      return { removed: 0, kept: 0, stranded: 0 };
    } finally {
      this.#running = false;
    }
  }

  async #sweep(now: number): Promise<SweepResult> {
    const stream = `KV_${this.#names.stateBucket}`;
    const info = await this.#jsm.streams.info(stream);
    if (info.state.messages === 0) return { removed: 0, kept: 0, stranded: 0 };
    const cutoff = now - Math.min(this.#o.completedMs, this.#o.failedMs);
    // The oldest record is younger than the shortest retention (a young bucket, or records written
    // back by the last sweep): nothing to walk. Without this a sweep opened a consumer and had the
    // server load and send a batch of the oldest records only to stop at the first; under load on a
    // 2-core machine the whole pipeline stalled 110–290 ms once a minute (docs/performance.md).
    if (Date.parse(info.state.first_ts) >= cutoff) return { removed: 0, kept: 0, stranded: 0 };
    const js = jetstream(this.#nc);
    const c = await js.consumers.get(stream, {
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: info.state.first_seq,
    });
    const keep: { subject: string; data: Uint8Array; seq: number; state: TaskState }[] = [];
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
        const state = parseState(m.data);
        if (!state || this.#expired(state, now)) removed++;
        else keep.push({ subject: m.subject, data: m.data, seq: m.seq, state });
        if (m.info.pending === 0) break walk;
      }
      if (got === 0) break;
    }
    if (purgeBelow <= info.state.first_seq) return { removed: 0, kept: 0, stranded: 0 };
    // records that stay move past the purge point, a stranded one as its final record; compare-and-set
    // on the revision read, so a record rewritten meanwhile (moved on, or by a sweep elsewhere) wins
    const stranded = new StrandedRecords(this.#jsm, this.#names);
    const ended: TaskState[] = [];
    await Promise.all(
      keep.map(async (k) => {
        const end = StrandedRecords.candidate(k.state, now) && (await stranded.lacksMessage(k.state));
        const data = end ? encoder.encode(JSON.stringify(StrandedRecords.ended(k.state, now))) : k.data;
        try {
          await this.#publisher.publish(k.subject, data, { expectLastSubjectSeq: k.seq });
          if (end) ended.push(k.state);
        } catch (err) {
          if (!isWrongLastSequence(err)) throw err;
        }
      }),
    );
    await this.#jsm.streams.purge(stream, { seq: purgeBelow });
    if (removed > 0)
      this.#log.info({ removed, kept: keep.length }, "retention: finished task records removed");
    if (ended.length > 0) {
      const byType = new Map<string, number>();
      for (const e of ended) byType.set(e.type, (byType.get(e.type) ?? 0) + 1);
      for (const [type, n] of byType) this.#o.onStrandedEnded?.(type, n);
      this.#log.warn(
        { stranded: ended.length, ids: ended.slice(0, 20).map((e) => e.id) },
        "retention: queued records whose task message was never stored ended as failed (enqueue_incomplete)",
      );
    }
    return { removed, kept: keep.length - ended.length, stranded: ended.length };
  }

  #expired(s: TaskState, now: number): boolean {
    if (!isFinal(s.status)) return false;
    const at = s.finishedAt ?? s.updatedAt;
    return at + this.#retention(s.status) <= now;
  }

  #retention(status: TaskStatus): number {
    return status === "completed" || status === "cancelled" ? this.#o.completedMs : this.#o.failedMs;
  }
}
