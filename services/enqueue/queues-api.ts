import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { ENQUEUE_QUEUE, toErrorReply } from "./nats-api.ts";
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
  const subs: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    nc.subscribe(subject, { queue: ENQUEUE_QUEUE, callback: (_err, m) => void answer(m, subject, handle) }),
  );

  async function answer(m: Msg, subject: string, handle: (body: unknown) => Promise<unknown>): Promise<void> {
    let reply: unknown;
    try {
      reply = await handle(parseBody(m.data));
    } catch (err) {
      const r = toErrorReply(err);
      if (r.error.status >= 500) o.log.warn({ err, subject }, "queues request failed");
      reply = r;
    }
    if (!m.reply) return;
    try {
      m.respond(JSON.stringify(reply));
    } catch (err) {
      o.log.warn({ err, subject }, "could not send queues reply");
    }
  }

  return {
    stop() {
      for (const s of subs) if (!s.isClosed()) s.unsubscribe();
    },
  };
}

function parseBody(data: Uint8Array): unknown {
  if (data.length === 0) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new ValidationError(ErrorCodes.invalidJson, "body is not valid JSON");
  }
}

function typeOf(body: unknown): z.output<typeof TypeInput> {
  const r = TypeInput.safeParse(body);
  if (!r.success) throw new ValidationError(ErrorCodes.invalidRequest, 'send {"type": "<task type>"}');
  return r.data;
}
