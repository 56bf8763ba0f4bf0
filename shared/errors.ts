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
  internal: "internal_error",
  // handler outcomes recorded in task state
  handlerFailed: "handler_failed",
  timedOut: "timed_out",
  invalidPayload: "invalid_payload",
  unknownTaskType: "unknown_task_type",
  workerLost: "worker_lost",
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

/** True for errors a handler marked as not worth retrying. */
export function isNonRetryable(err: unknown): err is NonRetryableError {
  return err instanceof NonRetryableError;
}

/** True for any SluiceError (or subclass). */
export function isSluiceError(err: unknown): err is SluiceError {
  return err instanceof SluiceError;
}
