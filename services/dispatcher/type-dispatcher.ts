import type { JetStreamManager } from "@nats-io/jetstream";
import { type MsgHdrs, type NatsConnection, headers as newHeaders } from "@nats-io/transport-node";
import { Headers } from "../../shared/headers.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { type Delivery, handOffReply } from "../../shared/nats/delivery.ts";
import { consumerSource, Puller } from "../../shared/nats/puller.ts";
import { PRIORITIES, type Priority } from "../../shared/priority.ts";
import {
  DirectTaskBody,
  depthExceeds,
  directTaskMessageBytes,
  idForIdempotencyKey,
  MAX_DEPTH,
  readDirectTaskBody,
  type TaskMessage,
} from "../../shared/task.ts";
import { traceIdOf, traceparentOf } from "../../shared/telemetry/propagation.ts";
import { tracingEnabled } from "../../shared/telemetry/tracing.ts";
import type { HandOffTarget } from "./demand.ts";
import type { TypeGate } from "./limits/type-gate.ts";
import { traceDispatch } from "./tracing.ts";

/** What a type dispatcher needs from the dispatcher. */
export type TypeDispatcherDeps = {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: Names;
  log: Logger;
  /** Workers' pull requests for this type (./demand.ts): where each dispatched task goes. */
  demand: { outstanding(): number; take(): HandOffTarget | undefined };
  prefetchRatio: number;
  prefetchMs: number;
  windowMax: number;
  /** Current slots of live workers for this type. */
  capacity: () => number;
  /**
   * What the workers last reported running of this type, and the oldest report's time (epoch ms):
   * an in-flight bound that, unlike consumer info, does not count tasks nobody holds any more.
   */
  reportedRunning?: () => { running: number; at: number };
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
// at most a third of the tasks consumers' ack wait (read at each reconcile): held messages stay ours,
// a crashed leader's come back within it
const HOLD_KEEPALIVE_MS = 3_000;
/** Nothing stored or freed for this long: no final write can still be under way, so consumer info is exact. */
const QUIET_MS = 1_000;
/** How long a delivery is remembered to tell copies of it apart, ms (one to two of these). */
const SEEN_MS = 2_000;
/** Room for a task handed on just before a worker's report to reach it, and for clocks, ms. */
const REPORT_MARGIN_MS = 1_000;
/** How long hand-off times are kept, in whole seconds (reports are at most a few seconds old). */
const HANDED_SECONDS = 30;

/**
 * Dispatches one task type: holds a small window of messages from each of the type's five priority
 * consumers and, while workers ask for tasks (./demand.ts), hands the most urgent held message to one
 * of them.
 *
 * Holding a window per priority (rather than reading priorities in turn) is what lets a task enqueued
 * a moment ago overtake a backlog: it lands in the `urgent` window at once and is the next one chosen.
 *
 * A task is handed on over core NATS with the ack subject of its tasks message in a header; the worker
 * acks that message once the outcome is stored, and keeps it alive while the handler runs. Nothing is
 * stored in between: an earlier design published every task to a work stream and acked the tasks
 * message then, which cost the server a store, a delivery and two acks per task and capped end-to-end
 * throughput near a third of raw JetStream's (docs/performance.md). A task lost on the way (a worker
 * that died) is redelivered by the tasks consumer after its ack wait, as a held one is after a leader
 * dies.
 */
export class TypeDispatcher {
  readonly type: string;
  readonly #d: TypeDispatcherDeps;
  readonly #pullers: Puller[];
  readonly #held: Delivery[][] = PRIORITIES.map(() => []);
  /** Tasks handed to workers and not yet finished, per our last reconcile plus changes since. */
  #stored = 0;
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
  /**
   * Delivery counts of the messages delivered to us lately, per priority, in two generations turned
   * over every {@link SEEN_MS}: what tells a copy from a redelivery (#onHeld).
   */
  readonly #seen = PRIORITIES.map(() => ({
    recent: new Map<number, number>(),
    older: new Map<number, number>(),
  }));
  #seenTurn: NodeJS.Timeout | undefined;
  #keepaliveMs = HOLD_KEEPALIVE_MS;
  #startedAt = 0;
  /** Tasks handed on per epoch second, the last {@link HANDED_SECONDS}: for the reports bound. */
  readonly #handed = new Map<number, number>();

  constructor(type: string, deps: TypeDispatcherDeps) {
    this.type = type;
    this.#d = deps;
    this.#pullers = PRIORITIES.map(
      (p, i) =>
        new Puller(deps.nc, consumerSource(deps.names.tasksStream, deps.names.tasksConsumer(p, type)), {
          onMessage: (m) => this.#onHeld(i, m),
          log: deps.log,
          expiresMs: 5_000,
        }),
    );
  }

  /** Tasks handed to workers and not finished. */
  get inFlight(): number {
    return this.#stored;
  }

  /** Messages held per priority (for status and tests). */
  held(): number[] {
    return this.#held.map((h) => h.length);
  }

  /** Start pulling and dispatching. */
  start(): void {
    this.#running = true;
    this.#startedAt = Date.now();
    this.#armKeepalive();
    this.#seenTurn = setInterval(() => {
      for (const s of this.#seen) {
        s.older = s.recent;
        s.recent = new Map();
      }
    }, SEEN_MS);
    this.#seenTurn.unref();
    void this.reconcile().finally(() => {
      this.#reconciled = true;
      this.pump();
    });
  }

  /** Stop, and give every held message back for whoever leads next. */
  stop(): void {
    this.#running = false;
    clearInterval(this.#keepalive);
    clearInterval(this.#seenTurn);
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

  /** Tasks handed on since `t` (epoch ms), to the whole second before it: errs high. */
  #handedSince(t: number): number {
    const from = Math.floor(t / 1000);
    if (from <= Math.floor(Date.now() / 1000) - HANDED_SECONDS) return Number.POSITIVE_INFINITY;
    let n = 0;
    for (const [sec, c] of this.#handed) if (sec >= from) n += c;
    return n;
  }

  #armKeepalive(): void {
    clearInterval(this.#keepalive);
    this.#keepalive = setInterval(() => {
      for (const h of this.#held) for (const m of h) m.working();
    }, this.#keepaliveMs);
    this.#keepalive.unref();
  }

  /**
   * Re-read the true in-flight count from the tasks consumers: their messages awaiting an ack are the
   * ones held here and the ones with workers.
   */
  async reconcile(): Promise<void> {
    const s0 = this.#storedTotal;
    const f0 = this.#freedTotal;
    const startedAt = Date.now();
    // held now are counted as awaiting their ack in every answer; those that arrive meanwhile count
    // as in flight, which errs high, as a limit wants
    let held = 0;
    for (const h of this.#held) held += h.length;
    try {
      const infos = await Promise.all(
        PRIORITIES.map((p) =>
          this.#d.jsm.consumers.info(this.#d.names.tasksStream, this.#d.names.tasksConsumer(p, this.type)),
        ),
      );
      let ackPending = 0;
      for (const info of infos) ackPending += info.num_ack_pending;
      const truth = Math.max(0, ackPending - held);
      // a worker may set a shorter ack wait on the consumers (WORK_ACK_WAIT_MS): keep held messages inside it
      const ackWaitMs = Math.min(
        ...infos.map((i) => (i.config.ack_wait ?? 0) / 1_000_000 || HOLD_KEEPALIVE_MS * 3),
      );
      const keepaliveMs = Math.max(100, Math.min(HOLD_KEEPALIVE_MS, Math.floor(ackWaitMs / 3)));
      if (keepaliveMs !== this.#keepaliveMs && this.#running) {
        this.#keepaliveMs = keepaliveMs;
        this.#armKeepalive();
      }
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
      let bound = truth + (this.#storedTotal - s0);
      // Consumer info also counts messages nobody holds any more: a dead leader's, or ones handed to
      // a worker that died, until their ack wait passes and a pull request of ours takes them back.
      // Under a concurrency limit, taken as the count, they blocked dispatch for good (no slot freed,
      // so no pull request was made). The workers' own reports, plus what was handed on since the
      // oldest of them (and a margin), bound it from the other side.
      // Only reports written after we began count: before that, a leader before us handed tasks on
      // that no report and no count of ours has.
      const reported = this.#d.reportedRunning?.();
      const since = reported ? reported.at - REPORT_MARGIN_MS : 0;
      if (reported && since >= this.#startedAt)
        bound = Math.min(bound, reported.running + this.#handedSince(since));
      if (this.#d.gate?.strict) this.#stored = bound;
      else if (!this.#reconciled) this.#stored = Math.max(0, bound - (this.#freedTotal - f0));
      else if (quiet) this.#stored = truth;
      else this.#stored = Math.min(this.#stored, bound);
      this.#d.log.debug(
        {
          type: this.type,
          stored: this.#stored,
          demand: this.#d.demand.outstanding(),
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

  /** Dispatch while workers ask for tasks and messages are held; then top up the windows. */
  pump(): void {
    if (!this.#running || !this.#reconciled) return;
    const capacity = this.#d.capacity();
    const gate = this.#d.gate;
    const limit = gate ? gate.limit(capacity + this.prefetch(capacity)) : capacity + this.prefetch(capacity);
    // Workers ask only for free slots, so their demand is what bounds dispatch; the in-flight count
    // only matters under a concurrency limit. (Checked always, a count inflated by messages nobody
    // holds — see reconcile — stopped dispatch while workers sat idle asking for work.)
    const concurrency = gate?.concurrency;
    const demand = this.#d.demand;
    while (demand.outstanding() > 0 && (concurrency === undefined || this.inFlight < concurrency)) {
      let i: number;
      let m: Delivery;
      if (gate) {
        const at = gate.pick(this.#held);
        if (!at) break;
        i = at[0];
        m = this.#held[i]!.splice(at[1], 1)[0]!;
      } else {
        i = this.#held.findIndex((h) => h.length > 0);
        if (i < 0) break;
        m = this.#held[i]!.shift()!;
      }
      if (!this.#dispatch(PRIORITIES[i]!, m)) {
        // every request left had expired: keep the message first in line for the next one
        this.#held[i]!.unshift(m);
        break;
      }
    }
    this.#topUp(capacity === 0 ? 0 : Math.min(this.#d.windowMax, limit));
  }

  #onHeld(i: number, m: Delivery): void {
    if (!this.#running) {
      m.nak();
      return;
    }
    // A message delivered again with no higher delivery count is a copy, not a redelivery: nats-server
    // 2.9.10 was seen delivering a message the previous leader had just nak'd on stepping down (count
    // 2) and then the same message again with count 1, and both copies ran. Every real redelivery (a
    // nak, an ack wait passed) counts one more.
    const seen = this.#seen[i]!;
    const prev = seen.recent.get(m.streamSeq) ?? seen.older.get(m.streamSeq);
    if (prev !== undefined && m.deliveryCount <= prev) {
      this.#d.log.warn(
        { type: this.type, seq: m.streamSeq, deliveryCount: m.deliveryCount, before: prev },
        "copy of a message already delivered dropped",
      );
      return;
    }
    seen.recent.set(m.streamSeq, m.deliveryCount);
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

  /**
   * Hand `m` to the next worker request. False (and `m` untouched) when no request is left; true when
   * it was handed on, or settled here (cancelled, unreadable).
   */
  #dispatch(priority: Priority, m: Delivery): boolean {
    const task = this.#read(priority, m);
    if (!task) return true;
    if (this.#d.isCancelled?.(task.id)) {
      // the gateway recorded `cancelled` when it sent the signal; nothing to run
      m.ack();
      return true;
    }
    const to = this.#d.demand.take();
    if (to === undefined) return false;
    const now = Date.now();
    this.#d.gate?.taken(m, now);
    // Hand-off reply (shared/nats/delivery.ts): headers only for a trace context. The header form is
    // for workers that did not ask for it (older versions, during a rolling upgrade).
    let h: MsgHdrs | undefined;
    let reply: string | undefined;
    if (to.ackInReply) {
      reply = handOffReply(m.ackSubject, now);
      if (tracingEnabled() || traceparentOf(m.headers)) h = newHeaders();
    } else {
      h = newHeaders();
      h.set(Headers.dispatchedAt, String(now));
      h.set(Headers.ack, m.ackSubject);
    }
    // the dispatch span becomes the handler span's parent (untraced: the incoming context is copied)
    const span = h
      ? traceDispatch(m.headers, h, task.id, this.type, priority, this.#d.names.demandSubject(this.type))
      : undefined;
    try {
      this.#d.nc.publish(to.reply, task.data, { headers: h, reply });
    } catch (err) {
      // the connection is closed: the message comes back to whoever leads after its ack wait
      span?.end(err);
      this.#d.log
        .child({ taskId: task.id, type: this.type, traceId: span?.traceId ?? traceIdOf(m.headers) })
        .warn({ err: String(err) }, "task not handed on");
      this.#d.gate?.returned(m);
      return true;
    }
    this.#stored++;
    this.#storedTotal++;
    this.#activeAt = now;
    const sec = Math.floor(now / 1000);
    this.#handed.set(sec, (this.#handed.get(sec) ?? 0) + 1);
    if (this.#handed.size > HANDED_SECONDS)
      for (const k of this.#handed.keys()) if (k <= sec - HANDED_SECONDS) this.#handed.delete(k);
    span?.end();
    this.#d.onDispatch?.(priority, now - task.enqueuedAt);
    return true;
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
    const enqueuedAt = b.enqueuedAt ?? m.storedAtMs;
    if (b === body) {
      // the common shape, read without zod: the original bytes with what they lack in front
      const data = directTaskMessageBytes(m.data, b, { id, type: this.type, priority, enqueuedAt });
      return { id, data, enqueuedAt };
    }
    const task: TaskMessage = {
      id,
      type: this.type,
      priority,
      payload: b.payload ?? null,
      enqueuedAt,
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
