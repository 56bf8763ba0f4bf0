import type { NatsConnection } from "@nats-io/transport-node";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { serveRequests } from "./nats-serve.ts";

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
  return serveRequests(nc, handlers, { log: o.log, what: "schedules" });
}

function nameOf(body: unknown): string {
  const r = NameInput.safeParse(body);
  if (!r.success) throw new ValidationError(ErrorCodes.invalidRequest, 'send {"name": "<schedule name>"}');
  return r.data.name;
}
