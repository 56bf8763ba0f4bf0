import { type DeadLetter, deadLetterMsgId } from "../../shared/dlq.ts";
import type { Names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import type { TaskError, TaskMessage, TaskState, TaskStatus } from "../../shared/task.ts";
import { traceHeadersFrom } from "../../shared/telemetry/propagation.ts";
import { classifyWriteError, type WriteFailure } from "./write-errors.ts";

const encoder = new TextEncoder();

/** What the recorder needs. */
export type RecorderDeps = { publisher: AckedPublisher; names: Names; workerId: string };

/**
 * How a write ended: `stored` (then the tasks message was acked), `redelivered` (NATS kept failing:
 * the message was nak'd), or refused for good ({@link Refused}).
 */
export type Settled = "stored" | "redelivered" | Refused;

/**
 * A write NATS will never accept as it is (services/worker/write-errors.ts). It was not retried, and
 * the tasks message was neither acked nor nak'd: the caller stores something it can, then settles.
 */
export type Refused = { refused: Exclude<WriteFailure, "transient">; err: unknown };

/** True when a write was refused for good. */
export function isRefused(r: Settled): r is Refused {
  return typeof r === "object";
}

/**
 * Writes the state transitions of one task attempt and settles its tasks message. Every method stores
 * what must survive first (state, dead letter, the next attempt) and acks the tasks message last, so a
 * crash in between means a redelivery — which the execution recognises — never a lost task. Transient
 * NATS failures are retried; a write NATS refuses for good is returned to the caller unsettled, since
 * a redelivery would only be refused again.
 */
export class Recorder {
  readonly #d: RecorderDeps;
  readonly #delivery: Delivery;
  constructor(deps: RecorderDeps, delivery: Delivery) {
    this.#d = deps;
    this.#delivery = delivery;
  }

  /** Store a state record (not awaited by callers that only report progress). */
  put(s: TaskState): Promise<unknown> {
    let data: Uint8Array;
    try {
      data = encoder.encode(JSON.stringify(s));
    } catch (err) {
      return Promise.reject(err); // a rejection like any failed write, never a throw into a timer
    }
    return this.#d.publisher.publish(`$KV.${this.#d.names.stateBucket}.${s.id}`, data);
  }

  /**
   * Store a final state and ack. Retries while NATS is reconnecting, and hands the task back if that
   * goes on; a record NATS refuses for good (too large) is reported, not retried.
   */
  async final(s: TaskState): Promise<Settled> {
    return this.#settle(() => this.put(s));
  }

  /** Record `retrying`, hand the next attempt to the scheduler, ack. */
  async retry(s: TaskState, next: TaskMessage, dueAt: number, msgId?: string): Promise<Settled> {
    return this.#settle(async () => {
      await this.put(s);
      // the retry continues the task's trace: its dispatch and run spans join the same trace
      await scheduleTask(this.#d.publisher, this.#d.names, next, dueAt, {
        msgId,
        headers: traceHeadersFrom(this.#delivery.headers),
      });
    });
  }

  /** File a dead letter, record `dead` (keeping the task message for replay), ack. */
  async dead(s: TaskState, task: TaskMessage, error: TaskError): Promise<Settled> {
    const entry: DeadLetter = {
      task,
      error,
      attempts: s.attempts,
      deadAt: s.finishedAt ?? Date.now(),
      workerId: this.#d.workerId,
    };
    return this.#settle(async () => {
      const ack = await this.#d.publisher.publish(
        this.#d.names.dlqSubject(task.type),
        JSON.stringify(entry),
        {
          msgId: deadLetterMsgId(task.id),
        },
      );
      // a duplicate ack (a second try after a lost ack) still names the stored entry's sequence
      await this.put({ ...s, task, dlqSeq: ack.seq });
    });
  }

  /**
   * Give the task back to the priority stream (worker shutdown): a fresh message re-enters priority
   * order without counting an attempt, which a nak would (the server counts every delivery).
   */
  async handBack(s: TaskState, task: TaskMessage): Promise<Settled> {
    return this.#settle(async () => {
      await this.#d.publisher.publish(
        this.#d.names.tasksSubject(task.priority, task.type),
        JSON.stringify(task),
        {
          msgId: `${task.id}:h${task.attempt ?? 1}:${this.#delivery.streamSeq}`,
          headers: traceHeadersFrom(this.#delivery.headers),
        },
      );
      await this.put(s);
    }, 3);
  }

  /** Ack without writing (the task is already where it should be). */
  ack(): void {
    this.#delivery.ack();
  }

  /** Never redeliver the tasks message: nothing about the task can be stored. */
  term(): void {
    this.#delivery.term();
  }

  async #settle(store: () => Promise<unknown>, tries = 12): Promise<Settled> {
    for (let i = 0; ; i++) {
      try {
        await store();
        break;
      } catch (err) {
        // sending the same message again cannot help: a redelivery would fail the same way, forever
        const failure = classifyWriteError(err);
        if (failure !== "transient") return { refused: failure, err };
        if (i >= tries) {
          // not stored: the server redelivers it (as another attempt) rather than lose it
          this.#delivery.nak(1000);
          return "redelivered";
        }
        this.#delivery.working();
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** i, 2000)));
      }
    }
    this.#delivery.ack();
    return "stored";
  }
}

/** Final status of a task given up without a dead letter. */
export function givenUpStatus(error: TaskError): TaskStatus {
  return error.code === "timed_out" ? "timed_out" : "failed";
}
