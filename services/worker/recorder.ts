import { type DeadLetter, deadLetterMsgId } from "../../shared/dlq.ts";
import type { Names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import type { TaskError, TaskMessage, TaskState, TaskStatus } from "../../shared/task.ts";
import { traceHeadersFrom } from "../../shared/telemetry/propagation.ts";

const encoder = new TextEncoder();

/** What the recorder needs. */
export type RecorderDeps = { publisher: AckedPublisher; names: Names; workerId: string };

/**
 * Writes the state transitions of one task attempt and settles its work message. Every method stores
 * what must survive first (state, dead letter, the next attempt) and acks the work message last, so a
 * crash in between means a redelivery — which the execution recognises — never a lost task.
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
    return this.#d.publisher.publish(
      `$KV.${this.#d.names.stateBucket}.${s.id}`,
      encoder.encode(JSON.stringify(s)),
    );
  }

  /** Store a final state and ack. Retries while NATS is reconnecting; hands the task back if that fails for good. */
  async final(s: TaskState): Promise<boolean> {
    return this.#settle(() => this.put(s));
  }

  /** Record `retrying`, hand the next attempt to the scheduler, ack. */
  async retry(s: TaskState, next: TaskMessage, dueAt: number, msgId?: string): Promise<boolean> {
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
  async dead(s: TaskState, task: TaskMessage, error: TaskError): Promise<boolean> {
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
  async handBack(s: TaskState, task: TaskMessage): Promise<boolean> {
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

  async #settle(store: () => Promise<unknown>, tries = 12): Promise<boolean> {
    for (let i = 0; ; i++) {
      try {
        await store();
        break;
      } catch {
        if (i >= tries) {
          // not stored: the server redelivers it (as another attempt) rather than lose it
          this.#delivery.nak(1000);
          return false;
        }
        this.#delivery.working();
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** i, 2000)));
      }
    }
    this.#delivery.ack();
    return true;
  }
}

/** Final status of a task given up without a dead letter. */
export function givenUpStatus(error: TaskError): TaskStatus {
  return error.code === "timed_out" ? "timed_out" : "failed";
}
