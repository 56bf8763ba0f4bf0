import type { MsgHdrs } from "@nats-io/transport-node";
import { UnavailableError } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isWrongLastSequence } from "../../shared/nats/publisher.ts";
import { scheduleTask } from "../../shared/schedule.ts";
import { initialState, type TaskMessage, type TaskState } from "../../shared/task.ts";
import type { EnqueueResult } from "./gateway.ts";
import type { Session } from "./link.ts";
import { recordAccepted, recordDeduplicated } from "./metrics.ts";

/**
 * The gateway's path for a task with a future `runAt` (from `delayMs` or `runAt`): the state record is
 * created first, as `scheduled` with its `runAt`, then the task goes to the delayed stream
 * (shared/schedule.ts), from which the dispatcher leader's scheduler fires it when due.
 *
 * Record first, the reverse of an immediate task, because the scheduler fires a message only while its
 * record says `scheduled`: a message without a record is dropped, which is what keeps a task that was
 * cancelled and whose record retention has since removed from ever running. A crash between the two
 * writes leaves a `scheduled` record and no message; the caller got no answer, and its retry with the
 * same idempotency key stores the message then ({@link ensureScheduled}).
 */
export async function enqueueDelayed(
  s: Session,
  names: Names,
  msg: TaskMessage,
  headers: MsgHdrs | undefined,
): Promise<EnqueueResult> {
  const existing = await createIfAbsent(s, names, initialState(msg, "scheduled"));
  if (!existing) {
    await scheduleTask(s.pub, names, msg, msg.runAt!, { headers });
    recordAccepted(msg.type, msg.priority);
    return { id: msg.id, status: "scheduled" };
  }
  // a concurrent request with the same idempotency key created it first
  if (existing.status === "scheduled") await ensureScheduled(s, names, msg, existing, headers);
  recordDeduplicated(msg.type);
  return { id: msg.id, status: existing.status, duplicate: true };
}

/**
 * A repeated request for a task still `scheduled`: store its delayed message again under the same msg
 * id, in case the first request died before storing it. Harmless when it was stored: inside the
 * duplicate window the stream drops the repeat; after it, both copies fire at the same due time and the
 * second finds the task `queued` and repeats the tasks publish, which that stream drops.
 */
export async function ensureScheduled(
  s: Session,
  names: Names,
  msg: TaskMessage,
  prior: TaskState,
  headers?: MsgHdrs,
): Promise<void> {
  if (prior.runAt === undefined) return;
  await scheduleTask(s.pub, names, { ...msg, enqueuedAt: prior.enqueuedAt }, prior.runAt, { headers });
}

/** Insert-if-absent of a state record: undefined when written, else the record that is there. */
async function createIfAbsent(s: Session, names: Names, state: TaskState): Promise<TaskState | undefined> {
  const subject = `$KV.${names.stateBucket}.${state.id}`;
  const data = JSON.stringify(state);
  let seq = 0;
  for (let i = 0; i < 3; i++) {
    try {
      await s.pub.publish(subject, data, { expectLastSubjectSeq: seq });
      return undefined;
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
    }
    const entry = await s.state.get(state.id);
    if (entry?.operation === "PUT") return entry.json<TaskState>();
    // only a delete marker (or nothing, after a purge): replace it, compare-and-set on its revision
    seq = entry?.revision ?? 0;
  }
  throw new UnavailableError("task state changed while it was being created; retry");
}
