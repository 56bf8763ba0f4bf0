import type { KV } from "@nats-io/kv";
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";
import { type AckedPublisher, isWrongLastSequence } from "../../../shared/nats/publisher.ts";
import { dueTicks, type ScheduleRecord } from "../../../shared/schedule.ts";
import { initialState, toTaskMessage } from "../../../shared/task.ts";

/** What the recurring scheduler needs. */
export type RecurringDeps = {
  schedules: KV;
  state: KV;
  publisher: AckedPublisher;
  names: Names;
  log: Logger;
  /** Called for every tick enqueued (metrics, tests). */
  onTick?: (name: string, tick: number, lateMs: number) => void;
};

const CHECK_MS = 100;
const encoder = new TextEncoder();

type Held = { rec: ScheduleRecord; revision: number };

/**
 * Fires recurring schedules on the dispatcher leader. A watch on the schedules bucket keeps every
 * record in memory; every {@link CHECK_MS} the due ones fire: each tick becomes a task whose id is
 * derived from `schedule:<name>:<tick epoch ms>`, enqueued like the gateway does (tasks publish with
 * that id as msg id, then the state record created if absent), and then the record's `nextRunAt` is
 * advanced with compare-and-set. A leader that dies between the two simply has its successor fire the
 * same tick again, which finds the task's state record and only advances.
 */
export class RecurringScheduler {
  readonly #d: RecurringDeps;
  readonly #held = new Map<string, Held>();
  readonly #busy = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #stopWatch: (() => void) | undefined;
  #running = false;

  constructor(deps: RecurringDeps) {
    this.#d = deps;
  }

  /** Schedules known (for status views and tests). */
  get size(): number {
    return this.#held.size;
  }

  /** Watch the bucket and start firing. */
  async start(): Promise<void> {
    this.#running = true;
    const iter = await this.#d.schedules.watch({ key: ">" });
    this.#stopWatch = () => iter.stop();
    void (async () => {
      for await (const e of iter) {
        if (e.operation !== "PUT") {
          this.#held.delete(e.key);
          continue;
        }
        const cur = this.#held.get(e.key);
        if (cur && cur.revision >= e.revision) continue; // our own update got here first
        try {
          this.#held.set(e.key, { rec: e.json<ScheduleRecord>(), revision: e.revision });
        } catch {
          this.#d.log.warn({ schedule: e.key }, "unreadable schedule ignored");
        }
      }
    })();
    this.#timer = setInterval(() => this.#check(), CHECK_MS);
  }

  /** Stop firing; a tick under way finishes (it is idempotent). */
  stop(): void {
    this.#running = false;
    clearInterval(this.#timer);
    this.#stopWatch?.();
    this.#held.clear();
  }

  #check(): void {
    const now = Date.now();
    for (const [name, h] of this.#held) {
      if (h.rec.paused || h.rec.nextRunAt > now || this.#busy.has(name)) continue;
      this.#busy.add(name);
      void this.#run(h, now).finally(() => this.#busy.delete(name));
    }
  }

  async #run({ rec, revision }: Held, now: number): Promise<void> {
    try {
      const { fire, next } = dueTicks(rec, now);
      // The watch can lag a pause, an edit or a delete the gateway already answered for; the
      // compare-and-set below would notice only after the tick's task is enqueued. One read first makes
      // a change effective for every tick not already under way when it was stored.
      if (fire.length > 0) {
        const cur = await this.#d.schedules.get(rec.name);
        if (!cur || cur.operation !== "PUT" || cur.revision !== revision) return;
      }
      const upd: ScheduleRecord = { ...rec, updatedAt: Date.now() };
      for (const tick of fire) {
        if (!this.#running) return;
        upd.lastTaskId = await enqueueTick(this.#d, rec, tick);
        upd.lastRunAt = tick;
        this.#d.onTick?.(rec.name, tick, Date.now() - tick);
      }
      if (fire.length === 0 && rec.nextRunAt < now)
        this.#d.log.info({ schedule: rec.name, from: rec.nextRunAt }, "missed ticks skipped");
      if (next === undefined) {
        upd.paused = true;
        this.#d.log.warn({ schedule: rec.name }, "schedule has no further ticks; paused");
      } else {
        upd.nextRunAt = next;
      }
      const rev = await this.#d.schedules.update(rec.name, JSON.stringify(upd), revision);
      if (this.#running && (this.#held.get(rec.name)?.revision ?? 0) < rev)
        this.#held.set(rec.name, { rec: upd, revision: rev });
    } catch (err) {
      // a conflict means the record changed (paused, deleted, edited): the watch brings the new one and
      // a tick fired already is recognised by its state record next time
      if (!/wrong last sequence/i.test(String((err as Error)?.message)))
        this.#d.log.warn({ err: String(err), schedule: rec.name }, "schedule tick failed; trying again");
    }
  }
}

/**
 * Enqueue the task of one tick, once: if its state record exists the tick fired already (and its tasks
 * publish was stored, which comes first), so nothing is published again. Returns the task id.
 */
export async function enqueueTick(
  d: Pick<RecurringDeps, "state" | "publisher" | "names">,
  rec: ScheduleRecord,
  tick: number,
): Promise<string> {
  const input = { ...rec.task, idempotencyKey: `schedule:${rec.name}:${tick}` };
  const msg = toTaskMessage(input, Date.now());
  if (await d.state.get(msg.id)) return msg.id;
  await d.publisher.publish(d.names.tasksSubject(msg.priority, msg.type), JSON.stringify(msg), {
    msgId: msg.id,
  });
  try {
    await d.publisher.publish(
      `$KV.${d.names.stateBucket}.${msg.id}`,
      encoder.encode(JSON.stringify(initialState(msg))),
      {
        expectLastSubjectSeq: 0,
      },
    );
  } catch (err) {
    // the dispatcher or a worker wrote it first: the task is under way
    if (!isWrongLastSequence(err)) throw err;
  }
  return msg.id;
}
