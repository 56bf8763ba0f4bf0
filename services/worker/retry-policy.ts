import type { Backoff } from "../../shared/task.ts";

/** What a failed attempt leads to: another attempt after `delayMs`, or giving up. */
export type RetryDecision = { retry: true; delayMs: number } | { retry: false };

/** The resolved retry settings of one task: its own, else its queue's, else its definition's. */
export type RetryPolicy = { maxAttempts: number; backoff: Backoff; deadLetter: boolean };

/**
 * Decide after attempt `attempt` (1-based) failed. Exponential waits double per attempt from
 * `delayMs`, capped by `maxDelayMs`, then spread by ±jitter/2 so a burst of failures does not
 * come back as a burst of retries.
 */
export function decideRetry(
  policy: RetryPolicy,
  attempt: number,
  retryable: boolean,
  random = Math.random,
): RetryDecision {
  if (!retryable || attempt >= policy.maxAttempts) return { retry: false };
  return { retry: true, delayMs: backoffDelay(policy.backoff, attempt, random) };
}

/** Wait before the attempt after `attempt`, ms. */
export function backoffDelay(b: Backoff, attempt: number, random = Math.random): number {
  const cap = b.maxDelayMs ?? 3_600_000;
  const base = b.type === "fixed" ? b.delayMs : Math.min(cap, b.delayMs * 2 ** Math.max(0, attempt - 1));
  const jitter = b.jitter ?? (b.type === "exponential" ? 0.2 : 0);
  const spread = base * jitter * (random() - 0.5);
  return Math.max(0, Math.round(base + spread));
}
