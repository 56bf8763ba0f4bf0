import { createHash } from "node:crypto";
import { ConflictError, ErrorCodes } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isWrongLastSequence } from "../../shared/nats/publisher.ts";
import {
  initialState,
  isFinal,
  type TaskMessage,
  type TaskState,
  type TaskStatus,
} from "../../shared/task.ts";
import { cas, read } from "./control.ts";
import type { Session, SessionSource } from "./link.ts";

/** What `POST /v1/tasks/:id/retry` answers: the new task, linked to the one it retries. */
export type RetryResult = { id: string; status: TaskStatus; replayOf: string; duplicate?: true };

/** Final statuses a retry applies to; a completed task is not retried (enqueue it again instead). */
const RETRYABLE: ReadonlySet<TaskStatus> = new Set(["failed", "dead", "cancelled", "timed_out"]);

const CAS_TRIES = 5;

/**
 * Retry a finished task as a fresh one: a copy of its task message (kept in the record's `task` field)
 * with a new id, attempt 1, no delay, and `replayOf` pointing back; the old record gets `replayedBy`.
 * This is what the dead-letter replay does for dead tasks, offered for any unsuccessful final status.
 *
 * Repeats are harmless: the new id is derived from the old record's id and revision, so concurrent
 * retries of the same record store one task (stream msg id and state create settle it), and a retry
 * of a record that already has `replayedBy` answers that task with `duplicate: true`.
 */
export async function retryTask(
  link: SessionSource,
  names: Names,
  id: string,
  now = Date.now(),
): Promise<RetryResult> {
  const s = link.session();
  const { state, revision } = await read(s, id);
  if (state.replayedBy) return replayed(s, id, state.replayedBy);
  if (!isFinal(state.status)) {
    throw new ConflictError(
      ErrorCodes.taskNotFinished,
      `task is ${state.status}; only a finished task can be retried`,
    );
  }
  if (!RETRYABLE.has(state.status)) {
    throw new ConflictError(ErrorCodes.taskNotRetryable, "a completed task is not retried; enqueue it again");
  }
  if (!state.task) {
    throw new ConflictError(
      ErrorCodes.taskNotRetryable,
      "the task's record does not keep its task message, so it cannot be re-run; enqueue it again",
    );
  }
  const msg: TaskMessage = {
    ...state.task,
    id: retryId(id, revision),
    enqueuedAt: now,
    attempt: 1,
    replayOf: id,
  };
  // a copy runs now, under its own id: no delay, no idempotency key (that would name the original), fresh start
  delete msg.runAt;
  delete msg.idempotencyKey;
  delete msg.resumed;
  await s.pub.publish(names.tasksSubject(msg.priority, msg.type), JSON.stringify(msg), { msgId: msg.id });
  const status = await createState(s, names, initialState(msg));
  // the new task is stored: a failure to write the back link must not turn that into an error
  await linkBack(s, names, id, msg.id, { state, revision }).catch(() => undefined);
  return { id: msg.id, status, replayOf: id };
}

/** The id of the retry of `id` at record revision `revision`. */
export function retryId(id: string, revision: number): string {
  return `r-${createHash("sha256").update(`${id}\0${revision}`).digest("base64url").slice(0, 32)}`;
}

async function replayed(s: Session, id: string, newId: string): Promise<RetryResult> {
  const e = await s.state.get(newId).catch(() => null);
  const status = e?.operation === "PUT" ? (e.json<TaskState>().status ?? "queued") : "queued";
  return { id: newId, status, replayOf: id, duplicate: true };
}

async function createState(s: Session, names: Names, st: TaskState): Promise<TaskStatus> {
  try {
    await s.pub.publish(`$KV.${names.stateBucket}.${st.id}`, JSON.stringify(st), { expectLastSubjectSeq: 0 });
    return st.status;
  } catch (err) {
    if (!isWrongLastSequence(err)) throw err;
  }
  // a concurrent retry of the same revision created it first
  const e = await s.state.get(st.id);
  return e?.operation === "PUT" ? e.json<TaskState>().status : st.status;
}

/** Record `replayedBy` on the old record, unless another writer got there first. */
async function linkBack(
  s: Session,
  names: Names,
  id: string,
  newId: string,
  first: { state: TaskState; revision: number },
): Promise<void> {
  let cur = first;
  for (let i = 0; i < CAS_TRIES; i++) {
    if (cur.state.replayedBy) return;
    if (await cas(s, names, { ...cur.state, replayedBy: newId, updatedAt: Date.now() }, cur.revision)) return;
    cur = await read(s, id);
  }
}
