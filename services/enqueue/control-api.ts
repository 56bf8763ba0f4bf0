import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { TaskControl } from "./control.ts";
import { DeadLetterListQuery, DeadLetterSelectorInput, IdInput, parseOr400 } from "./control-schemas.ts";
import type { DeadLetters } from "./dead-letters.ts";
import { toErrorReply } from "./nats-api.ts";

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
  const handlers: Record<string, (body: unknown) => Promise<unknown>> = {
    [names.apiSubject("tasks", "cancel")]: (b) => control.cancel(parseOr400(IdInput, b).id),
    [names.apiSubject("tasks", "pause")]: (b) => control.pause(parseOr400(IdInput, b).id),
    [names.apiSubject("tasks", "resume")]: (b) => control.resume(parseOr400(IdInput, b).id),
    [names.apiSubject("dlq", "list")]: (b) => deadLetters.list(parseOr400(DeadLetterListQuery, b ?? {})),
    [names.apiSubject("dlq", "get")]: (b) => deadLetters.get(parseOr400(IdInput, b).id),
    [names.apiSubject("dlq", "replay")]: (b) => deadLetters.replay(parseOr400(DeadLetterSelectorInput, b)),
    [names.apiSubject("dlq", "purge")]: (b) => deadLetters.purge(parseOr400(DeadLetterSelectorInput, b)),
  };
  const subs: Subscription[] = Object.entries(handlers).map(([subject, handle]) =>
    nc.subscribe(subject, {
      queue: "enqueue",
      callback: (_err, m) => {
        let body: unknown;
        try {
          body = m.data.length === 0 ? undefined : m.json();
        } catch {
          m.respond(
            JSON.stringify({ error: { status: 400, code: "invalid_json", message: "body is not JSON" } }),
          );
          return;
        }
        // a parse error throws synchronously: run the handler inside the promise chain
        Promise.resolve(body)
          .then(handle)
          .then(
            (r) => m.respond(JSON.stringify(r)),
            (err) => {
              const reply = toErrorReply(err);
              if (reply.error.status >= 500) o.log.warn({ err, subject }, "control request failed");
              m.respond(JSON.stringify(reply));
            },
          );
      },
    }),
  );
  return {
    stop: () => {
      for (const s of subs) s.unsubscribe();
    },
  };
}
