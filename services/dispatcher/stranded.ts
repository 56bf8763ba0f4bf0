import type { JetStreamManager } from "@nats-io/jetstream";
import { ErrorCodes } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isAsEnqueued, type TaskState } from "../../shared/task.ts";

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
 * No stream can be asked for a message by its id, but both are work queues read in order per subject:
 * when the oldest message left on the task's tasks subject, and then on its work subject, was stored
 * after the task's message would have been, that message has left both. It leaves the work stream only
 * after a worker stored a final record, so a task that ran has no `queued` record any more, and the
 * caller's compare-and-set on the record it read fails for one that was still on its way. The tasks
 * subject is read first, in the order a task moves; lookups are kept for one sweep.
 */
export class StrandedRecords {
  readonly #jsm: JetStreamManager;
  readonly #names: Names;
  readonly #oldest = new Map<string, Promise<number>>();

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

  /** Whether the task message of a {@link candidate} has left (or never reached) both streams. */
  async lacksMessage(s: TaskState): Promise<boolean> {
    const after = s.enqueuedAt + STRANDED_MARGIN_MS;
    if (
      (await this.#oldestStoredMs(this.#names.tasksStream, this.#names.tasksSubject(s.priority, s.type))) <=
      after
    )
      return false;
    return (await this.#oldestStoredMs(this.#names.workStream, this.#names.workSubject(s.type))) > after;
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

  /** Store time (epoch ms) of the oldest message on `subject`; Infinity when there is none. */
  #oldestStoredMs(stream: string, subject: string): Promise<number> {
    const key = `${stream} ${subject}`;
    let p = this.#oldest.get(key);
    if (!p) {
      // `next_by_subj` (server 2.9+) is missing from the client's MsgRequest type, not from the API
      const query = { seq: 0, next_by_subj: subject } as unknown as { seq: number };
      p = this.#jsm.streams.getMessage(stream, query).then((m) => (m ? m.time.getTime() : Infinity));
      // a failed read is not cached: the sweep fails and the next one asks again
      p.catch(() => this.#oldest.delete(key));
      this.#oldest.set(key, p);
    }
    return p;
  }
}
