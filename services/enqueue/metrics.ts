import type { Priority } from "../../shared/priority.ts";
import { counter, HTTP_SECONDS_BUCKETS, histogram, LabelLimiter } from "../../shared/telemetry/metrics.ts";

/**
 * The enqueue gateway's metrics. Accepted tasks are counted by the gateway (both APIs go through it);
 * rejections by the API that answered them, because some (malformed JSON, wrong media type, a body over
 * the limit) never reach the gateway.
 */

const accepted = counter({
  name: "sluice_tasks_accepted_total",
  help: "Tasks stored by the gateway (duplicates of an idempotency key excluded), by type and priority.",
  labelNames: ["type", "priority"] as const,
});

const deduplicated = counter({
  name: "sluice_tasks_deduplicated_total",
  help: "Enqueue requests answered with an earlier task of the same idempotency key, by type.",
  labelNames: ["type"] as const,
});

const rejected = counter({
  name: "sluice_tasks_rejected_total",
  help: "Enqueue requests refused, by error code (no type label: a rejected type may be garbage).",
  labelNames: ["reason"] as const,
});

const httpDuration = histogram({
  name: "sluice_http_request_duration_seconds",
  help: "HTTP request duration by route pattern, method and status code.",
  labelNames: ["route", "method", "status"] as const,
  buckets: HTTP_SECONDS_BUCKETS,
});

/** Types come from producers: the first 200 get their own series, later ones share `_other`. */
const types = new LabelLimiter(200);

/** Methods Node's HTTP parser accepts are a fixed set, but only these get their own series. */
const METHODS = new Set(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]);

/** A new task was stored. */
export function recordAccepted(type: string, priority: Priority): void {
  accepted.inc({ type: types.value(type), priority });
}

/** An idempotency key matched an earlier task: nothing new was stored. */
export function recordDeduplicated(type: string): void {
  deduplicated.inc({ type: types.value(type) });
}

/** An enqueue request was refused with error code `reason`. */
export function recordRejected(reason: string): void {
  rejected.inc({ reason });
}

/** One HTTP request answered; `route` is the matched route pattern (never the raw URL). */
export function observeHttpRequest(
  route: string | undefined,
  method: string,
  status: number,
  seconds: number,
): void {
  httpDuration.observe(
    {
      route: route ?? "unmatched",
      method: METHODS.has(method) ? method : "other",
      status: String(status),
    },
    seconds,
  );
}
