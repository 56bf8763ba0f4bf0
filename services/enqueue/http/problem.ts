import { type ErrorCode, ErrorCodes, isSluiceError, UnavailableError } from "../../../shared/errors.ts";
import { asUnavailable } from "../nats-errors.ts";

/** An RFC 9457 problem body as Sluice sends it; `code` is the stable machine-readable part. */
export type Problem = {
  type: string;
  title: string;
  status: number;
  code: ErrorCode;
  detail: string;
  errors?: unknown;
};

/** A problem plus the headers that go with it (`Retry-After` on 503). */
export type ProblemResponse = { status: number; body: Problem; headers: Record<string, string> };

/** Media type of every error response. */
export const PROBLEM_CONTENT_TYPE = "application/problem+json";

const TITLES: Partial<Record<ErrorCode, string>> = {
  invalid_json: "Malformed JSON",
  invalid_request: "Invalid request",
  invalid_task_type: "Invalid task type",
  invalid_priority: "Invalid priority",
  payload_too_large: "Payload too large",
  unsupported_media_type: "Unsupported media type",
  not_found: "Not found",
  task_not_found: "Task not found",
  conflict: "Conflict",
  unavailable: "Service unavailable",
  queue_full: "Queue full",
  unauthorized: "Unauthorized",
  forbidden: "Forbidden",
  invalid_signature: "Invalid signature",
  too_many_streams: "Too many event streams",
  task_not_finished: "Task not finished",
  task_not_retryable: "Task not retryable",
  internal_error: "Internal error",
};

/** Fastify's own errors we answer with a specific code; other 4xx become `invalid_request`. */
const FASTIFY_CODES: Record<string, { code: ErrorCode; status: number; detail: string }> = {
  FST_ERR_CTP_INVALID_JSON_BODY: {
    code: ErrorCodes.invalidJson,
    status: 400,
    detail: "body is not valid JSON",
  },
  FST_ERR_CTP_EMPTY_JSON_BODY: { code: ErrorCodes.invalidJson, status: 400, detail: "body is empty" },
  FST_ERR_CTP_BODY_TOO_LARGE: {
    code: ErrorCodes.payloadTooLarge,
    status: 413,
    detail: "request body is over the size limit",
  },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: {
    code: ErrorCodes.unsupportedMediaType,
    status: 415,
    detail: "send the body as application/json",
  },
};

/** Build a problem response for a code. */
export function problem(
  code: ErrorCode,
  status: number,
  detail: string,
  extra: { errors?: unknown; headers?: Record<string, string> } = {},
): ProblemResponse {
  const body: Problem = {
    type: `urn:sluice:problem:${code}`,
    title: TITLES[code] ?? code,
    status,
    code,
    detail,
  };
  if (extra.errors !== undefined) body.errors = extra.errors;
  return { status, body, headers: extra.headers ?? {} };
}

/**
 * Map any error to the response the client sees. Only errors raised on purpose (SluiceError, fastify's
 * 4xx) say what went wrong; anything else is a 500 whose detail reveals nothing internal.
 */
export function toProblem(raw: unknown): ProblemResponse {
  const err = asUnavailable(raw);
  if (isSluiceError(err)) {
    const headers: Record<string, string> = {};
    // 503 and 429 say when to come back (UnavailableError, QueueFullError, …)
    const retryAfterS = (err as { retryAfterS?: unknown }).retryAfterS;
    if (typeof retryAfterS === "number") headers["retry-after"] = String(Math.max(1, Math.ceil(retryAfterS)));
    const detail = err.status >= 500 && !(err instanceof UnavailableError) ? "internal error" : err.message;
    return problem(err.code, err.status, detail, { errors: err.details, headers });
  }
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  const known = typeof e?.code === "string" ? FASTIFY_CODES[e.code] : undefined;
  if (known) return problem(known.code, known.status, known.detail);
  const status = typeof e?.statusCode === "number" ? e.statusCode : 500;
  if (status >= 400 && status < 500) {
    return problem(ErrorCodes.invalidRequest, status, "the request could not be processed");
  }
  return problem(ErrorCodes.internal, 500, "internal error");
}
