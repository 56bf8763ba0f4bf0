import type { MsgHdrs } from "@nats-io/transport-node";
import {
  type Attributes,
  type Context,
  context,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import { carrierGetter, isMsgHdrs, msgHdrsGetter, msgHdrsSetter, type TraceSource } from "./propagation.ts";
import { sluiceTracer, tracingEnabled } from "./tracing.ts";

export { SpanKind };

/**
 * One span of a task's trace (enqueue, dispatch, run). Call sites hold `TaskSpan | undefined` and use
 * `?.`: with tracing off {@link startTaskSpan} returns undefined before doing anything else.
 */
export type TaskSpan = {
  /** Trace id (32 hex), for log lines. */
  readonly traceId: string;
  /** Write this span's context into outgoing message headers: it becomes the next hop's parent. */
  inject(h: MsgHdrs): void;
  /** Run `fn` with this span active (spans its code starts become children). */
  run<T>(fn: () => T): T;
  setAttributes(a: Attributes): void;
  /** End the span; an error (or an error message) marks it failed. Idempotent. */
  end(error?: unknown): void;
};

/** Options of {@link startTaskSpan}. */
export type TaskSpanOptions = {
  kind: SpanKind;
  /** Where the parent context comes from; without one (or without a `traceparent` in it) the span is a root. */
  parent?: TraceSource | undefined;
  attributes?: Attributes;
};

/** Start a span whose parent is the context in `parent`; undefined when tracing is off. */
export function startTaskSpan(name: string, o: TaskSpanOptions): TaskSpan | undefined {
  if (!tracingEnabled()) return undefined;
  // A message's parent is what its headers say, never whatever happens to be active in this process.
  const parentCtx = !o.parent
    ? ROOT_CONTEXT
    : isMsgHdrs(o.parent)
      ? propagation.extract(ROOT_CONTEXT, o.parent, msgHdrsGetter)
      : propagation.extract(ROOT_CONTEXT, o.parent, carrierGetter);
  const span = sluiceTracer().startSpan(name, { kind: o.kind, attributes: o.attributes }, parentCtx);
  return wrap(span, parentCtx);
}

function wrap(span: Span, parentCtx: Context): TaskSpan {
  const ctx = trace.setSpan(parentCtx, span);
  let ended = false;
  return {
    traceId: span.spanContext().traceId,
    inject: (h) => propagation.inject(ctx, h, msgHdrsSetter),
    run: (fn) => context.with(ctx, fn),
    setAttributes: (a) => void span.setAttributes(a),
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) {
        if (error instanceof Error) span.recordException(error);
        span.setStatus({
          code: SpanStatusCode.ERROR,
          message: error instanceof Error ? error.message : String(error),
        });
      }
      span.end();
    },
  };
}
