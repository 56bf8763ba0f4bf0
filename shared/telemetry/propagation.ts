import { type MsgHdrs, headers as newHeaders } from "@nats-io/transport-node";
import type { TextMapGetter, TextMapSetter } from "@opentelemetry/api";
import { Headers } from "../headers.ts";

/**
 * W3C trace context on NATS messages: the `traceparent` / `tracestate` headers carry a task's trace
 * from the enqueue request through the tasks and work streams to the handler. These helpers need no
 * SDK: untraced services still pass a caller's context along and put its trace id on their log lines.
 */

/** A `traceparent` / `tracestate` pair from somewhere other than a NATS message (an HTTP request). */
export type TraceCarrier = { traceparent?: string | undefined; tracestate?: string | undefined };

/** Where a trace context is read from: NATS message headers or a plain carrier. */
export type TraceSource = MsgHdrs | TraceCarrier;

const TRACEPARENT_RE = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const ZERO_TRACE = "0".repeat(32);

/** OTel getter over NATS headers (`get` answers "" for a missing key). */
export const msgHdrsGetter: TextMapGetter<MsgHdrs> = {
  keys: (h) => h.keys(),
  get: (h, key) => h.get(key) || undefined,
};

/** OTel setter writing into NATS headers. */
export const msgHdrsSetter: TextMapSetter<MsgHdrs> = {
  set: (h, key, value) => h.set(key, value),
};

/** OTel getter over a plain carrier. */
export const carrierGetter: TextMapGetter<TraceCarrier> = {
  keys: (c) => Object.keys(c),
  get: (c, key) =>
    key === Headers.traceparent ? c.traceparent : key === Headers.tracestate ? c.tracestate : undefined,
};

/** True when `s` is NATS headers rather than a plain carrier. */
export function isMsgHdrs(s: TraceSource): s is MsgHdrs {
  return typeof (s as MsgHdrs).keys === "function" && typeof (s as MsgHdrs).get === "function";
}

/** The `traceparent` of a source, or undefined. */
export function traceparentOf(s: TraceSource | undefined): string | undefined {
  if (!s) return undefined;
  return (isMsgHdrs(s) ? s.get(Headers.traceparent) : s.traceparent) || undefined;
}

/** The trace id (32 hex) of a valid `traceparent`, or undefined: for `traceId` on log lines. */
export function traceIdOf(s: TraceSource | undefined): string | undefined {
  const tp = traceparentOf(s);
  if (!tp) return undefined;
  const m = TRACEPARENT_RE.exec(tp);
  return m && m[1] !== ZERO_TRACE ? m[1] : undefined;
}

/** Copy a caller's trace context unchanged into outgoing headers (what an untraced hop does). */
export function copyTraceContext(from: TraceSource | undefined, to: MsgHdrs): void {
  if (!from) return;
  const tp = isMsgHdrs(from) ? from.get(Headers.traceparent) : from.traceparent;
  if (!tp) return;
  to.set(Headers.traceparent, tp);
  const ts = isMsgHdrs(from) ? from.get(Headers.tracestate) : from.tracestate;
  if (ts) to.set(Headers.tracestate, ts);
}

/**
 * New headers holding only the trace context of `from`, or undefined when it has none: for a message
 * that continues a task's trace (a retry, a task handed back) without copying anything else.
 */
export function traceHeadersFrom(from: TraceSource | undefined): MsgHdrs | undefined {
  if (!traceparentOf(from)) return undefined;
  const h = newHeaders();
  copyTraceContext(from, h);
  return h;
}

/** A plain carrier from HTTP request headers (first value of each). */
export function carrierFromHttp(h: Record<string, string | string[] | undefined>): TraceCarrier | undefined {
  const tp = first(h[Headers.traceparent]);
  if (!tp) return undefined;
  return { traceparent: tp, tracestate: first(h[Headers.tracestate]) };
}

function first(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
