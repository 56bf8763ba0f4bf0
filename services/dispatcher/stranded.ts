import type { JetStreamManager } from "@nats-io/jetstream";
import { ErrorCodes } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isAsEnqueued, type TaskState } from "../../shared/task.ts";
import { type LegacyWorkState, legacyWorkState } from "./legacy-work.ts";

/**
 * How long after its `enqueuedAt` a task message must have been stored if it was stored at all. The
 * gateway sends the message and the record together and gives up on the publish within seconds; the
 * rest is room for the gateway's clock against the server's, which stamps what a stream stores.
 */
export const STRANDED_MARGIN_MS = 5 * 60_000;

/**
 * Finds `queued` records whose task message never reached the tasks stream: the gateway sends the two
 * together and different streams store them, so a gateway that died between them (or whose refused
 * publish was followed by a lost withdraw) leaves a record saying `queued` for a task that will never
 * run. A retry with the same idempotency key repairs it (gateway.ts `ensureQueued`); a caller that
 * retried without one left it for good. Such a request was never answered 202 (that waits for the
 * message's ack), so no accepted task is concerned: the record is ended as `failed` with
 * `enqueue_incomplete`, which says what happened and lets retention remove it.
 *
 * No stream can be asked for a message by its id, but the tasks stream is a work queue read in order
 * per subject: when the oldest message left on the task's subject was stored after the task's message
 * would have been, that message has left. It leaves only when a worker acks it after storing the
 * outcome, so a task that ran has no `queued` record any more, and the caller's compare-and-set on the
 * record it read fails for one that was still on its way. Lookups are kept for one sweep.
 *
 * Deployments upgraded from an earlier version may still have tasks in its work stream, which
 * ./legacy-work.ts moves back to the tail of their tasks subject, out of that order. So while the work
 * stream holds messages no record is ended, and once it is empty the oldest message on the subject
 * must also be younger than the work stream's last write, which is later than every task moved back.
 * The work stream is read before the tasks subject: a task moved between the two reads is then seen.
 */
export class StrandedRecords {
  readonly #jsm: JetStreamManager;
  readonly #names: Names;
  readonly #oldest = new Map<string, Promise<number>>();
  #legacy: Promise<LegacyWorkState> | undefined;

  constructor(jsm: JetStreamManager, names: Names) {
    this.#jsm = jsm;
    this.#names = names;
  }

  /**
   * True for a record still exactly as the gateway created it with its message, old enough that the
   * message would have been stored long ago. Only these are worth the stream reads.
   */
  static candidate(s: TaskState, now: number): boolean {
    return isAsEnqueued(s) && now - s.enqueuedAt > STRANDED_MARGIN_MS;
  }

  /** Whether the task message of a {@link candidate} has left (or never reached) the tasks stream. */
  async lacksMessage(s: TaskState): Promise<boolean> {
    const legacy = await this.#legacyState();
    if (legacy.exists && legacy.messages > 0) return false;
    const after = Math.max(s.enqueuedAt + STRANDED_MARGIN_MS, legacy.exists ? legacy.lastWriteMs : 0);
    return (await this.#oldestStoredMs(this.#names.tasksSubject(s.priority, s.type))) > after;
  }

  /** The record that ends a stranded one. */
  static ended(s: TaskState, now: number): TaskState {
    return {
      ...s,
      status: "failed",
      updatedAt: now,
      finishedAt: now,
      error: {
        code: ErrorCodes.enqueueIncomplete,
        message:
          "the task's record was stored but its message was not (the request was interrupted and never accepted); it never ran",
      },
    };
  }

  #legacyState(): Promise<LegacyWorkState> {
    if (!this.#legacy) {
      this.#legacy = legacyWorkState(this.#jsm, this.#names);
      // a failed read is not cached: the sweep fails and the next one asks again
      this.#legacy.catch(() => (this.#legacy = undefined));
    }
    return this.#legacy;
  }

  /** Store time (epoch ms) of the oldest message on a tasks `subject`; Infinity when there is none. */
  #oldestStoredMs(subject: string): Promise<number> {
    let p = this.#oldest.get(subject);
    if (!p) {
      // `next_by_subj` (server 2.9+) is missing from the client's MsgRequest type, not from the API
      const query = { seq: 0, next_by_subj: subject } as unknown as { seq: number };
      p = this.#jsm.streams
        .getMessage(this.#names.tasksStream, query)
        .then((m) => (m ? m.time.getTime() : Infinity));
      // a failed read is not cached: the sweep fails and the next one asks again
      p.catch(() => this.#oldest.delete(subject));
      this.#oldest.set(subject, p);
    }
    return p;
  }
}
