import type { z } from "zod";
import type { Logger } from "../../shared/logger.ts";
import type { Priority } from "../../shared/priority.ts";
import { Backoff, MAX_ATTEMPTS, TASK_TYPE_MAX, TASK_TYPE_RE } from "../../shared/task.ts";

export { NonRetryableError, RateLimitedError } from "../../shared/errors.ts";

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
  /**
   * Persist how far the task got (e.g. the last page parsed); resolves once stored. A resumed task and a
   * retry after a crash or failure receive it as `lastCheckpoint`. Must be JSON.
   */
  checkpoint(state: unknown): Promise<void>;
  /** The last checkpoint saved by an earlier attempt or before a pause, if any. */
  readonly lastCheckpoint: unknown;
};

/** Default retry policy: 3 attempts, exponential backoff from 1 s, capped at 1 h, ±10% jitter. */
export const DEFAULT_MAX_ATTEMPTS = 3;
export const DEFAULT_BACKOFF: Backoff = {
  type: "exponential",
  delayMs: 1000,
  maxDelayMs: 3_600_000,
  jitter: 0.2,
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
  /** Attempts before a failing task is given up (default 3); a task or the queue config may override. */
  readonly maxAttempts: number;
  /** Wait between attempts (default exponential from 1 s). */
  readonly backoff: Backoff;
  /** Give up into the dead-letter stream (`dead`, default) or just record `failed`/`timed_out`. */
  readonly deadLetter: boolean;
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
  /** Attempts before giving up (default 3). */
  maxAttempts?: number;
  /** Wait between attempts (default exponential from 1 s, cap 1 h, jitter 0.2). */
  backoff?: Backoff;
  /** File given-up tasks in the dead-letter stream (default true). */
  deadLetter?: boolean;
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
  const maxAttempts = opts.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > MAX_ATTEMPTS)
    throw new TypeError(`${opts.type}: maxAttempts must be an integer in 1..${MAX_ATTEMPTS}`);
  const backoff = Backoff.parse(opts.backoff ?? DEFAULT_BACKOFF);
  return Object.freeze({
    type: opts.type,
    payload: opts.payload,
    concurrency,
    timeoutMs,
    maxAttempts,
    backoff,
    deadLetter: opts.deadLetter ?? true,
    handler: opts.handler,
  });
}
