import type { FastifyReply, FastifyRequest } from "fastify";
import { ErrorCodes, SluiceError } from "../../../shared/errors.ts";
import type { TaskEvent } from "./feed.ts";
import { publicState } from "./feed.ts";

/**
 * Long-lived event streams (SSE and WebSocket) of one gateway: counted against a limit, and ended
 * when the server closes so shutdown does not wait on clients that never hang up.
 */

/** A stream the registry can end. */
export type OpenStream = { close(reason: string): void };

/** Bytes a slow client may have queued before its stream is dropped (memory stays bounded). */
export const MAX_BUFFERED_BYTES = 1024 * 1024;

/** Every open stream of one gateway. */
export class StreamRegistry {
  readonly #max: number;
  readonly #open = new Set<OpenStream>();

  /** `max`: most streams at once (MAX_EVENT_STREAMS). */
  constructor(max: number) {
    this.#max = max;
  }

  /** Throws 429 `too_many_streams` when the limit is reached. */
  reserve(): void {
    if (this.#open.size >= this.#max) {
      throw Object.assign(
        new SluiceError(ErrorCodes.tooManyStreams, `this gateway serves ${this.#max} event streams already`, {
          status: 429,
        }),
        { retryAfterS: 5 },
      );
    }
  }

  add(s: OpenStream): void {
    this.#open.add(s);
  }

  remove(s: OpenStream): void {
    this.#open.delete(s);
  }

  get size(): number {
    return this.#open.size;
  }

  /** End every stream (server shutdown). */
  closeAll(reason: string): void {
    for (const s of [...this.#open]) s.close(reason);
    this.#open.clear();
  }
}

/** An SSE response being written. */
export type SseStream = OpenStream & {
  /** Send one task event; false when the client is gone or too slow (the stream is then closed). */
  send(e: TaskEvent, o: { withResult: boolean }): boolean;
  /** Resolves when the client hangs up or the stream is closed. */
  readonly closed: Promise<void>;
};

/**
 * Take over the response and start an event stream: `id:` is the state revision (EventSource sends
 * it back as Last-Event-ID on reconnect), `event:` the status (or `deleted`), `data:` the record.
 * A comment every `heartbeatMs` keeps proxies from timing the connection out.
 */
export function openSse(
  reply: FastifyReply,
  o: { heartbeatMs: number; registry: StreamRegistry },
): SseStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    ...(reply.getHeaders() as Record<string, string>),
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    connection: "keep-alive",
    // nginx and friends buffer responses unless told not to
    "x-accel-buffering": "no",
  });
  res.write(`retry: 2000\n\n`);
  let done = false;
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => {
    resolveClosed = r;
  });
  const heartbeat = setInterval(() => {
    if (!done) res.write(`: keep-alive ${Date.now()}\n\n`);
  }, o.heartbeatMs);
  heartbeat.unref();
  const stream: SseStream = {
    closed,
    send(e, opts) {
      if (done) return false;
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        res.write(`event: overflow\ndata: {"detail":"client too slow; reconnect with Last-Event-ID"}\n\n`);
        stream.close("overflow");
        return false;
      }
      const [event, data] =
        e.kind === "state"
          ? [e.state.status, JSON.stringify(publicState(e.state, opts))]
          : ["deleted", JSON.stringify({ id: e.id })];
      res.write(`id: ${e.revision}\nevent: ${event}\ndata: ${data}\n\n`);
      return true;
    },
    close(reason) {
      if (done) return;
      // the watch died with NATS: EventSource reconnects by itself and resumes from Last-Event-ID
      if (reason === "failed") res.write(`event: error\ndata: {"detail":"event source lost; reconnect"}\n\n`);
      done = true;
      clearInterval(heartbeat);
      o.registry.remove(stream);
      res.end();
      resolveClosed();
    },
  };
  o.registry.add(stream);
  // the response's close, not the request's: a request may count as closed once it has been read
  res.once("close", () => stream.close("client closed"));
  // a client that left while the watch was being opened has closed before we listened
  if (!res.socket || res.socket.destroyed) stream.close("client closed");
  return stream;
}

/** The resume point a client sent (Last-Event-ID header, or `lastEventId` query for WebSocket). */
export function lastEventId(req: FastifyRequest): number | undefined {
  const h = req.headers["last-event-id"];
  const q = (req.query as Record<string, unknown> | undefined)?.lastEventId;
  const v = typeof h === "string" ? h : typeof q === "string" ? q : undefined;
  if (v === undefined || v === "") return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new SluiceError(
      ErrorCodes.invalidRequest,
      "Last-Event-ID must be an event id (a revision number)",
      {
        status: 400,
      },
    );
  }
  return n;
}
