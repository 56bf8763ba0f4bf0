import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { enqueueBatch } from "./batch.ts";
import type { Gateway } from "./gateway.ts";
import { parseJsonBody } from "./json-body.ts";
import type { SessionSource } from "./link.ts";
import { listTasks, parseListQuery } from "./list.ts";
import { ENQUEUE_QUEUE, toErrorReply } from "./nats-api.ts";
import { asUnavailable } from "./nats-errors.ts";
import { retryTask } from "./retry.ts";
import { readWorkers } from "./workers.ts";

/** What the gateway's NATS request API needs. */
export type GatewayApiDeps = {
  gateway: Gateway;
  link: SessionSource;
  names: Names;
  log: Logger;
  maxPayloadBytes: number;
  listScanMax: number;
};

/**
 * The read, batch and retry endpoints over NATS request/reply, like the HTTP ones:
 * `<prefix>.api.tasks.get {id}`, `.tasks.list {type?, status?, limit?, cursor?}`, `.tasks.batch {tasks}`,
 * `.tasks.retry {id}`, `<prefix>.api.workers.list {all?}`. Replies are the HTTP bodies, or
 * `{error: {status, code, message}}`. A batch reply is `{status: 202|207, results}`.
 */
export function startGatewayApi(nc: NatsConnection, d: GatewayApiDeps): { stop(): void } {
  const { names } = d;
  const handlers: Record<string, (body: Record<string, unknown>) => Promise<unknown>> = {
    [names.apiSubject("tasks", "get")]: (b) => d.gateway.get(idOf(b)),
    [names.apiSubject("tasks", "list")]: (b) =>
      listTasks(d.link, names, parseListQuery(stringly(b)), d.listScanMax),
    [names.apiSubject("tasks", "batch")]: (b) =>
      enqueueBatch(d.gateway, b, d.maxPayloadBytes, { transport: "nats" }),
    [names.apiSubject("tasks", "retry")]: async (b) => {
      const id = idOf(b);
      await d.gateway.get(id);
      return retryTask(d.link, names, id);
    },
    [names.apiSubject("workers", "list")]: (b) =>
      readWorkers(d.link.session().workers, { all: b.all === true }),
  };
  const subs: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    nc.subscribe(subject, { queue: ENQUEUE_QUEUE, callback: (_err, m) => void answer(m, subject, handle) }),
  );

  async function answer(m: Msg, subject: string, handle: (b: Record<string, unknown>) => Promise<unknown>) {
    let reply: unknown;
    try {
      reply = await handle(parseBody(m.data));
    } catch (err) {
      const r = toErrorReply(asUnavailable(err));
      if (r.error.status >= 500) d.log.warn({ err, subject }, "gateway request failed");
      reply = r;
    }
    if (!m.reply) return;
    try {
      m.respond(JSON.stringify(reply));
    } catch (err) {
      d.log.warn({ err, subject }, "could not send reply");
    }
  }
  return {
    stop() {
      for (const s of subs) s.unsubscribe();
    },
  };
}

function parseBody(data: Uint8Array): Record<string, unknown> {
  if (data.length === 0) return {};
  const v = parseJsonBody(data);
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new ValidationError(ErrorCodes.invalidRequest, "body must be a JSON object");
  }
  return v as Record<string, unknown>;
}

function idOf(b: Record<string, unknown>): string {
  if (typeof b.id !== "string" || b.id === "")
    throw new ValidationError(ErrorCodes.invalidRequest, "give the task id as {id}");
  return b.id;
}

/** The list query as HTTP would see it (numbers as strings), so one parser serves both. */
function stringly(b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(b)) {
    out[k] = typeof v === "number" ? String(v) : Array.isArray(v) ? v.join(",") : v;
  }
  return out;
}
