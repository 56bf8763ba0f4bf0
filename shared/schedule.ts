import { headers as newHeaders } from "@nats-io/transport-node";
import type { Names } from "./names.ts";
import type { AckedPublisher } from "./nats/publisher.ts";
import type { TaskMessage } from "./task.ts";

/** Header carrying a delayed message's due time, epoch ms. */
export const DUE_AT_HEADER = "Sluice-Due-At";

/** Subject of the minute bucket a due time falls in: `<prefix>.delayed.<epoch minute>`. */
export function delayedSubject(names: Names, dueAt: number): string {
  return `${names.prefix}.delayed.${Math.floor(dueAt / 60_000)}`;
}

/**
 * Hand a task to the scheduler to be published to its priority subject at `dueAt`: delayed tasks from
 * the gateway and retry backoffs from workers. The msg id makes a repeated call for the same attempt
 * harmless inside the duplicate window.
 */
export async function scheduleTask(
  pub: AckedPublisher,
  names: Names,
  msg: TaskMessage,
  dueAt: number,
  /** `msgId` overrides the default `<id>:d<attempt>` (a rate-limited attempt is scheduled again under its own number). */
  opts: { msgId?: string } = {},
): Promise<void> {
  const h = newHeaders();
  h.set(DUE_AT_HEADER, String(dueAt));
  await pub.publish(delayedSubject(names, dueAt), JSON.stringify({ ...msg, runAt: dueAt }), {
    msgId: opts.msgId ?? `${msg.id}:d${msg.attempt ?? 1}`,
    headers: h,
  });
}
