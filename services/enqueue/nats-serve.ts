import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import { parseJsonBody } from "./json-body.ts";
import { ENQUEUE_QUEUE, toErrorReply } from "./nats-api.ts";

/** A control request handler: the parsed JSON body in, the reply body out (or a thrown typed error). */
export type RequestHandler = (body: unknown) => Promise<unknown> | unknown;

/**
 * Serve NATS request/reply subjects the way every control API of the gateway does: one subscription per
 * subject in the gateway's queue group, JSON in, JSON out, errors as `{error: {status, code, message}}`
 * (the HTTP problem's fields). Requests are handled concurrently.
 */
export function serveRequests(
  nc: NatsConnection,
  handlers: Record<string, RequestHandler>,
  o: { log: Logger; what: string },
): { stop(): void } {
  const answer = async (m: Msg, subject: string, handle: RequestHandler): Promise<void> => {
    let reply: unknown;
    try {
      // inside the try: a bad body or a synchronous throw is an error reply, never an escaped exception
      reply = await handle(parseBody(m.data));
    } catch (err) {
      const r = toErrorReply(err);
      if (r.error.status >= 500) o.log.warn({ err, subject }, `${o.what} request failed`);
      reply = r;
    }
    if (!m.reply) return;
    try {
      m.respond(JSON.stringify(reply));
    } catch (err) {
      o.log.warn({ err, subject }, `could not send ${o.what} reply`);
    }
  };
  const subs: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    nc.subscribe(subject, { queue: ENQUEUE_QUEUE, callback: (_err, m) => void answer(m, subject, handle) }),
  );
  return {
    stop() {
      for (const s of subs) if (!s.isClosed()) s.unsubscribe();
    },
  };
}

function parseBody(data: Uint8Array): unknown {
  return data.length === 0 ? undefined : parseJsonBody(data);
}
