const decoder = new TextDecoder();

/**
 * How much later than a rebuild's start a worker's report must be written to count, ms: room for a
 * task handed on just before the start to reach the worker, and for the worker's clock against ours
 * (the same second that worker liveness allows, shared/workers.ts `isLive`).
 */
export const REPORT_MARGIN_MS = 1000;
/** How often a rebuild looks for the reports it waits for, ms (the registry is in memory: cheap). */
const POLL_MS = 100;

/** Where running keys are reported: the worker registry (dispatcher/registry.ts). */
export type KeyReports = {
  runningKeys(type: string, since: number): Map<string, number> | undefined;
};

/** The `concurrencyKey` of a task message body, or undefined (none, or not a task). */
export function concurrencyKeyOf(data: Uint8Array): string | undefined {
  try {
    const body = JSON.parse(decoder.decode(data)) as { concurrencyKey?: unknown } | null;
    const k = body?.concurrencyKey;
    return typeof k === "string" && k.length > 0 ? k : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Running tasks per concurrencyKey of a type, as the workers report them in their registration
 * records (running or finishing, shared/workers.ts), once every live worker serving the type has
 * reported at least {@link REPORT_MARGIN_MS} after this call. So every task handed on before the call
 * (by this leader or the one before it, which stopped before we began to lead) that still runs is in
 * the answer; tasks handed on since are the caller's to add. It resolves within about a heartbeat
 * interval plus the margin (a worker that stops reporting stops being live, and stops being waited
 * for, within three); rejects when `signal` aborts.
 *
 * A task whose handler has ended but whose ack has not been sent is still counted: the result can only
 * over-count, which delays a key a little and never admits too many.
 */
export function reportedKeys(
  reports: KeyReports,
  type: string,
  signal?: AbortSignal,
): Promise<Map<string, number>> {
  const since = Date.now() + REPORT_MARGIN_MS;
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason ?? new Error("aborted"));
    };
    const look = () => {
      if (signal?.aborted) return onAbort();
      const counts = Date.now() >= since ? reports.runningKeys(type, since) : undefined;
      if (counts) {
        signal?.removeEventListener("abort", onAbort);
        resolve(counts);
        return;
      }
      timer = setTimeout(look, POLL_MS);
      timer.unref();
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    look();
  });
}
