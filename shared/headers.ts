/** Message headers Sluice sets on stream messages (besides NATS' own `Nats-Msg-Id`). */
export const Headers = {
  /**
   * On tasks a dispatcher hands to a worker in the header form (older dispatchers, and workers that do
   * not ask for hand-off replies: shared/nats/delivery.ts): epoch ms when the dispatcher handed it on.
   */
  dispatchedAt: "Sluice-Dispatched-At",
  /**
   * The header form's `$JS.ACK…` subject of the tasks message, which the worker acks. It cannot ride
   * as the reply subject as it is: nats-server drops a client publish whose reply starts with
   * `$JS.ACK.` (reserved reply); the reply form renames it (`handOffReply`).
   */
  ack: "Sluice-Ack",
  /** W3C trace context, carried from the enqueue request to the handler. */
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;
