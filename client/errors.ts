/**
 * Errors the client throws. Every refusal by the server keeps its HTTP status and stable `code`
 * (the same over HTTP and NATS), so callers branch on `code`, never on message text.
 */

/** The server refused or failed a request (or could not be reached: status 0, code `unreachable`). */
export class SluiceClientError extends Error {
  override name = "SluiceClientError";
  /** HTTP status (503, 404, …); 0 when the server could not be reached. */
  readonly status: number;
  /** Stable error code (`task_not_found`, `queue_full`, `unavailable`, …). */
  readonly code: string;
  /** Per-field or per-item problems, when the server gave them. */
  readonly errors: unknown;
  /** Seconds the server asked to wait before retrying (429, 503). */
  readonly retryAfterS: number | undefined;
  constructor(
    status: number,
    code: string,
    message: string,
    opts: { errors?: unknown; retryAfterS?: number | undefined; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.status = status;
    this.code = code;
    this.errors = opts.errors;
    this.retryAfterS = opts.retryAfterS;
  }
}

/** `wait`/`run` gave up before the task finished; the task itself goes on. */
export class WaitTimeoutError extends Error {
  override name = "WaitTimeoutError";
  readonly id: string;
  constructor(id: string, timeoutMs: number) {
    super(`task ${id} did not finish within ${timeoutMs} ms`);
    this.id = id;
  }
}

/** `run` found the task finished unsuccessfully (failed, timed_out, cancelled, dead). */
export class TaskFailedError extends Error {
  override name = "TaskFailedError";
  readonly id: string;
  readonly status: string;
  /** The task's recorded error `{code, message}`, if any. */
  readonly error: { code: string; message: string } | undefined;
  constructor(id: string, status: string, error: { code: string; message: string } | undefined) {
    super(`task ${id} ${status}${error ? `: ${error.message}` : ""}`);
    this.id = id;
    this.status = status;
    this.error = error;
  }
}

/** True for a client error with this code. */
export function isClientError(err: unknown, code?: string): err is SluiceClientError {
  return err instanceof SluiceClientError && (code === undefined || err.code === code);
}
