import { SluiceClientError, WaitTimeoutError } from "../../client/index.ts";

/**
 * Exit codes of `sluice`: one meaning each, so scripts can branch on them (docs/api.md lists them).
 */
export const Exit = {
  /** Done; for `task watch` and `enqueue --wait`: the task completed. */
  ok: 0,
  /** The task ended unsuccessfully: failed, timed_out, cancelled or dead. */
  taskFailed: 1,
  /** Bad command line. */
  usage: 2,
  /** The task (or other thing named) does not exist: 404. */
  notFound: 3,
  /** The API key is missing, wrong, or lacks the scope: 401/403. */
  auth: 4,
  /** The gateway is unreachable or unavailable (503, connection refused, timeout). */
  unavailable: 5,
  /** The gateway refused the request: invalid, conflicting, too large, queue full (400/409/413/415/429). */
  refused: 6,
  /** Waiting ran out of time; the task is still going. */
  waitTimeout: 7,
  /** Anything else (a bug, an unexpected answer). */
  internal: 10,
} as const;

/** A mistake on the command line; the message says what to type instead. */
export class UsageError extends Error {
  override name = "UsageError";
}

/** The exit code for an error. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof UsageError) return Exit.usage;
  if (err instanceof WaitTimeoutError) return Exit.waitTimeout;
  if (err instanceof SluiceClientError) {
    if (err.status === 0 || err.status >= 500) return Exit.unavailable;
    if (err.status === 401 || err.status === 403) return Exit.auth;
    if (err.status === 404) return Exit.notFound;
    return Exit.refused;
  }
  return Exit.internal;
}

/** One line describing an error for a person. */
export function describeError(err: unknown): string {
  if (err instanceof SluiceClientError) {
    const retry = err.retryAfterS ? ` (retry after ${err.retryAfterS} s)` : "";
    const status = err.status === 0 ? "" : ` [${err.status} ${err.code}]`;
    return `${err.message}${status}${retry}`;
  }
  if (err instanceof Error) return err.message;
  return String(err);
}
