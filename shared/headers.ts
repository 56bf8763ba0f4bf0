/** Message headers Sluice sets on stream messages (besides NATS' own `Nats-Msg-Id`). */
export const Headers = {
  /** On work messages: epoch ms when the dispatcher published it. */
  dispatchedAt: "Sluice-Dispatched-At",
  /**
   * On tasks the dispatcher hands to a worker: the `$JS.ACK…` subject of the tasks message, which the
   * worker acks. It cannot ride as the reply subject: nats-server drops a client publish whose reply
   * starts with `$JS.ACK.` (reserved reply).
   */
  ack: "Sluice-Ack",
  /** W3C trace context, carried from the enqueue request to the handler. */
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;
