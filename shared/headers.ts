/** Message headers Sluice sets on stream messages (besides NATS' own `Nats-Msg-Id`). */
export const Headers = {
  /** On work messages: epoch ms when the dispatcher published it. */
  dispatchedAt: "Sluice-Dispatched-At",
  /** W3C trace context, carried from the enqueue request to the handler. */
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;
