import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV, KvEntry } from "@nats-io/kv";
import { headers as newHeaders } from "@nats-io/transport-node";
import { Headers } from "../../../shared/headers.ts";
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";
import { type AckedPublisher, isWrongLastSequence } from "../../../shared/nats/publisher.ts";
import { PRIORITIES } from "../../../shared/priority.ts";
import { delayedMsgId, dueAtOf } from "../../../shared/schedule.ts";
import { TASK_TYPE_RE, type TaskMessage, type TaskState } from "../../../shared/task.ts";

/** What firing a delayed message needs. */
export type FireDeps = {
  jsm: JetStreamManager;
  state: KV;
  publisher: AckedPublisher;
  names: Names;
  log: Logger;
  /** The tasks stream's duplicate window, ms: a re-publish inside it is dropped by the server. */
  duplicateWindowMs: number;
};

/**
 * What became of one delayed message: `fired` (published to its priority subject), `refired` (a
 * repeat of a fire that stopped half-way; the stream's dedup drops it when the first one landed),
 * `dropped` (the task moved on: cancelled, or already running or done), `stale` (an older scheduling
 * of a task since rescheduled), `gone` (deleted already), `invalid` (unreadable, deleted).
 */
export type FireOutcome = "fired" | "refired" | "dropped" | "stale" | "gone" | "invalid";

const encoder = new TextEncoder();
const CAS_TRIES = 5;

/**
 * Fire one delayed message: the task's state record is the token that makes this happen once.
 *
 * 1. load the message by sequence; 2. read the state record (revision r); 3. if it is `scheduled` or
 * `retrying` for this due time, compare-and-set it to `queued` on r — only one writer can win r, so a
 * cancel that landed first, or a second scheduler, makes this fail and we re-read; 4. publish the task
 * to its priority subject with the scheduling's msg id; 5. delete the delayed message.
 *
 * A crash after 3 leaves `queued` with `runAt` equal to this due time and the message still stored: the
 * next fire recognises that and repeats 4 (dropped by the stream's dedup if the first publish landed)
 * and 5. See docs/architecture.md, "Delays and schedules", for every crash point.
 */
export async function fireDelayed(d: FireDeps, seq: number): Promise<FireOutcome> {
  // a direct get may be answered by a replica that has not applied the message yet: only the stream
  // leader's "not found" means the message is gone
  const sm =
    (await d.jsm.direct.getMessage(d.names.delayedStream, { seq }).catch(() => null)) ??
    (await d.jsm.streams.getMessage(d.names.delayedStream, { seq }));
  if (!sm) return "gone";
  const minute = Number(sm.subject.slice(sm.subject.lastIndexOf(".") + 1));
  const dueAt = dueAtOf(sm.header, minute);
  let msg: TaskMessage;
  try {
    msg = JSON.parse(new TextDecoder().decode(sm.data)) as TaskMessage;
    if (typeof msg.id !== "string" || !TASK_TYPE_RE.test(msg.type) || !PRIORITIES.includes(msg.priority))
      throw new Error("not a task message");
  } catch (err) {
    d.log.warn({ seq, err: String(err) }, "unreadable delayed message deleted");
    await deleteDelayed(d, seq);
    return "invalid";
  }
  const msgId = sm.header?.get("Nats-Msg-Id") || delayedMsgId(msg);
  for (let i = 0; i < CAS_TRIES; i++) {
    const entry = await d.state.get(msg.id);
    const step = decide(entry, dueAt);
    if (step === "publish") {
      if (!(await markQueued(d, msg, dueAt, entry!))) continue; // someone wrote in between: look again
    } else if (step !== "republish") {
      await deleteDelayed(d, seq);
      return step;
    }
    if (step === "republish" && entry && entry.json<TaskState>().updatedAt < Date.now() - d.duplicateWindowMs)
      d.log.warn({ taskId: msg.id, seq }, "re-firing a delayed task outside the duplicate window");
    const h = newHeaders();
    for (const k of [Headers.traceparent, Headers.tracestate]) {
      const v = sm.header?.get(k);
      if (v) h.set(k, v);
    }
    const ack = await d.publisher.publish(d.names.tasksSubject(msg.priority, msg.type), sm.data, {
      msgId,
      headers: h,
    });
    await deleteDelayed(d, seq);
    return step === "republish" || ack.duplicate ? "refired" : "fired";
  }
  throw new Error(`state of ${msg.id} kept changing while firing it`);
}

type Step = "publish" | "republish" | "dropped" | "stale";

function decide(entry: KvEntry | null, dueAt: number): Step {
  // no record, or a deleted one: whoever schedules a task writes its record first, so this task was
  // removed (retention of a cancelled task, an operator's purge) and must not run
  if (!entry || entry.operation !== "PUT") return "dropped";
  const s = entry.json<TaskState>();
  const forThis = s.runAt === undefined || s.runAt === dueAt;
  if (s.status === "scheduled" || s.status === "retrying") return forThis ? "publish" : "stale";
  // marked by a fire that then stopped (or a second leader): repeat the publish under the same msg id
  if (s.status === "queued" && s.runAt === dueAt) return "republish";
  return forThis ? "dropped" : "stale";
}

/** CAS the record to `queued` on the revision read; false when another write won. */
async function markQueued(d: FireDeps, msg: TaskMessage, dueAt: number, entry: KvEntry): Promise<boolean> {
  const next: TaskState = {
    ...entry.json<TaskState>(),
    status: "queued",
    runAt: dueAt,
    updatedAt: Date.now(),
  };
  try {
    await d.publisher.publish(`$KV.${d.names.stateBucket}.${msg.id}`, encoder.encode(JSON.stringify(next)), {
      expectLastSubjectSeq: entry.revision,
    });
    return true;
  } catch (err) {
    if (isWrongLastSequence(err)) return false;
    throw err;
  }
}

async function deleteDelayed(d: FireDeps, seq: number): Promise<void> {
  try {
    await d.jsm.streams.deleteMessage(d.names.delayedStream, seq, false);
  } catch (err) {
    // deleted already (by a concurrent fire, or an earlier one that stopped before answering)
    if (!/not found|no message found/i.test(String((err as Error)?.message))) throw err;
  }
}

/** The minute bucket a delayed message's subject names; undefined for a subject that is no bucket. */
export function minuteOf(subject: string): number | undefined {
  const minute = Number(subject.slice(subject.lastIndexOf(".") + 1));
  // not written by scheduleTask: such a message can never be loaded, so it is ignored
  return Number.isSafeInteger(minute) && minute >= 0 ? minute : undefined;
}
