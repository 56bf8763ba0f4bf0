import type { DeadLetter } from "../../shared/dlq.ts";
import { ConflictError, ErrorCodes, NotFoundError } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isWrongLastSequence } from "../../shared/nats/publisher.ts";
import { initialState, newTaskId, type TaskMessage, type TaskState } from "../../shared/task.ts";
import { cas, read } from "./control.ts";
import type { Session, SessionSource } from "./link.ts";

/** One dead letter as the API shows it. */
export type DeadLetterView = DeadLetter & { seq: number; id: string; type: string };

/** Which dead letters a replay or purge applies to: some ids, one type, or all. */
export type DeadLetterSelector = { ids?: string[]; type?: string; all?: boolean; limit?: number };

const MAX_LIST = 500;
const MAX_REPLAY = 10_000;

/**
 * The dead-letter stream seen from the API: list in the order tasks died, inspect one, replay (a fresh
 * task with a fresh attempt series and `replayOf` pointing back; the dead record gets `replayedBy`),
 * purge. Dead records stay in the state bucket until retention removes them.
 */
export class DeadLetters {
  readonly #link: SessionSource;
  readonly #names: Names;

  constructor(o: { link: SessionSource; names: Names }) {
    this.#link = o.link;
    this.#names = o.names;
  }

  /** Entries from `cursor` (a stream sequence, exclusive) on, oldest first. */
  async list(
    o: { type?: string; limit?: number; cursor?: number } = {},
  ): Promise<{ items: DeadLetterView[]; nextCursor?: number }> {
    const s = this.#link.session();
    const limit = Math.min(Math.max(1, o.limit ?? 50), MAX_LIST);
    const items = await this.#scan(s, o.type, (o.cursor ?? 0) + 1, limit);
    const last = items.at(-1);
    return items.length === limit && last ? { items, nextCursor: last.seq } : { items };
  }

  /** The dead task's record, with its task message (payload) and last error. */
  async get(id: string): Promise<TaskState> {
    const { state } = await read(this.#link.session(), id);
    if (state.status !== "dead")
      throw new NotFoundError(ErrorCodes.notDead, `task ${id.slice(0, 64)} is ${state.status}, not dead`);
    return state;
  }

  /** Replay the selected dead tasks; answers the new id of each. */
  async replay(sel: DeadLetterSelector): Promise<{ replayed: { id: string; newId: string }[] }> {
    const s = this.#link.session();
    const targets = await this.#select(s, sel, MAX_REPLAY);
    const replayed: { id: string; newId: string }[] = [];
    for (const id of targets) {
      const { state, revision } = await read(s, id);
      if (state.status !== "dead" || !state.task) {
        if (sel.ids)
          throw new ConflictError(ErrorCodes.notDead, `task ${id.slice(0, 64)} is ${state.status}, not dead`);
        continue;
      }
      if (state.replayedBy) {
        replayed.push({ id, newId: state.replayedBy });
        continue;
      }
      const newId = newTaskId();
      const task: TaskMessage = {
        ...state.task,
        id: newId,
        attempt: 1,
        replayOf: id,
        enqueuedAt: Date.now(),
      };
      delete task.runAt;
      delete task.resumed;
      delete task.idempotencyKey;
      // the old record first, with compare-and-set: two replays of the same task cannot both win
      if (!(await cas(s, this.#names, { ...state, replayedBy: newId, updatedAt: Date.now() }, revision))) {
        const again = await read(s, id);
        if (again.state.replayedBy) replayed.push({ id, newId: again.state.replayedBy });
        continue;
      }
      await s.pub.publish(this.#names.tasksSubject(task.priority, task.type), JSON.stringify(task), {
        msgId: newId,
      });
      // insert-if-absent: the pipeline may already have run the new task and written its record
      await s.pub
        .publish(`$KV.${this.#names.stateBucket}.${newId}`, JSON.stringify(initialState(task)), {
          expectLastSubjectSeq: 0,
        })
        .catch((err) => {
          if (!isWrongLastSequence(err)) throw err;
        });
      if (state.dlqSeq)
        await s.jsm.streams.deleteMessage(this.#names.dlqStream, state.dlqSeq, false).catch(() => false);
      replayed.push({ id, newId });
    }
    return { replayed };
  }

  /** Remove the selected entries from the dead-letter stream; answers how many. */
  async purge(sel: DeadLetterSelector): Promise<{ purged: number }> {
    const s = this.#link.session();
    if (!sel.ids && (sel.all || sel.type)) {
      const r = await s.jsm.streams.purge(
        this.#names.dlqStream,
        sel.type ? { filter: this.#names.dlqSubject(sel.type) } : undefined,
      );
      return { purged: r.purged };
    }
    let purged = 0;
    for (const id of sel.ids ?? []) {
      const { state } = await read(s, id);
      if (state.status !== "dead")
        throw new NotFoundError(ErrorCodes.notDead, `task ${id.slice(0, 64)} is not dead`);
      if (
        state.dlqSeq &&
        (await s.jsm.streams.deleteMessage(this.#names.dlqStream, state.dlqSeq, false).catch(() => false))
      )
        purged++;
    }
    return { purged };
  }

  async #select(s: Session, sel: DeadLetterSelector, max: number): Promise<string[]> {
    if (sel.ids) return sel.ids.slice(0, max);
    if (!sel.all && !sel.type) return [];
    const limit = Math.min(sel.limit ?? max, max);
    return (await this.#scan(s, sel.type, 1, limit)).map((e) => e.id);
  }

  /** Read up to `limit` entries from sequence `from` on, one subject or all. */
  async #scan(s: Session, type: string | undefined, from: number, limit: number): Promise<DeadLetterView[]> {
    const subject = type ? this.#names.dlqSubject(type) : this.#names.dlqSubjectAll;
    const out: DeadLetterView[] = [];
    let seq = from;
    while (out.length < limit) {
      let m: Awaited<ReturnType<typeof s.jsm.direct.getMessage>>;
      try {
        m = await s.jsm.direct.getMessage(this.#names.dlqStream, { seq, next_by_subj: subject });
      } catch {
        break; // no message at or after seq
      }
      if (!m) break;
      const e = m.json<DeadLetter>();
      out.push({ ...e, seq: m.seq, id: e.task.id, type: e.task.type });
      seq = m.seq + 1;
    }
    return out;
  }
}
