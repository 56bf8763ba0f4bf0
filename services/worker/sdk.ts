import type { z } from "zod";
import type { Logger } from "../../shared/logger.ts";
import type { Priority } from "../../shared/priority.ts";
import { TASK_TYPE_MAX, TASK_TYPE_RE } from "../../shared/task.ts";

export { NonRetryableError } from "../../shared/errors.ts";

/**
 * The worker SDK: what a user writes to define a task type. Handlers are plain async functions; the
 * context gives them cancellation, progress and a logger, and they never touch NATS.
 */

/** Why a task's signal was aborted; `ctx.signal.reason` is one of these. */
export type AbortReason = "timeout" | "shutdown" | "cancelled" | "paused";

/** What a handler receives besides its payload. */
export type TaskContext = {
  /** Task id. */
  readonly id: string;
  readonly type: string;
  readonly priority: Priority;
  /** 1 on the first attempt; a redelivery after a worker crash counts as a new attempt. */
  readonly attempt: number;
  /** Aborted when the task times out, the worker shuts down, or the task is cancelled; `reason` says which. */
  readonly signal: AbortSignal;
  /** Report progress (0–100) with an optional message; recorded in the task state, throttled. */
  progress(percent: number, message?: string): void;
  /** Tell the server the task is alive (done automatically while the handler runs; for very long CPU loops). */
  working(): void;
  /** Logger bound to this task (`taskId`, `type`); never log secrets or whole payloads. */
  readonly log: Logger;
};

/** A task type's definition. */
export type TaskDefinition<S extends z.ZodType = z.ZodType, R = unknown> = {
  /** Task type name, e.g. `doc.chunk`. */
  readonly type: string;
  /** zod schema of the payload; a payload that fails it fails the task without running the handler. */
  readonly payload: S;
  /** Slots per worker process for this type (default 10). */
  readonly concurrency: number;
  /** Default timeout of one attempt, ms (default 5 min); a task may ask for its own. */
  readonly timeoutMs: number;
  readonly handler: (payload: z.output<S>, ctx: TaskContext) => Promise<R>;
};

/** Options of {@link defineTask}. */
export type DefineTaskOptions<S extends z.ZodType, R> = {
  type: string;
  payload: S;
  /** Slots per worker process (default 10). */
  concurrency?: number;
  /** Default timeout of one attempt, ms (default 300000). */
  timeoutMs?: number;
  handler: (payload: z.output<S>, ctx: TaskContext) => Promise<R>;
};

/** Payload type of a definition, for typed clients: `PayloadOf<typeof docChunk>`. */
export type PayloadOf<D> = D extends TaskDefinition<infer S, unknown> ? z.input<S> : never;
/** Result type of a definition. */
export type ResultOf<D> = D extends TaskDefinition<z.ZodType, infer R> ? R : never;

/** Define a task type. Validates the definition once, here, so a typo fails at startup. */
export function defineTask<S extends z.ZodType, R>(opts: DefineTaskOptions<S, R>): TaskDefinition<S, R> {
  if (opts.type.length > TASK_TYPE_MAX || !TASK_TYPE_RE.test(opts.type))
    throw new TypeError(`invalid task type ${JSON.stringify(opts.type)}`);
  const concurrency = opts.concurrency ?? 10;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000)
    throw new TypeError(`${opts.type}: concurrency must be an integer in 1..10000`);
  const timeoutMs = opts.timeoutMs ?? 300_000;
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1)
    throw new TypeError(`${opts.type}: timeoutMs must be ≥ 1`);
  return Object.freeze({
    type: opts.type,
    payload: opts.payload,
    concurrency,
    timeoutMs,
    handler: opts.handler,
  });
}
