import type { Msg, NatsConnection, Subscription } from "@nats-io/transport-node";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { ENQUEUE_QUEUE, toErrorReply } from "./nats-api.ts";
import type { ScheduleControl } from "./schedules.ts";

const NameInput = z.looseObject({ name: z.string() });

/**
 * Recurring schedules over NATS request/reply, `<prefix>.api.schedules.<action>`: `create` (the body of
 * `POST /v1/schedules`), `list` (no body), `get`, `pause`, `resume`, `delete` (`{name}`). Replies are
 * the HTTP bodies (`delete`: `{name, deleted: true}`), or `{error: {status, code, message}}`.
 */
export function startSchedulesApi(
  nc: NatsConnection,
  o: { names: Names; schedules: ScheduleControl; log: Logger },
): { stop(): void } {
  const { names, schedules } = o;
  const handlers: Record<string, (body: unknown) => Promise<unknown>> = {
    [names.apiSubject("schedules", "create")]: (b) => schedules.create(b),
    [names.apiSubject("schedules", "list")]: () => schedules.list(),
    [names.apiSubject("schedules", "get")]: (b) => schedules.get(nameOf(b)),
    [names.apiSubject("schedules", "pause")]: (b) => schedules.pause(nameOf(b)),
    [names.apiSubject("schedules", "resume")]: (b) => schedules.resume(nameOf(b)),
    [names.apiSubject("schedules", "delete")]: (b) => schedules.delete(nameOf(b)),
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
      if (r.error.status >= 500) o.log.warn({ err, subject }, "schedules request failed");
      reply = r;
    }
    if (!m.reply) return;
    try {
      m.respond(JSON.stringify(reply));
    } catch (err) {
      o.log.warn({ err, subject }, "could not send schedules reply");
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

function nameOf(body: unknown): string {
  const r = NameInput.safeParse(body);
  if (!r.success) throw new ValidationError(ErrorCodes.invalidRequest, 'send {"name": "<schedule name>"}');
  return r.data.name;
}
