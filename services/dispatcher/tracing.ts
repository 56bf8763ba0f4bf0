import type { MsgHdrs } from "@nats-io/transport-node";
import type { Priority } from "../../shared/priority.ts";
import { copyTraceContext } from "../../shared/telemetry/propagation.ts";
import { SpanKind, startTaskSpan, type TaskSpan } from "../../shared/telemetry/spans.ts";
import { tracingEnabled } from "../../shared/telemetry/tracing.ts";

/**
 * The dispatch span: parent is the trace context of the tasks message (the enqueue span, or the
 * producer's own for a direct publish), and it is injected into the handed-on task's headers so the handler's
 * span is its child. With tracing off, the incoming context is copied unchanged and nothing else is
 * done: no span, no attribute object, one header lookup.
 */
export function traceDispatch(
  incoming: MsgHdrs | undefined,
  outgoing: MsgHdrs,
  taskId: string,
  type: string,
  priority: Priority,
  subject: string,
): TaskSpan | undefined {
  if (!tracingEnabled()) {
    copyTraceContext(incoming, outgoing);
    return undefined;
  }
  const span = startTaskSpan("sluice.dispatch", {
    kind: SpanKind.PRODUCER,
    parent: incoming,
    attributes: {
      "sluice.task.id": taskId,
      "sluice.task.type": type,
      "sluice.task.priority": priority,
      "messaging.system": "nats",
      "messaging.operation.type": "send",
      "messaging.destination.name": subject,
    },
  });
  span?.inject(outgoing);
  return span;
}
