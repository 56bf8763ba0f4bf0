import type { JetStreamManager } from "@nats-io/jetstream";
import { type NatsConnection, headers as newHeaders } from "@nats-io/transport-node";
import { Headers } from "../../shared/headers.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import { Puller } from "../../shared/nats/puller.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import {
  DirectTaskBody,
  depthExceeds,
  idForIdempotencyKey,
  MAX_DEPTH,
  readDirectTaskBody,
  type TaskMessage,
} from "../../shared/task.ts";
import { traceIdOf } from "../../shared/telemetry/propagation.ts";
import type { TypeGate } from "./limits/type-gate.ts";
import { traceDispatch } from "./tracing.ts";

/** What a type dispatcher needs from the dispatcher. */
export type TypeDispatcherDeps = {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: Names;
  publisher: AckedPublisher;
  log: Logger;
  prefetchRatio: number;
  prefetchMs: number;
  windowMax: number;
  /** Current slots of live workers for this type. */
  capacity: () => number;
  /** True for a task cancelled while it waited: it is dropped here instead of dispatched. */
  isCancelled?: (id: string) => boolean;
  /** Called for every dispatched task (metrics hooks). */
  onDispatch?: (priority: Priority, waitedMs: number) => void;
  /** Queue limits of the type: pause, concurrency, rate, keys, aging (limits/type-gate.ts). */
  gate?: TypeGate;
  /** Nothing stored or freed for this long makes consumer info exact (default QUIET_MS; tests). */
  quietMs?: number;
};

const encoder = new TextEncoder();
// fatal: bytes that are not UTF-8 are not JSON, and decoding them to U+FFFD would run a task nobody sent
const decoder = new TextDecoder("utf-8", { fatal: true });
/** A task id becomes a KV key and a subject token: what the state bucket cannot key is no task (the gateway's rule). */
const TASK_ID_RE = /^[-/=\w]+(\.[-/=\w]+)*$/;
const TASK_ID_MAX = 256;
// a third of the tasks consumers' ack wait: held messages stay ours, a crashed leader's come back within it
const HOLD_KEEPALIVE_MS = 3_000;
/** Nothing stored or freed for this long: no final write can still be under way, so consumer info is exact. */
const QUIET_MS = 1_000;

/**
 * Dispatches one task type: holds a small window of messages from each of the type's five priority
 * consumers and, while workers have free slots, moves the most urgent held message to the work stream.
 *
 * Holding a window per priority (rather than reading priorities in turn) is what lets a task enqueued
 * a moment ago overtake a backlog: it lands in the `urgent` window at once and is the next one chosen.
 * The tasks message is acked only after the work publish is stored; the work publish carries msg id
 * `<task id>:<tasks seq>`, so a crash in between cannot dispatch the task twice.
 */
export class TypeDispatcher {
  readonly type: string;
  readonly #d: TypeDispatcherDeps;
  readonly #pullers: Puller[];
  readonly #held: Delivery[][] = PRIORITIES.map(() => []);
  /** Work messages stored and not yet finished, per our last reconcile plus changes since. */
  #stored = 0;
  /** Work publishes sent and not yet acked by the server. */
  #publishing = 0;
  #storedTotal = 0;
  #freedTotal = 0;
  /** Completions per second, an exponentially weighted average over about a second. */
  #rate = 0;
  #rateAt = Date.now();
  #running = false;
  /** False until the first reconcile: dispatching on a guessed in-flight of 0 could break a limit. */
  #reconciled = false;
  /** Last time a work publish was stored or a slot freed: a reconcile after a quiet spell is exact. */
  #activeAt = Date.now();
  #keepalive: NodeJS.Timeout | undefined;

  constructor(type: string, deps: TypeDispatcherDeps) {
    this.type = type;
    this.#d = deps;
    this.#pullers = PRIORITIES.map(
      (p, i) =>
        new Puller(deps.nc, deps.names.tasksStream, deps.names.tasksConsumer(p, type), {
          onMessage: (m) => this.#onHeld(i, m),
          log: deps.log,
          expiresMs: 5_000,
        }),
    );
  }

  /** Tasks in the work stream or with a worker. */
  get inFlight(): number {
    return this.#stored + this.#publishing;
  }

  /** Messages held per priority (for status and tests). */
  held(): number[] {
    return this.#held.map((h) => h.length);
  }

  /** Start pulling and dispatching. */
  start(): void {
    this.#running = true;
    this.#keepalive = setInterval(() => {
      for (const h of this.#held) for (const m of h) m.working();
    }, HOLD_KEEPALIVE_MS);
    this.#keepalive.unref();
    void this.reconcile().finally(() => {
      this.#reconciled = true;
      this.pump();
    });
  }

  /** Stop, and give every held message back for whoever leads next. */
  stop(): void {
    this.#running = false;
    clearInterval(this.#keepalive);
    for (const p of this.#pullers) p.close();
    for (const h of this.#held) for (const m of h.splice(0)) m.nak();
  }

  /** After a reconnect: the server may have lost our pull requests. */
  resetPulls(): void {
    for (const p of this.#pullers) p.reset();
  }

  /** Workers report `n` slots of this type freed. */
  freed(n: number): void {
    this.#stored = Math.max(0, this.#stored - n);
    this.#freedTotal += n;
    const now = Date.now();
    this.#activeAt = now;
    this.#rate = this.#rate * Math.exp(-(now - this.#rateAt) / 1000) + n;
    this.#rateAt = now;
    this.pump();
  }

  /**
   * How many tasks to dispatch ahead of free slots: about `prefetchMs` of work at the observed
   * completion rate, never more than `capacity × prefetchRatio`. Fast tasks get enough to keep every
   * slot fed while the dispatcher reacts; slow tasks get none, so nothing waits in front of an urgent one.
   */
  prefetch(capacity: number): number {
    const rate = this.#rate * Math.exp(-(Date.now() - this.#rateAt) / 1000);
    return Math.min(
      Math.floor(capacity * this.#d.prefetchRatio),
      Math.floor((rate * this.#d.prefetchMs) / 1000),
    );
  }

  /** Re-read the true in-flight count from the work consumer. */
  async reconcile(): Promise<void> {
    const s0 = this.#storedTotal;
    const f0 = this.#freedTotal;
    const startedAt = Date.now();
    try {
      const info = await this.#d.jsm.consumers.info(
        this.#d.names.workStream,
        this.#d.names.workConsumer(this.type),
      );
      const truth = info.num_pending + info.num_ack_pending;
      // `truth` is taken at some moment between our request and its answer, and it still counts
      // tasks whose slot is already freed (their final write is under way): so `truth` plus every
      // publish stored meanwhile is an upper bound of what is really in flight, and under load it
      // was hundreds too high (the API answers slowly; publishes kept coming). Taking it as the
      // count stalled dispatch until the next reconcile — urgent tasks waited ~1 s with nothing in
      // flight. So the count is only ever lowered to that bound (it drifts high when notices are
      // lost: a reconnect, a draining worker). Under a concurrency limit, erring high is the point:
      // the bound is taken as is. Before the first reconcile there is no count: take the bound
      // minus the frees seen meanwhile.
      // After a quiet spell (nothing stored, nothing freed for QUIET_MS before the request and none
      // during it) nothing is under way either, and `truth` is exact: taken as it is, in both
      // directions. That heals a count left low by a slot freed twice (a worker that died between
      // freeing a slot and acking: the task runs again elsewhere and frees again).
      const quiet =
        this.#storedTotal === s0 &&
        this.#freedTotal === f0 &&
        startedAt - this.#activeAt >= (this.#d.quietMs ?? QUIET_MS);
      const bound = truth + (this.#storedTotal - s0);
      if (this.#d.gate?.strict) this.#stored = bound;
      else if (!this.#reconciled) this.#stored = Math.max(0, bound - (this.#freedTotal - f0));
      else if (quiet) this.#stored = truth;
      else this.#stored = Math.min(this.#stored, bound);
      this.#d.log.debug(
        {
          type: this.type,
          stored: this.#stored,
          publishing: this.#publishing,
          held: this.held(),
          pulling: this.#pullers.map((p) => p.outstanding),
          capacity: this.#d.capacity(),
        },
        "dispatch accounting",
      );
    } catch (err) {
      this.#d.log.debug({ err, type: this.type }, "reconcile failed");
    }
  }

  /** Dispatch while there are free slots and held messages; then top up the windows. */
  pump(): void {
    if (!this.#running || !this.#reconciled) return;
    const capacity = this.#d.capacity();
    const gate = this.#d.gate;
    const limit = gate ? gate.limit(capacity + this.prefetch(capacity)) : capacity + this.prefetch(capacity);
    while (this.inFlight < limit) {
      if (gate) {
        const at = gate.pick(this.#held);
        if (!at) break;
        this.#dispatch(PRIORITIES[at[0]]!, this.#held[at[0]]!.splice(at[1], 1)[0]!);
        continue;
      }
      const i = this.#held.findIndex((h) => h.length > 0);
      if (i < 0) break;
      this.#dispatch(PRIORITIES[i]!, this.#held[i]!.shift()!);
    }
    this.#topUp(capacity === 0 ? 0 : Math.min(this.#d.windowMax, limit));
  }

  #onHeld(i: number, m: Delivery): void {
    if (!this.#running) {
      m.nak();
      return;
    }
    this.#held[i]!.push(m);
    this.pump();
  }

  #topUp(window: number): void {
    for (let i = 0; i < PRIORITIES.length; i++) {
      const w = this.#d.gate ? this.#d.gate.window(i, window, this.#held[i]!) : window;
      const puller = this.#pullers[i]!;
      // top up in chunks of a quarter window: one pull request per task at a steady rate cost more
      // CPU (server and client) than the dispatch itself; a window of 4 or less still asks at once
      puller.lowWater = w >> 2;
      const want = w - this.#held[i]!.length - puller.outstanding;
      if (want > 0) puller.request(want);
    }
  }

  #dispatch(priority: Priority, m: Delivery): void {
    const task = this.#read(priority, m);
    if (!task) return;
    if (this.#d.isCancelled?.(task.id)) {
      // the gateway recorded `cancelled` when it sent the signal; nothing to run
      m.ack();
      return;
    }
    this.#d.gate?.taken(m);
    this.#publishing++;
    const h = newHeaders();
    const now = Date.now();
    h.set(Headers.dispatchedAt, String(now));
    // the dispatch span becomes the handler span's parent (untraced: the incoming context is copied)
    const span = traceDispatch(
      m.headers,
      h,
      task.id,
      this.type,
      priority,
      this.#d.names.workSubject(this.type),
    );
    const work = this.#d.publisher.publish(this.#d.names.workSubject(this.type), task.data, {
      msgId: `${task.id}:${m.streamSeq}`,
      headers: h,
    });
    work.then(
      () => {
        this.#publishing--;
        this.#stored++;
        this.#storedTotal++;
        this.#activeAt = Date.now();
        m.ack();
        span?.end();
        this.#d.onDispatch?.(priority, now - task.enqueuedAt);
      },
      (err) => {
        this.#publishing--;
        span?.end(err);
        this.#d.log
          .child({ taskId: task.id, type: this.type, traceId: span?.traceId ?? traceIdOf(m.headers) })
          .warn({ err: String(err) }, "dispatch not stored; task handed back");
        this.#d.gate?.returned(m);
        m.nak(1000);
      },
    );
  }

  /** The bytes to forward and the task id, or undefined after terminating an unreadable message. */
  #read(priority: Priority, m: Delivery): { id: string; data: Uint8Array; enqueuedAt: number } | undefined {
    let body: Record<string, unknown>;
    try {
      body = JSON.parse(decoder.decode(m.data)) as Record<string, unknown>;
      if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error("not an object");
    } catch (err) {
      this.#reject(m, `not JSON: ${String(err)}`);
      return undefined;
    }
    if (typeof body.id === "string" && typeof body.type === "string" && typeof body.enqueuedAt === "number") {
      if (!isTaskId(body.id)) {
        this.#reject(m, "id is not a valid task id");
        return undefined;
      }
      // written by the gateway: forward as is
      return { id: body.id, data: m.data, enqueuedAt: body.enqueuedAt };
    }
    // zod recurses into the payload: thousands of levels overflow its stack, and it then keeps what it
    // held (~0.2 MB a message, measured). The gateway refuses such bodies before zod sees them; so do we.
    if (depthExceeds(body, MAX_DEPTH)) {
      this.#reject(m, `nests deeper than ${MAX_DEPTH} levels`);
      return undefined;
    }
    let b = readDirectTaskBody(body);
    if (!b) {
      // not the common shape: the schema says what is wrong with it
      let parsed: ReturnType<typeof DirectTaskBody.safeParse>;
      try {
        parsed = DirectTaskBody.safeParse(body);
      } catch (err) {
        // an exception escaping to the pull subscription's callback would stall the whole connection
        this.#reject(m, `unreadable: ${String(err)}`);
        return undefined;
      }
      if (!parsed.success) {
        this.#reject(m, parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
        return undefined;
      }
      b = parsed.data;
    }
    const id =
      b.id ??
      (b.idempotencyKey
        ? idForIdempotencyKey(this.type, b.idempotencyKey)
        : `j${m.streamSeq}-${m.storedAtMs.toString(36)}`);
    if (!isTaskId(id)) {
      this.#reject(m, "id is not a valid task id");
      return undefined;
    }
    const task: TaskMessage = {
      id,
      type: this.type,
      priority,
      payload: b.payload ?? null,
      enqueuedAt: b.enqueuedAt ?? m.storedAtMs,
    };
    if (b.idempotencyKey !== undefined) task.idempotencyKey = b.idempotencyKey;
    if (b.timeoutMs !== undefined) task.timeoutMs = b.timeoutMs;
    if (b.maxAttempts !== undefined) task.maxAttempts = b.maxAttempts;
    return { id, data: encoder.encode(JSON.stringify(task)), enqueuedAt: task.enqueuedAt };
  }

  #reject(m: Delivery, reason: string): void {
    this.#d.log.warn(
      { type: this.type, seq: m.streamSeq, traceId: traceIdOf(m.headers), reason },
      "invalid task message terminated",
    );
    m.term();
  }
}

function isTaskId(id: string): boolean {
  return id.length <= TASK_ID_MAX && TASK_ID_RE.test(id);
}
