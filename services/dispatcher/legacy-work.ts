import {
  AckPolicy,
  type ConsumerInfo,
  DeliverPolicy,
  type JetStreamManager,
  type JsMsg,
  jetstream,
} from "@nats-io/jetstream";
import { type NatsConnection, nanos } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import { isNotFound } from "../../shared/nats/topology.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import { traceHeadersFrom } from "../../shared/telemetry/propagation.ts";

/** Most messages one pass takes from one type's work consumer. */
export const MOVE_BATCH = 256;
/** How long a pass waits for a consumer to deliver, ms. */
const FETCH_EXPIRES_MS = 1_000;
/** Between passes that moved less than a full batch, ms: what is left is with old workers. */
const CHECK_MS = 5_000;
/** Work consumers that earlier versions created, for a subject that has none (their settings then). */
const WORK_ACK_WAIT_MS = 30_000;

const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/** What one pass did. */
export type LegacyPass = {
  /** Tasks moved back to the tasks stream. */
  moved: number;
  /** `absent` or `empty`: nothing is left to check; `moving`: the stream still holds tasks. */
  stream: "absent" | "empty" | "moving";
  /** Some consumer gave a full batch: more may be waiting right now. */
  more: boolean;
};

/** What the work stream of earlier versions says about tasks moved out of it (./stranded.ts). */
export type LegacyWorkState =
  | { exists: false }
  | {
      exists: true;
      /** Tasks still in it (being moved, or with workers of an earlier version). */
      messages: number;
      /** Epoch ms of its last write: every task moved back was stored in the tasks stream before it. */
      lastWriteMs: number;
    };

/**
 * Moves what deployments upgraded from an earlier version have left in the work stream back to the
 * tasks stream. Earlier dispatchers published every task to a work-queue stream (`P_WORK`, subject
 * `<prefix>.work.<type>`, one consumer `w_<type>` shared by the type's workers) and acked its tasks
 * message at once; workers now get tasks from the dispatcher directly, and nothing reads that stream.
 * Run by the dispatcher leader, from the start of its term until the stream is empty (or missing).
 *
 * Each task is taken through the type's own work consumer, so only what that consumer delivers is
 * moved: messages never delivered, or whose ack wait has passed. One still with a worker of the
 * earlier version (during a rolling upgrade) stays until that worker acks it, or dies and its ack wait
 * passes. A batch is published to the task's priority subject of the tasks stream with msg id
 * `<id>:w<work seq>`, all at once; only then is each work message acked. A leader that dies in between
 * leaves the batch to be delivered again after the ack wait (30 s) and published again, which the
 * tasks stream drops as a duplicate inside its window (2 min): no task is stored twice.
 *
 * Moved tasks join the tail of their subject, behind tasks enqueued after them, which is what
 * ./stranded.ts must allow for: before acking a batch, an empty marker message is written to and
 * deleted from the work stream, so the stream's last write time is later than every moved task's
 * store time while the stream shows no messages ({@link legacyWorkState}).
 */
export class LegacyWork {
  readonly #d: {
    nc: NatsConnection;
    jsm: JetStreamManager;
    names: Names;
    log: Logger;
    publisher: AckedPublisher;
  };
  readonly #markSubject: string;
  #running = false;
  #timer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #moved = 0;

  constructor(deps: {
    nc: NatsConnection;
    jsm: JetStreamManager;
    names: Names;
    log: Logger;
    /** The leader's publisher: its acks say a moved task is stored. */
    publisher: AckedPublisher;
  }) {
    this.#d = deps;
    // `_` cannot start a task type (shared/task.ts TASK_TYPE_RE): no work consumer reads it
    this.#markSubject = deps.names.workSubject("_moved");
  }

  /** Check now, and keep moving until the work stream is empty. */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#loop();
  }

  /** Stop checking (a pass under way finishes: what it published it also acks). */
  stop(): void {
    this.#running = false;
    clearTimeout(this.#timer);
    this.#wake?.();
  }

  /** One pass over every subject of the work stream: at most {@link MOVE_BATCH} per type. */
  async pass(): Promise<LegacyPass> {
    const { jsm, names } = this.#d;
    let info: Awaited<ReturnType<JetStreamManager["streams"]["info"]>>;
    try {
      info = await jsm.streams.info(names.workStream, { subjects_filter: ">" });
    } catch (err) {
      if (isNotFound(err)) return { moved: 0, stream: "absent", more: false };
      throw err;
    }
    if (info.state.messages === 0) return { moved: 0, stream: "empty", more: false };
    const subjects = Object.keys(info.state.subjects ?? {});
    // a marker left by a leader that died between writing and deleting it; deleted by sequence, never
    // purged: a filtered purge on 2.9.10 makes consumers forget their unacked deliveries (leftovers.ts)
    if (subjects.includes(this.#markSubject)) {
      const m = await jsm.streams.getMessage(names.workStream, { last_by_subj: this.#markSubject });
      if (m) await jsm.streams.deleteMessage(names.workStream, m.seq, false);
    }
    const prefix = `${names.prefix}.work.`;
    const types = subjects
      .filter((s) => s !== this.#markSubject && s.startsWith(prefix))
      .map((s) => s.slice(prefix.length));
    const results = await Promise.all(types.map((t) => this.#moveType(t)));
    let moved = 0;
    let more = false;
    for (const r of results) {
      moved += r.moved;
      more ||= r.full;
    }
    return { moved, stream: "moving", more };
  }

  async #loop(): Promise<void> {
    const { names, log } = this.#d;
    while (this.#running) {
      let r: LegacyPass = { moved: 0, stream: "moving", more: false };
      try {
        r = await this.pass();
      } catch (err) {
        log.warn({ err: String(err) }, "moving tasks back from the work stream failed; will try again");
      }
      if (r.moved > 0) {
        this.#moved += r.moved;
        log.info(
          { moved: r.moved, stream: names.workStream },
          "tasks left in the work stream moved back to the tasks stream",
        );
      }
      if (r.stream !== "moving") {
        // a deployment that never ran an earlier version has no work stream: not worth an info line
        const line = { stream: names.workStream, moved: this.#moved };
        const msg = `work stream of earlier versions ${r.stream}: nothing left to move back, stopped checking`;
        if (r.stream === "empty") log.info(line, msg);
        else log.debug(line, msg);
        this.#running = false;
        return;
      }
      if (!r.more && this.#running) {
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          this.#timer = setTimeout(resolve, CHECK_MS);
          this.#timer.unref();
        });
        this.#wake = undefined;
      }
    }
  }

  /** Move what the type's work consumer delivers now, up to a batch. */
  async #moveType(type: string): Promise<{ moved: number; full: boolean }> {
    const { nc, names, publisher, log } = this.#d;
    const ci = await this.#consumer(type);
    // pending ones, and ones whose ack wait may have passed (those with a live worker are not delivered)
    const want = Math.min(MOVE_BATCH, ci.num_pending + ci.num_ack_pending);
    if (want === 0) return { moved: 0, full: false };
    const c = await jetstream(nc).consumers.get(names.workStream, names.workConsumer(type));
    const msgs: JsMsg[] = [];
    for await (const m of await c.fetch({ max_messages: want, expires: FETCH_EXPIRES_MS })) msgs.push(m);
    if (msgs.length === 0) return { moved: 0, full: false };
    const stored = await Promise.allSettled(
      msgs.map((m) => {
        const { id, priority } = readTask(m.data);
        return publisher.publish(names.tasksSubject(priority, type), m.data, {
          msgId: `${id ?? ""}:w${m.seq}`,
          headers: traceHeadersFrom(m.headers),
        });
      }),
    );
    const ok: JsMsg[] = [];
    stored.forEach((s, i) => {
      if (s.status === "fulfilled") ok.push(msgs[i]!);
      else {
        log.warn(
          { err: String(s.reason), type, seq: msgs[i]!.seq },
          "task not moved back from the work stream; retried",
        );
        msgs[i]!.nak(1000);
      }
    });
    if (ok.length === 0) return { moved: 0, full: false };
    await this.#mark();
    // an ack lost here brings the message back after its ack wait; its new publish is then a duplicate
    await Promise.allSettled(ok.map((m) => m.ackAck()));
    return { moved: ok.length, full: msgs.length === MOVE_BATCH };
  }

  /** The type's work consumer, created as earlier versions did when the subject has none. */
  async #consumer(type: string): Promise<ConsumerInfo> {
    const { jsm, names } = this.#d;
    const durable = names.workConsumer(type);
    try {
      return await jsm.consumers.info(names.workStream, durable);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      return await jsm.consumers.add(names.workStream, {
        durable_name: durable,
        filter_subject: names.workSubject(type),
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(WORK_ACK_WAIT_MS),
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: 100_000,
        max_waiting: 4096,
        description: `workers run ${type}`,
      });
    } catch {
      // created meanwhile by a worker of an earlier version
      return await jsm.consumers.info(names.workStream, durable);
    }
  }

  /** Make the work stream's last write later than every task just stored in the tasks stream. */
  async #mark(): Promise<void> {
    const a = await this.#d.publisher.publish(this.#markSubject, EMPTY);
    await this.#d.jsm.streams.deleteMessage(this.#d.names.workStream, a.seq, false);
  }
}

/**
 * Read the work stream's state, for ./stranded.ts: while it holds messages a task may be in it or on
 * its way back; once empty, every task moved back was stored before `lastWriteMs`.
 */
export async function legacyWorkState(jsm: JetStreamManager, names: Names): Promise<LegacyWorkState> {
  try {
    const { state } = await jsm.streams.info(names.workStream);
    return { exists: true, messages: state.messages, lastWriteMs: Date.parse(state.last_ts) };
  } catch (err) {
    if (isNotFound(err)) return { exists: false };
    throw err;
  }
}

/** The id and priority of a work message body; a body that is no task goes to `normal` as it is (the dispatcher terminates it). */
function readTask(data: Uint8Array): { id: string | undefined; priority: Priority } {
  try {
    const b = JSON.parse(decoder.decode(data)) as { id?: unknown; priority?: unknown } | null;
    const id = typeof b?.id === "string" ? b.id : undefined;
    const p = b?.priority;
    return { id, priority: PRIORITIES.includes(p as Priority) ? (p as Priority) : "normal" };
  } catch {
    return { id: undefined, priority: "normal" };
  }
}
