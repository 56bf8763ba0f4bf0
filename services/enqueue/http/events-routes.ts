import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import type { WebSocket } from "ws";
import { ErrorCodes, ValidationError } from "../../../shared/errors.ts";
import { TASK_STATUSES, type TaskState, type TaskStatus, TaskType } from "../../../shared/task.ts";
import { type Feed, type FeedEnd, publicState, type TaskEvent, watchAll, watchTask } from "../events/feed.ts";
import { lastEventId, MAX_BUFFERED_BYTES, openSse, type StreamRegistry } from "../events/streams.ts";
import type { Gateway } from "../gateway.ts";
import type { SessionSource } from "../link.ts";
import { PROBLEM_CONTENT_TYPE, problem } from "./problem.ts";

/** What the event routes need. */
export type EventRoutesDeps = {
  gateway: Gateway;
  link: SessionSource;
  registry: StreamRegistry;
  heartbeatMs: number;
};

/** What a stream follows: one task, or every task passing a type/status filter. */
type Target =
  | { task: string; after: number | undefined }
  | { accept: (s: TaskState) => boolean; after: number | undefined };

/** A place events go (an SSE response or a WebSocket). */
type Sink = {
  send(e: TaskEvent): boolean;
  close(reason: string, end?: FeedEnd): void;
  closed: Promise<void>;
};

/**
 * Live status: `GET /v1/tasks/:id/events` and `GET /v1/events` (Server-Sent Events) and `GET /v1/ws`
 * (a WebSocket carrying the same events as JSON messages). Sources and guarantees: events/feed.ts.
 */
export const eventRoutes: FastifyPluginAsync<EventRoutesDeps> = async (app, deps) => {
  const streamConfig = { scope: "read" as const, queryToken: true };

  app.get<{ Params: { id: string } }>(
    "/v1/tasks/:id/events",
    { config: streamConfig },
    async (req, reply) => {
      const target = await taskTarget(deps, req.params.id, lastEventId(req));
      deps.registry.reserve();
      const pending = await openFeed(deps, target);
      const sse = openSse(reply, { heartbeatMs: deps.heartbeatMs, registry: deps.registry });
      await pending.attach({
        send: (e) => sse.send(e, { withResult: true }),
        close: (reason) => sse.close(reason),
        closed: sse.closed,
      });
    },
  );

  app.get("/v1/events", { config: streamConfig }, async (req, reply) => {
    const target = firehoseTarget(req);
    deps.registry.reserve();
    const pending = await openFeed(deps, target);
    const sse = openSse(reply, { heartbeatMs: deps.heartbeatMs, registry: deps.registry });
    await pending.attach({
      send: (e) => sse.send(e, { withResult: false }),
      close: (reason) => sse.close(reason),
      closed: sse.closed,
    });
  });

  app.route<{ Querystring: Record<string, string | undefined> }>({
    method: "GET",
    url: "/v1/ws",
    config: streamConfig,
    // validated and watching before the upgrade, so a bad request gets a proper HTTP status and an
    // open socket misses nothing
    preHandler: async (req) => {
      if (!req.ws) return;
      const q = req.query;
      const after = lastEventId(req);
      const target = q.task !== undefined ? await taskTarget(deps, q.task, after) : firehoseTarget(req);
      deps.registry.reserve();
      const pending = await openFeed(deps, target);
      (req as WsRequest).pending = { feed: pending, withResult: "task" in target };
      // an upgrade that never completes (refused, client gone) must not leave the watch running
      req.raw.socket.once("close", () => {
        if (!pending.attached) pending.cancel();
      });
    },
    handler: async (_req, reply) => {
      const p = problem(ErrorCodes.invalidRequest, 426, "this endpoint speaks WebSocket only");
      return reply.code(426).header("upgrade", "websocket").type(PROBLEM_CONTENT_TYPE).send(p.body);
    },
    wsHandler: (socket, req) => {
      const { feed, withResult } = (req as WsRequest).pending!;
      void feed.attach(wsSink(socket, deps.registry, withResult));
    },
  });
};

type WsRequest = FastifyRequest & { pending?: { feed: PendingFeed; withResult: boolean } };

async function taskTarget(deps: EventRoutesDeps, id: string, after: number | undefined): Promise<Target> {
  await deps.gateway.get(id); // 404 for an unknown task, 503 while NATS is away
  return { task: id, after };
}

function firehoseTarget(req: FastifyRequest): Target {
  const q = req.query as Record<string, unknown>;
  const types = list(q.type, "type");
  const statuses = list(q.status, "status");
  for (const t of types) {
    if (!TaskType.safeParse(t).success)
      throw new ValidationError(ErrorCodes.invalidTaskType, `not a task type: ${t.slice(0, 64)}`);
  }
  for (const s of statuses) {
    if (!(TASK_STATUSES as readonly string[]).includes(s)) {
      throw new ValidationError(
        ErrorCodes.invalidRequest,
        `status must be one of ${TASK_STATUSES.join(", ")}`,
      );
    }
  }
  const typeSet = new Set(types);
  const statusSet = new Set(statuses as TaskStatus[]);
  return {
    after: lastEventId(req),
    accept: (s) =>
      (typeSet.size === 0 || typeSet.has(s.type)) && (statusSet.size === 0 || statusSet.has(s.status)),
  };
}

function list(v: unknown, name: string): string[] {
  if (v === undefined) return [];
  if (typeof v !== "string")
    throw new ValidationError(ErrorCodes.invalidRequest, `give ${name} once, comma-separated`);
  return v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** A watch already open, its events held until a sink is attached. */
type PendingFeed = {
  /** Deliver held and later events to `sink` until either side ends. */
  attach(sink: Sink): Promise<void>;
  /** Stop without a sink ever attached. */
  cancel(): void;
  readonly attached: boolean;
};

/** Open a target's watch (503 if NATS is away) before the response starts, holding events for the sink. */
async function openFeed(deps: EventRoutesDeps, target: Target): Promise<PendingFeed> {
  const held: TaskEvent[] = [];
  let sink: Sink | undefined;
  let feed: Feed | undefined;
  const onEvent = (e: TaskEvent) => {
    if (!sink) held.push(e);
    else if (!sink.send(e)) feed?.stop();
  };
  const kv = deps.link.session().state;
  feed =
    "task" in target
      ? await watchTask(kv, target.task, { afterRevision: target.after }, onEvent)
      : await watchAll(kv, { afterRevision: target.after, accept: target.accept }, onEvent);
  const f = feed;
  return {
    get attached() {
      return sink !== undefined;
    },
    cancel: () => f.stop(),
    async attach(s) {
      sink = s;
      for (const e of held.splice(0)) {
        if (!s.send(e)) {
          f.stop();
          break;
        }
      }
      void s.closed.then(() => f.stop());
      const end = await Promise.race([f.ended, s.closed.then(() => "stopped" as const)]);
      s.close(end, end);
    },
  };
}

/** WebSocket messages: `{id, event, data}` with the same meaning as the SSE fields. */
function wsSink(socket: WebSocket, registry: StreamRegistry, withResult: boolean): Sink {
  let resolveClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => {
    resolveClosed = r;
  });
  const stream = {
    close(reason: string) {
      registry.remove(stream);
      if (socket.readyState === socket.OPEN) socket.close(1000, reason.slice(0, 100));
      resolveClosed();
    },
  };
  registry.add(stream);
  socket.on("close", () => {
    registry.remove(stream);
    resolveClosed();
  });
  // nothing is expected from the client; anything it sends is ignored
  socket.on("message", () => undefined);
  return {
    closed,
    send(e) {
      if (socket.readyState !== socket.OPEN) return false;
      if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
        socket.close(1013, "client too slow; reconnect with lastEventId");
        return false;
      }
      const msg =
        e.kind === "state"
          ? { id: String(e.revision), event: e.state.status, data: publicState(e.state, { withResult }) }
          : { id: String(e.revision), event: "deleted", data: { id: e.id } };
      socket.send(JSON.stringify(msg));
      return true;
    },
    close: (reason, end) => {
      if (end === "failed" && socket.readyState === socket.OPEN)
        socket.close(1011, "event source lost; reconnect");
      stream.close(reason);
    },
  };
}
