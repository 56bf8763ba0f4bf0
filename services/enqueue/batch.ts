import {
  ErrorCodes,
  isSluiceError,
  PayloadTooLargeError,
  SluiceError,
  ValidationError,
} from "../../shared/errors.ts";
import type { EnqueueOrigin, EnqueueResult, Gateway } from "./gateway.ts";
import { parseTaskInput } from "./input.ts";

/** Most tasks one batch may carry. */
export const BATCH_MAX = 1_000;

/** One item's outcome: accepted, or refused when storing it (never a validation error: those refuse the batch). */
export type BatchItem =
  | ({ index: number } & EnqueueResult)
  | { index: number; error: { status: number; code: string; message: string } };

/** What a batch answers: 202 when every task was stored, 207 when only some were. */
export type BatchResult = { status: 202 | 207; results: BatchItem[] };

/**
 * `POST /v1/tasks:batch`: up to 1,000 tasks. Validation is all-or-nothing — one invalid item refuses
 * the whole batch with per-item errors and nothing is written. Valid batches are then stored item by
 * item, all in flight at once; each item answers like a single enqueue (idempotency keys included).
 * If no item could be stored the batch fails with the first item's error (503, 429, …), so a 2xx
 * always means at least one task was stored and says which.
 */
export async function enqueueBatch(
  gateway: Gateway,
  body: unknown,
  maxPayloadBytes: number,
  origin: EnqueueOrigin,
): Promise<BatchResult> {
  const items = (body as { tasks?: unknown } | null)?.tasks;
  if (typeof body !== "object" || body === null || Array.isArray(body) || !Array.isArray(items)) {
    throw new ValidationError(ErrorCodes.invalidRequest, 'body must be {"tasks": [ …task… ]}', [
      { path: "tasks", message: "expected an array of tasks" },
    ]);
  }
  const extra = Object.keys(body).filter((k) => k !== "tasks");
  if (extra.length > 0) {
    throw new ValidationError(
      ErrorCodes.invalidRequest,
      `unknown field(s): ${extra.slice(0, 10).join(", ")}`,
    );
  }
  if (items.length === 0 || items.length > BATCH_MAX) {
    throw new ValidationError(
      ErrorCodes.invalidRequest,
      `a batch holds 1-${BATCH_MAX} tasks; this one has ${items.length}`,
      [{ path: "tasks", message: `1-${BATCH_MAX} items` }],
    );
  }
  const problems: { index: number; code: string; message: string; errors?: unknown }[] = [];
  items.forEach((item, index) => {
    try {
      parseTaskInput(item, maxPayloadBytes);
    } catch (err) {
      if (!isSluiceError(err)) throw err;
      problems.push({
        index,
        code: err.code,
        message: err.message,
        ...(err.details ? { errors: err.details } : {}),
      });
    }
  });
  if (problems.length > 0) {
    const detail = `${problems.length} of ${items.length} tasks are invalid; nothing was enqueued`;
    if (problems.every((p) => p.code === ErrorCodes.payloadTooLarge)) {
      throw Object.assign(new PayloadTooLargeError(detail), { details: problems });
    }
    throw new ValidationError(ErrorCodes.invalidRequest, detail, problems.slice(0, 100));
  }
  const settled = await Promise.allSettled(items.map((item) => gateway.enqueue(item, origin)));
  const results: BatchItem[] = settled.map((r, index) => {
    if (r.status === "fulfilled") return { index, ...r.value };
    const e = r.reason;
    if (isSluiceError(e) && (e.status < 500 || e.code === ErrorCodes.unavailable)) {
      return { index, error: { status: e.status, code: e.code, message: e.message } };
    }
    return { index, error: { status: 500, code: ErrorCodes.internal, message: "internal error" } };
  });
  const stored = results.filter((r) => !("error" in r)).length;
  if (stored === 0) {
    const first = settled[0] as PromiseRejectedResult;
    const e = first.reason;
    if (isSluiceError(e)) {
      throw Object.assign(
        new SluiceError(e.code, `no task was stored: ${e.message}`, { status: e.status, details: results }),
        {
          retryAfterS: (e as { retryAfterS?: number }).retryAfterS,
        },
      );
    }
    throw e;
  }
  return { status: stored === results.length ? 202 : 207, results };
}
