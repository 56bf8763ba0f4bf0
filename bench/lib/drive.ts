import { epochMs, sleep } from "./clock.ts";

/**
 * The two ways a producer sends: as fast as the broker acknowledges (a window of unacknowledged sends,
 * refilled as acks arrive) and at a steady rate (for latency, where bursts would measure queueing).
 */

/** Timings of a run of sends, epoch ms. */
export type SendRun = { sent: number; failed: number; startedAt: number; finishedAt: number };

/** Call `send(i)` for i in [0, count), keeping at most `window` unresolved; resolves when all have settled. */
export async function windowed(
  count: number,
  window: number,
  send: (i: number) => Promise<unknown>,
): Promise<SendRun> {
  const startedAt = epochMs();
  let next = 0;
  let inFlight = 0;
  let failed = 0;
  let firstError: unknown;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (inFlight < window && next < count) {
        inFlight++;
        send(next++).then(settle, (e) => {
          failed++;
          firstError ??= e;
          settle();
        });
      }
      if (next >= count && inFlight === 0) resolve();
    };
    const settle = () => {
      inFlight--;
      pump();
    };
    pump();
  });
  if (failed > 0) throw new Error(`${failed} of ${count} sends failed; first: ${String(firstError)}`);
  return { sent: count, failed, startedAt, finishedAt: epochMs() };
}

/**
 * Call `send(i)` on schedule at `ratePerSec` for `durationMs`: message i is due at start + i/rate, and
 * every due message goes out on the next timer tick (ticks are ~1 ms, so at 2,000/s about two at a time).
 * Sends are not awaited one by one, only all together at the end. An aborted `stop` ends the run early
 * (for runs that last "until something else is done", with `durationMs` as their bound).
 */
export async function paced(
  ratePerSec: number,
  durationMs: number,
  send: (i: number) => Promise<unknown> | undefined,
  stop?: AbortSignal,
): Promise<SendRun & { maxLagMs: number }> {
  const total = Math.floor((ratePerSec * durationMs) / 1000);
  const startedAt = epochMs();
  const pending = new Set<Promise<unknown>>();
  let sent = 0;
  let failed = 0;
  let maxLagMs = 0;
  while (sent < total && !stop?.aborted) {
    const now = epochMs();
    const due = Math.min(total, Math.floor(((now - startedAt) * ratePerSec) / 1000) + 1);
    if (due - sent > 1) maxLagMs = Math.max(maxLagMs, ((due - sent - 1) * 1000) / ratePerSec);
    while (sent < due) {
      const p = send(sent++);
      if (p) {
        const tracked: Promise<unknown> = p.then(
          () => pending.delete(tracked),
          () => {
            failed++;
            pending.delete(tracked);
          },
        );
        pending.add(tracked);
      }
    }
    await sleep(1);
  }
  await Promise.all(pending);
  return { sent, failed, startedAt, finishedAt: epochMs(), maxLagMs };
}
