import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { TaskControl } from "./control.ts";
import { DeadLetterListQuery, DeadLetterSelectorInput, IdInput, parseOr400 } from "./control-schemas.ts";
import type { DeadLetters } from "./dead-letters.ts";
import { type RequestHandler, serveRequests } from "./nats-serve.ts";

/**
 * The same controls over NATS request/reply: `<prefix>.api.tasks.cancel|pause|resume` with `{id}`,
 * `<prefix>.api.dlq.list|get|replay|purge` with the HTTP bodies. Replies are the HTTP bodies, or
 * `{error: {status, code, message}}`.
 */
export function startControlApi(
  nc: NatsConnection,
  o: { names: Names; control: TaskControl; deadLetters: DeadLetters; log: Logger },
): { stop(): void } {
  const { names, control, deadLetters } = o;
  const handlers: Record<string, RequestHandler> = {
    [names.apiSubject("tasks", "cancel")]: (b) => control.cancel(parseOr400(IdInput, b).id),
    [names.apiSubject("tasks", "pause")]: (b) => control.pause(parseOr400(IdInput, b).id),
    [names.apiSubject("tasks", "resume")]: (b) => control.resume(parseOr400(IdInput, b).id),
    [names.apiSubject("dlq", "list")]: (b) => deadLetters.list(parseOr400(DeadLetterListQuery, b ?? {})),
    [names.apiSubject("dlq", "get")]: (b) => deadLetters.get(parseOr400(IdInput, b).id),
    [names.apiSubject("dlq", "replay")]: (b) => deadLetters.replay(parseOr400(DeadLetterSelectorInput, b)),
    [names.apiSubject("dlq", "purge")]: (b) => deadLetters.purge(parseOr400(DeadLetterSelectorInput, b)),
  };
  return serveRequests(nc, handlers, { log: o.log, what: "control" });
}
