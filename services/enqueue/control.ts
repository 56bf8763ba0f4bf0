import { ConflictError, ErrorCodes, NotFoundError, UnavailableError } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isWrongLastSequence } from "../../shared/nats/publisher.ts";
import { sendSignal } from "../../shared/signals.ts";
import { isFinal, type TaskMessage, type TaskState, type TaskStatus } from "../../shared/task.ts";
import type { Session, SessionSource } from "./link.ts";

/** What a control call answers; `requested` is set when the holder of a running task must act on it. */
export type ControlResult = { id: string; status: TaskStatus; cancelRequested?: true; pauseRequested?: true };

const encoder = new TextEncoder();
const CAS_TRIES = 5;

/**
 * Cancel, pause and resume single tasks. A task that is waiting is changed in its state record with
 * compare-and-set; one that is running is sent a signal (signals bucket) that its worker turns into an
 * abort of the handler's signal. The signal is written first in both cases, so a worker or dispatcher
 * that picks the task up in the meantime sees it.
 */
export class TaskControl {
  readonly #link: SessionSource;
  readonly #names: Names;

  constructor(o: { link: SessionSource; names: Names }) {
    this.#link = o.link;
    this.#names = o.names;
  }

  /** Cancel: a waiting task never runs; a running one is aborted with reason `cancelled`. 409 once final. */
  async cancel(id: string): Promise<ControlResult> {
    const s = this.#link.session();
    for (let i = 0; i < CAS_TRIES; i++) {
      const { state, revision } = await read(s, id);
      if (isFinal(state.status))
        throw new ConflictError(ErrorCodes.taskFinal, `task is already ${state.status}`);
      await sendSignal(s.signals, id, "cancel");
      if (state.status === "running" || state.status === "dispatched") {
        return { id, status: state.status, cancelRequested: true };
      }
      const now = Date.now();
      const next: TaskState = {
        ...state,
        status: "cancelled",
        finishedAt: now,
        updatedAt: now,
        error: { code: ErrorCodes.cancelled, message: "cancelled on request" },
      };
      if (await cas(s, this.#names, next, revision)) return { id, status: "cancelled" };
    }
    throw new UnavailableError("the task kept changing while being cancelled; retry");
  }

  /** Pause a running task: its handler is aborted with reason `paused` and it keeps its checkpoint. */
  async pause(id: string): Promise<ControlResult> {
    const s = this.#link.session();
    const { state } = await read(s, id);
    if (state.status === "paused") return { id, status: "paused" };
    if (state.status !== "running" && state.status !== "dispatched")
      throw new ConflictError(
        ErrorCodes.taskNotRunning,
        `only a running task can be paused; it is ${state.status}`,
      );
    await sendSignal(s.signals, id, "pause");
    return { id, status: state.status, pauseRequested: true };
  }

  /** Resume a paused task: it re-enters priority order and its handler gets `ctx.lastCheckpoint`. */
  async resume(id: string): Promise<ControlResult> {
    const s = this.#link.session();
    for (let i = 0; i < CAS_TRIES; i++) {
      const { state, revision } = await read(s, id);
      if (state.status !== "paused" || !state.task)
        throw new ConflictError(
          ErrorCodes.taskNotPaused,
          `only a paused task can be resumed; it is ${state.status}`,
        );
      const now = Date.now();
      const next: TaskState = { ...state, status: "queued", updatedAt: now };
      delete next.task;
      delete next.startedAt;
      // the record moves first: if the publish then fails the caller retries and finds it queued with its
      // task message gone, so keep the message until the publish is stored
      if (!(await cas(s, this.#names, { ...next, task: state.task }, revision))) continue;
      await s.signals.delete(id).catch(() => undefined);
      const task: TaskMessage = { ...state.task, resumed: true };
      delete task.runAt;
      await s.pub.publish(this.#names.tasksSubject(task.priority, task.type), JSON.stringify(task), {
        msgId: `${id}:r${revision}`,
      });
      // no further write here: the worker that runs it replaces the record (without the task message),
      // and a write now could land after a fast completion and undo it
      return { id, status: "queued" };
    }
    throw new UnavailableError("the task kept changing while being resumed; retry");
  }
}

/** KV keys the state bucket accepts (gateway.ts checks the same); anything else names no task. */
const KEY_RE = /^[-/=\w]+(\.[-/=\w]+)*$/;
const KEY_MAX = 256;

/** The state record and its revision; NotFoundError when there is none. */
export async function read(s: Session, id: string): Promise<{ state: TaskState; revision: number }> {
  // the KV client throws on a key it cannot use, which would surface as a 500
  if (id.length > KEY_MAX || !KEY_RE.test(id))
    throw new NotFoundError(ErrorCodes.taskNotFound, `no task with id ${JSON.stringify(id.slice(0, 64))}`);
  const e = await s.state.get(id);
  if (!e || e.operation !== "PUT")
    throw new NotFoundError(ErrorCodes.taskNotFound, `no task with id ${id.slice(0, 64)}`);
  return { state: e.json<TaskState>(), revision: e.revision };
}

/** Compare-and-set of a state record on `revision`; false when someone wrote it in between. */
export async function cas(s: Session, names: Names, state: TaskState, revision: number): Promise<boolean> {
  try {
    await s.pub.publish(`$KV.${names.stateBucket}.${state.id}`, encoder.encode(JSON.stringify(state)), {
      expectLastSubjectSeq: revision,
    });
    return true;
  } catch (err) {
    if (isWrongLastSequence(err)) return false;
    throw err;
  }
}
