/**
 * Typed errors with stable codes. The HTTP layer maps `status` and `code` onto
 * `application/problem+json`; NATS replies carry the same `{code, message}`.
 */
export const ErrorCodes = {
  invalidJson: "invalid_json",
  invalidRequest: "invalid_request",
  invalidTaskType: "invalid_task_type",
  invalidPriority: "invalid_priority",
  payloadTooLarge: "payload_too_large",
  unsupportedMediaType: "unsupported_media_type",
  notFound: "not_found",
  taskNotFound: "task_not_found",
  conflict: "conflict",
  unavailable: "unavailable",
  queueFull: "queue_full",
  // gateway: API keys, webhooks, event streams, retry
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  invalidSignature: "invalid_signature",
  tooManyStreams: "too_many_streams",
  taskNotFinished: "task_not_finished",
  taskNotRetryable: "task_not_retryable",
  // recurring schedules (/v1/schedules)
  invalidSchedule: "invalid_schedule",
  scheduleNotFound: "schedule_not_found",
  scheduleExists: "schedule_exists",
  internal: "internal_error",
  // handler outcomes recorded in task state
  handlerFailed: "handler_failed",
  timedOut: "timed_out",
  invalidPayload: "invalid_payload",
  invalidResult: "invalid_result",
  /** The result is over MAX_RESULT_BYTES, or its record over what NATS stores (max_payload, max_msg_size). */
  resultTooLarge: "result_too_large",
  /** NATS refused the completed record for good for another reason than its size. */
  resultNotStorable: "result_not_storable",
  unknownTaskType: "unknown_task_type",
  workerLost: "worker_lost",
  /** The record was stored and the task message never was (an interrupted request, never accepted). */
  enqueueIncomplete: "enqueue_incomplete",
  cancelled: "cancelled",
  taskFinal: "task_final",
  taskNotRunning: "task_not_running",
  taskNotPaused: "task_not_paused",
  notDead: "task_not_dead",
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** Base class: every error Sluice raises on purpose has a code and an HTTP status. */
export class SluiceError extends Error {
  override name = "SluiceError";
  readonly code: ErrorCode;
  readonly status: number;
  /** Extra machine-readable detail (e.g. zod issues); never a stack or payload contents. */
  readonly details: unknown;
  constructor(
    code: ErrorCode,
    message: string,
    opts: { status?: number; cause?: unknown; details?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.code = code;
    this.status = opts.status ?? 500;
    this.details = opts.details;
  }
}

/** 400: the request is well-formed JSON but not a valid request. */
export class ValidationError extends SluiceError {
  override name = "ValidationError";
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(code, message, { status: 400, details });
  }
}

/** 413: a payload, result or body over its configured size. */
export class PayloadTooLargeError extends SluiceError {
  override name = "PayloadTooLargeError";
  constructor(message: string) {
    super(ErrorCodes.payloadTooLarge, message, { status: 413 });
  }
}

/** 404 */
export class NotFoundError extends SluiceError {
  override name = "NotFoundError";
  constructor(code: ErrorCode, message: string) {
    super(code, message, { status: 404 });
  }
}

/** 503: a dependency (NATS) is unreachable; the caller should retry after `retryAfterS`. */
export class UnavailableError extends SluiceError {
  override name = "UnavailableError";
  readonly retryAfterS: number;
  constructor(message: string, opts: { cause?: unknown; retryAfterS?: number } = {}) {
    super(ErrorCodes.unavailable, message, { status: 503, cause: opts.cause });
    this.retryAfterS = opts.retryAfterS ?? 1;
  }
}

/** 429: the type's queue holds `maxDepth` tasks already; nothing was written, retry after `retryAfterS`. */
export class QueueFullError extends SluiceError {
  override name = "QueueFullError";
  readonly retryAfterS: number;
  constructor(message: string, opts: { retryAfterS?: number } = {}) {
    super(ErrorCodes.queueFull, message, { status: 429 });
    this.retryAfterS = opts.retryAfterS ?? 1;
  }
}

/**
 * Thrown by a handler to fail a task without retrying it (bad input that will never succeed).
 * Mirrors BullMQ's UnrecoverableError.
 */
export class NonRetryableError extends Error {
  override name = "NonRetryableError";
  readonly code: string;
  constructor(message: string, opts: { code?: string; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.code = opts.code ?? ErrorCodes.handlerFailed;
  }
}

/**
 * Thrown by a handler when the service it calls said "slow down" (HTTP 429, an LLM provider's rate
 * limit): the task is rescheduled after `retryAfterMs` without counting an attempt, and the dispatcher
 * holds back the whole type for that long. Mirrors BullMQ's RateLimitError.
 */
export class RateLimitedError extends Error {
  override name = "RateLimitedError";
  /** How long to wait before trying this type again, ms. */
  readonly retryAfterMs: number;
  constructor(retryAfterMs: number, message = `rate limited; retry after ${retryAfterMs} ms`) {
    super(message);
    this.retryAfterMs = Math.max(0, Math.floor(retryAfterMs));
  }
}

/** True for a handler's rate-limit signal. */
export function isRateLimited(err: unknown): err is RateLimitedError {
  return err instanceof RateLimitedError;
}

/** 409: the request conflicts with the task's current status. */
export class ConflictError extends SluiceError {
  override name = "ConflictError";
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(code, message, { status: 409, details });
  }
}

/** True for errors a handler marked as not worth retrying. */
export function isNonRetryable(err: unknown): err is NonRetryableError {
  return err instanceof NonRetryableError;
}

/** True for any SluiceError (or subclass). */
export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError;
}
