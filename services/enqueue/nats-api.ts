import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { ErrorCodes, isSluiceError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { Gateway } from "./gateway.ts";
import { parseJsonBody } from "./json-body.ts";
import { recordRejected } from "./metrics.ts";

/** Queue group of the enqueue request subscription: each request goes to one enqueue replica. */
export const ENQUEUE_QUEUE = "enqueue";

/** The error reply of the NATS API, with the same codes as the HTTP problems. */
export type ErrorReply = { error: { status: number; code: string; message: string; errors?: unknown } };

/** A running NATS API. */
export type NatsApi = {
  /** Stop taking requests and wait until every request taken has been answered. */
  stop(): Promise<void>;
};

/**
 * Serve `<prefix>.enqueue` requests: the body is the JSON of `POST /v1/tasks`, the reply `{id, status}`
 * or `{error}`. Requests are handled as they arrive, never one after another, so a slow write does not
 * hold up the requests behind it.
 */
export function startNatsApi(
  nc: NatsConnection,
  deps: { gateway: Gateway; names: Names; log: Logger },
): NatsApi {
  const { gateway, names, log } = deps;
  const inFlight = new Set<Promise<void>>();
  const sub = nc.subscribe(names.enqueueSubject, {
    queue: ENQUEUE_QUEUE,
    callback: (err, m) => {
      if (err) {
        log.error({ err }, "enqueue subscription failed");
        return;
      }
      const p = handle(m).finally(() => inFlight.delete(p));
      inFlight.add(p);
    },
  });

  async function handle(m: Msg): Promise<void> {
    let reply: unknown;
    try {
      reply = await gateway.enqueue(parseJsonBody(m.data), { transport: "nats", trace: m.headers });
    } catch (err) {
      reply = toErrorReply(err);
      recordRejected((reply as ErrorReply).error.code);
      if ((reply as ErrorReply).error.code === ErrorCodes.internal)
        log.error({ err }, "enqueue request failed");
    }
    if (!m.reply) return; // published without a reply subject: nobody to answer
    try {
      m.respond(JSON.stringify(reply));
    } catch (err) {
      log.warn({ err }, "could not send enqueue reply");
    }
  }

  return {
    async stop() {
      // unsubscribe, not drain: a drain waits on the server, which may be the thing that is gone
      if (!sub.isClosed()) sub.unsubscribe();
      await Promise.all(inFlight);
    },
  };
}

/** The `{error}` reply for a failure; unexpected errors say nothing internal. */
export function toErrorReply(err: unknown): ErrorReply {
  if (isSluiceError(err) && (err.status < 500 || err.code === ErrorCodes.unavailable)) {
    const e: ErrorReply["error"] = { status: err.status, code: err.code, message: err.message };
    if (err.details !== undefined) e.errors = err.details;
    return { error: e };
  }
  return { error: { status: 500, code: ErrorCodes.internal, message: "internal error" } };
}
