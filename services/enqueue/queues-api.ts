import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { serveRequests } from "./nats-serve.ts";

import type { QueueControl } from "./queues.ts";

/** `{type}` of a request naming one queue; a patch carries the fields to change beside it. */
const TypeInput = z.looseObject({ type: z.string() });

/**
 * Queue configuration over NATS request/reply, `<prefix>.api.queues.<action>`: `list` (no body),
 * `get`, `pause`, `resume` (`{type}`), and `patch` (`{type, ...fields}`, the HTTP body plus the type).
 * Replies are the HTTP bodies, or `{error: {status, code, message}}`.
 */
export function startQueuesApi(
  nc: NatsConnection,
  o: { names: Names; queues: QueueControl; log: Logger },
): { stop(): void } {
  const { names, queues } = o;
  const handlers: Record<string, (body: unknown) => Promise<unknown>> = {
    [names.apiSubject("queues", "list")]: () => queues.list(),
    [names.apiSubject("queues", "get")]: (b) => queues.get(typeOf(b).type),
    [names.apiSubject("queues", "pause")]: (b) => queues.pause(typeOf(b).type),
    [names.apiSubject("queues", "resume")]: (b) => queues.resume(typeOf(b).type),
    [names.apiSubject("queues", "patch")]: (b) => {
      const { type, ...patch } = typeOf(b);
      return queues.patch(type, patch);
    },
  };
  return serveRequests(nc, handlers, { log: o.log, what: "queues" });
}

function typeOf(body: unknown): z.output<typeof TypeInput> {
  const r = TypeInput.safeParse(body);
  if (!r.success) throw new ValidationError(ErrorCodes.invalidRequest, 'send {"type": "<task type>"}');
  return r.data;
}
