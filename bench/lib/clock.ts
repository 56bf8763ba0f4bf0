/**
 * One clock for every bench process: epoch milliseconds with sub-millisecond resolution. Roles run in
 * separate processes on one machine, so a timestamp taken in a producer is compared with one taken in
 * a consumer; `performance.timeOrigin` is the wall clock at process start (µs precision), which keeps
 * processes aligned to well under 0.1 ms here, unlike `Date.now()`'s whole milliseconds.
 */

/** Epoch time in ms, fractional. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** Resolve after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `fn` every `intervalMs` until it returns a truthy value; throw `what` after `timeoutMs`. */
export async function until<T>(
  what: string,
  fn: () => T | Promise<T>,
  timeoutMs: number,
  intervalMs = 25,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}
