import type { MsgHdrs } from "@nats-io/transport-node";
import { isRateLimited } from "../../shared/errors.ts";
import { recordDeadLetter } from "../../shared/telemetry/lifecycle-metrics.ts";
import { SpanKind, startTaskSpan } from "../../shared/telemetry/spans.ts";
import { tracingEnabled } from "../../shared/telemetry/tracing.ts";
import type { Outcome } from "./execution.ts";
import {
  type FinishedOutcome,
  primeWorkerSeries,
  recordFinished,
  recordSkipped,
  recordStarted,
  type SkipReason,
} from "./metrics.ts";

/**
 * The execution hook that carries metrics and tracing, so the execution itself only says "an attempt
 * begins" and "it ended with this outcome". One scope per attempt: it counts the start and the wait,
 * opens the handler span (child of the dispatch span in the handed-on task's headers) and makes it
 * active while the handler runs, then counts the outcome and ends the span.
 */

/** An attempt about to begin (after the checks that may skip it: already final, already retried). */
export type AttemptStart = {
  id: string;
  type: string;
  attempt: number;
  /** When the task was accepted, epoch ms. */
  enqueuedAt: number;
  /** When a delayed task or a retry became due, epoch ms (its wait is counted from then). */
  runAt?: number | undefined;
  /** Headers of the handed-on task (trace context). */
  headers: MsgHdrs | undefined;
  /** The handler's signal: its abort reason tells a timeout apart from other failures. */
  signal: AbortSignal;
};

/** One attempt under observation. */
export type AttemptScope = {
  /** Run the handler inside the attempt (its span is the active one). */
  run<T>(fn: () => T): T;
  /**
   * The attempt ended (called once, whatever happened), with what its handler threw, if it threw: a
   * rate limit is not counted as a failure.
   */
  end(outcome: Outcome, handlerError?: unknown): void;
};

/** The hook an execution calls; see {@link createExecutionObserver}. */
export type ExecutionObserver = {
  begin(a: AttemptStart): AttemptScope;
  /** A delivery was acked without an attempt: its record showed the work done. */
  skipped(type: string, reason: SkipReason): void;
};

/** Run `fn` inside `scope` when there is one. */
export function inScope<T>(scope: AttemptScope | undefined, fn: () => T): T {
  return scope ? scope.run(fn) : fn();
}

/** The observer a worker process uses: metrics always, a span when tracing is on. */
export function createExecutionObserver(types: Iterable<string> = []): ExecutionObserver {
  for (const t of types) primeWorkerSeries(t);
  return {
    skipped: recordSkipped,
    begin(a) {
      const beganAt = Date.now();
      recordStarted(a.type, beganAt - Math.max(a.enqueuedAt, a.runAt ?? 0));
      // (checked here too: the attributes object is not built for nothing on every untraced task)
      const span = !tracingEnabled()
        ? undefined
        : startTaskSpan("sluice.run", {
            kind: SpanKind.CONSUMER,
            parent: a.headers,
            attributes: {
              "sluice.task.id": a.id,
              "sluice.task.type": a.type,
              "sluice.task.attempt": a.attempt,
              "messaging.system": "nats",
              "messaging.operation.type": "process",
            },
          });
      let ended = false;
      return {
        run: (fn) => (span ? span.run(fn) : fn()),
        end(outcome, handlerError) {
          if (ended) return;
          ended = true;
          const counted = finishedOutcome(outcome, a.signal, handlerError);
          if (counted) recordFinished(a.type, counted, Date.now() - beganAt);
          if (outcome === "dead") recordDeadLetter(a.type);
          if (!span) return;
          span.setAttributes({ "sluice.outcome": outcome });
          const failed = counted === "failed" || counted === "timed_out" || outcome === "dead";
          span.end(failed ? (counted ?? outcome) : undefined);
        },
      };
    },
  };
}

/**
 * What an execution outcome counts as. A failed attempt counts as failed whether it is retried
 * (`retrying`), given up (`dead`) or final (`failed`), and as timed_out when its signal says so. Not
 * counted: attempts handed back without running to an end (shutdown, pause, a handler's rate limit)
 * and deliveries that turned out to need nothing.
 */
export function finishedOutcome(
  outcome: Outcome,
  signal: AbortSignal,
  handlerError: unknown,
): FinishedOutcome | undefined {
  switch (outcome) {
    case "completed":
    case "cancelled":
    case "timed_out":
      return outcome;
    case "retrying":
      if (isRateLimited(handlerError)) return undefined;
      return signal.aborted && signal.reason === "timeout" ? "timed_out" : "failed";
    case "failed":
    case "dead":
      return signal.aborted && signal.reason === "timeout" ? "timed_out" : "failed";
    default:
      return undefined;
  }
}
