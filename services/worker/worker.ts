import { hostname } from "node:os";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { Puller } from "../../shared/nats/puller.ts";
import { ensureTypeConsumers } from "../../shared/nats/topology.ts";
import { type Signal, SignalWatcher } from "../../shared/signals.ts";
import type { TaskMessage } from "../../shared/task.ts";
import type { WorkerRecord } from "../../shared/workers.ts";
import type { Config } from "./config.ts";
import { Execution, type ExecutionDeps, type Outcome } from "./execution.ts";
import type { ExecutionObserver } from "./observer.ts";
import { OutcomeNotices } from "./outcome-notices.ts";
import type { RetryPolicy } from "./retry-policy.ts";
import type { TaskDefinition } from "./sdk.ts";

/** Lifecycle of a worker: it takes work only while `running`. */
export type WorkerState = "created" | "starting" | "running" | "draining" | "stopped";

/** What a worker needs; tests build one in-process with their own config. */
export type WorkerDeps = {
  nc: NatsConnection;
  jsm: JetStreamManager;
  state: KV;
  workers: KV;
  signals: KV;
  names: Names;
  config: Pick<
    Config,
    | "workerId"
    | "heartbeatMs"
    | "runningWriteAfterMs"
    | "workAckWaitMs"
    | "maxResultBytes"
    | "shutdownGraceMs"
    | "concurrencyOverride"
  >;
  definitions: TaskDefinition[];
  log: Logger;
  version?: string;
  /**
   * Type-level overrides of a definition's retry settings (the queue config); the task's own settings
   * win over these. Default: none.
   */
  queuePolicy?: (type: string) => Partial<RetryPolicy> | undefined;
  /** Called after every execution (metrics hooks). */
  onOutcome?: (type: string, outcome: Outcome, e: Execution) => void;
  /** Sees every attempt begin and end (metrics and tracing; services/worker/observer.ts). */
  observer?: ExecutionObserver;
  /** Called after every heartbeat written (metrics). */
  onHeartbeat?: () => void;
};

/** One task type served by this worker: its slots, its puller and what runs now. */
type Runner = {
  def: TaskDefinition;
  slots: number;
  /** Executions whose handler holds a slot. */
  running: Set<Execution>;
  /** Executions past their handler, storing the final state; they hold no slot. */
  finishing: Set<Execution>;
  /** Deliveries given back while too many final writes were under way: demand to ask for again. */
  deferred: number;
  puller: Puller;
  /** Slots freed since the last notice to the dispatcher. */
  freed: number;
  /** Of those, how many per fairness key. */
  freedKeys: Map<string, number>;
};

const encoder = new TextEncoder();
/** How often running tasks are checked for their deadline and delayed `running` write, ms. */
const SWEEP_MS = 10;
/** Final writes under way per slot beyond which deliveries are given back. */
const FINISHING_PER_SLOT = 4;

/**
 * A worker process's engine: registers its types and slots, pulls work only for free slots, runs
 * executions, heartbeats, and drains on shutdown.
 */
export class Worker {
  readonly #d: WorkerDeps;
  readonly #runners = new Map<string, Runner>();
  readonly #publisher: AckedPublisher;
  readonly #startedAt = Date.now();
  #state: WorkerState = "created";
  #heartbeat: NodeJS.Timeout | undefined;
  #lease: NodeJS.Timeout | undefined;
  #leaderSub: Subscription | undefined;
  /** Deadlines and delayed `running` writes of every running task (Execution.tick). */
  #sweep: NodeJS.Timeout | undefined;
  #noticeScheduled = false;
  readonly #notices: OutcomeNotices;
  #idle: (() => void) | undefined;
  readonly #signals: SignalWatcher;
  /** Until when (epoch ms) first deliveries have their records read: see ExecutionDeps.replaySuspected. */
  #replaySuspectedUntil = 0;
  /** What every execution gets from this worker: one object, not one per task. */
  readonly #execDeps: ExecutionDeps;

  constructor(deps: WorkerDeps) {
    this.#d = deps;
    this.#publisher = new AckedPublisher(deps.nc);
    this.#notices = new OutcomeNotices(deps.nc, deps.names);
    this.#signals = new SignalWatcher(deps.signals, deps.log, (id, s) => this.#onSignal(id, s));
    this.#execDeps = {
      workerId: deps.config.workerId,
      names: deps.names,
      state: deps.state,
      publisher: this.#publisher,
      log: deps.log,
      signals: this.#signals,
      runningWriteAfterMs: deps.config.runningWriteAfterMs,
      maxResultBytes: deps.config.maxResultBytes,
      abortGraceMs: 5_000,
      observer: deps.observer,
      policy: (def, msg) => this.#policy(def, msg),
      replaySuspected: () => this.#replaySuspectedUntil > Date.now(),
      onRateLimited: (type, retryAfterMs) =>
        deps.nc.publish(deps.names.throttleSubject(type), encoder.encode(JSON.stringify({ retryAfterMs }))),
    };
  }

  /** Current lifecycle state. */
  get state(): WorkerState {
    return this.#state;
  }

  /** Busy slots per type. */
  busy(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [t, r] of this.#runners) out[t] = r.running.size;
    return out;
  }

  /** Slots per type. */
  slots(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [t, r] of this.#runners) out[t] = r.slots;
    return out;
  }

  /** Create consumers, register, and start pulling. */
  async start(): Promise<void> {
    if (this.#state !== "created") throw new Error(`worker already ${this.#state}`);
    this.#state = "starting";
    const { config, names, jsm } = this.#d;
    await this.#signals.start(this.#d.nc);
    for (const def of this.#d.definitions) {
      await ensureTypeConsumers(jsm, names, def.type, { ackWaitMs: config.workAckWaitMs });
      const slots = config.concurrencyOverride ?? def.concurrency;
      const runner: Runner = {
        def,
        slots,
        running: new Set(),
        finishing: new Set(),
        deferred: 0,
        freed: 0,
        freedKeys: new Map(),
        // pull requests go to the dispatcher leader, which hands tasks on to them (dispatcher/demand.ts)
        puller: new Puller(this.#d.nc, names.demandSubject(def.type), {
          // hand-off replies: the ack subject in the reply subject, no header block (shared/nats/delivery.ts)
          extra: { worker: config.workerId, handoff: "reply" },
          onMessage: (m) => this.#onDelivery(runner, m),
          log: this.#d.log,
          expiresMs: 5_000,
          // a freed slot is topped up in chunks while most slots are still asked for
          lowWater: Math.floor(slots / 4),
        }),
      };
      this.#runners.set(def.type, runner);
    }
    await this.#register();
    this.#state = "running";
    // a new leader has none of our requests: ask it again at once rather than after their expiry
    this.#leaderSub = this.#d.nc.subscribe(names.leaderSubject, {
      callback: () => {
        if (this.#state !== "running") return;
        for (const r of this.#runners.values()) r.puller.reset();
      },
    });
    for (const r of this.#runners.values()) r.puller.request(r.slots);
    this.#heartbeat = setInterval(() => void this.#register(), config.heartbeatMs);
    // long tasks keep their lease: tell the server every third of the ack wait that they are alive
    this.#lease = setInterval(() => this.#keepAlive(), Math.max(100, Math.floor(config.workAckWaitMs / 3)));
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const r of this.#runners.values()) for (const e of r.running) e.tick(now);
    }, SWEEP_MS);
    this.#watchReconnects();
    this.#d.log.info(
      {
        workerId: config.workerId,
        types: Object.fromEntries([...this.#runners].map(([t, r]) => [t, r.slots])),
      },
      "worker registered",
    );
  }

  /**
   * Stop taking work, deregister, let running handlers finish within the grace time, then abort the
   * rest (they are handed back for redelivery). Idempotent.
   */
  async shutdown(graceMs = this.#d.config.shutdownGraceMs): Promise<void> {
    if (this.#state === "stopped" || this.#state === "draining") return this.#idleWait();
    const wasRunning = this.#state === "running";
    this.#state = "draining";
    // the heartbeat goes on while draining (the record says `draining`, so no slot counts): a leader
    // elected meanwhile still reads the keys of the tasks running here
    this.#leaderSub?.unsubscribe();
    for (const r of this.#runners.values()) r.puller.stop();
    if (wasRunning) {
      await this.#register().catch(() => undefined); // say `draining` so our slots stop counting
      this.#d.log.info({ running: this.#runningCount() }, "worker draining");
    }
    const drained = this.#idleWait();
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<"grace">((r) => {
      timer = setTimeout(() => r("grace"), graceMs);
    });
    if ((await Promise.race([drained, graceOver])) === "grace") {
      this.#d.log.warn({ running: this.#runningCount() }, "grace time over: aborting running tasks");
      for (const r of this.#runners.values()) for (const e of r.running) e.abort("shutdown");
      await drained;
    }
    clearTimeout(timer);
    clearInterval(this.#heartbeat);
    clearInterval(this.#lease);
    clearInterval(this.#sweep);
    for (const r of this.#runners.values()) r.puller.close();
    await this.#d.workers.delete(this.#d.config.workerId).catch(() => undefined);
    this.#signals.stop();
    this.#notices.flush();
    this.#publisher.close();
    this.#state = "stopped";
    this.#d.log.info("worker stopped");
  }

  #onDelivery(r: Runner, m: Delivery): void {
    // over-delivery (a reconnect doubled a pull request) or draining: give it straight back
    if (this.#state !== "running" || r.running.size >= r.slots) {
      m.nak();
      return;
    }
    // too many final writes backed up (NATS is slow): stop taking work rather than pile it up. This
    // delivery spent a unit of demand that no freed slot will renew (nothing runs), so it is asked for
    // again once the writes drain; without that the worker sat idle beside a full work stream.
    if (r.finishing.size >= r.slots * FINISHING_PER_SLOT) {
      m.nak();
      r.deferred++;
      return;
    }
    const e = new Execution(this.#execDeps, r.def, m, () => this.#onSlotFree(r, e));
    r.running.add(e);
    void e.run().then((outcome) => this.#onDone(r, e, outcome));
  }

  #onSlotFree(r: Runner, e: Execution): void {
    r.running.delete(e);
    r.finishing.add(e);
    if (this.#state !== "running") return;
    r.puller.request(1);
    r.freed++;
    const key = e.concurrencyKey;
    if (key !== undefined) r.freedKeys.set(key, (r.freedKeys.get(key) ?? 0) + 1);
    this.#scheduleNotice();
  }

  #onDone(r: Runner, e: Execution, outcome: Outcome): void {
    r.running.delete(e);
    r.finishing.delete(e);
    if (r.deferred > 0 && this.#state === "running" && r.finishing.size < r.slots * FINISHING_PER_SLOT) {
      r.puller.request(r.deferred);
      r.deferred = 0;
    }
    this.#d.onOutcome?.(r.def.type, outcome, e);
    if (outcome !== "redelivered" && outcome !== "skipped" && e.id)
      this.#notices.add(r.def.type, outcome, e.id);
    if (this.#state !== "running" && this.#runningCount() === 0) this.#idle?.();
  }

  /** Coalesce "slots freed" notices per tick: one small core-NATS message per type, not per task. */
  #scheduleNotice(): void {
    if (this.#noticeScheduled) return;
    this.#noticeScheduled = true;
    setImmediate(() => {
      this.#noticeScheduled = false;
      for (const [type, r] of this.#runners) {
        if (r.freed === 0) continue;
        // a bare count, or with fairness keys `{"n":3,"keys":{"tenantA":2}}` so the dispatcher can
        // count running tasks per key
        const body =
          r.freedKeys.size === 0
            ? String(r.freed)
            : JSON.stringify({ n: r.freed, keys: Object.fromEntries(r.freedKeys) });
        this.#d.nc.publish(this.#d.names.slotsSubject(type), encoder.encode(body));
        r.freed = 0;
        r.freedKeys.clear();
      }
    });
  }

  /** A cancel or pause for a task running here aborts its handler (with that reason). */
  #onSignal(id: string, s: Signal): void {
    for (const r of this.#runners.values())
      for (const e of r.running) if (e.id === id) e.abort(s.action === "cancel" ? "cancelled" : "paused");
  }

  /** Retry settings of a task: its own, else its queue's, else its definition's. */
  #policy(def: TaskDefinition, msg: TaskMessage): RetryPolicy {
    const q = this.#d.queuePolicy?.(def.type);
    return {
      maxAttempts: msg.maxAttempts ?? q?.maxAttempts ?? def.maxAttempts,
      backoff: msg.backoff ?? q?.backoff ?? def.backoff,
      deadLetter: q?.deadLetter ?? def.deadLetter,
    };
  }

  #runningCount(): number {
    let n = 0;
    for (const r of this.#runners.values()) n += r.running.size + r.finishing.size;
    return n;
  }

  #idleWait(): Promise<void> {
    if (this.#runningCount() === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const prev = this.#idle;
      this.#idle = () => {
        prev?.();
        resolve();
      };
    });
  }

  /**
   * Every running task, however young: its tasks message's ack timer was last reset by the dispatcher
   * (every third of the ack wait at most) before it was handed here, so a third more is all it has left
   * for sure.
   */
  #keepAlive(): void {
    for (const r of this.#runners.values()) for (const e of r.running) e.delivery.working();
  }

  async #register(): Promise<void> {
    const types: WorkerRecord["types"] = {};
    for (const [t, r] of this.#runners) {
      // a task counts for its key until its ack is sent (finishing too): a new dispatcher leader
      // rebuilds its per-key counts from these, and must not see a key free while a task of it runs
      const keys = new Map<string, number>();
      for (const set of [r.running, r.finishing]) {
        for (const e of set) {
          const k = e.concurrencyKey;
          if (k !== undefined) keys.set(k, (keys.get(k) ?? 0) + 1);
        }
      }
      types[t] = { slots: r.slots, busy: r.running.size };
      if (keys.size > 0) types[t].keys = Object.fromEntries(keys);
    }
    const rec: WorkerRecord = {
      id: this.#d.config.workerId,
      hostname: hostname(),
      pid: process.pid,
      version: this.#d.version ?? "0.0.0",
      state: this.#state === "draining" || this.#state === "stopped" ? "draining" : "running",
      startedAt: this.#startedAt,
      heartbeatAt: Date.now(),
      heartbeatMs: this.#d.config.heartbeatMs,
      types,
    };
    try {
      await this.#d.workers.put(rec.id, JSON.stringify(rec));
      this.#d.onHeartbeat?.();
    } catch (err) {
      this.#d.log.warn({ err }, "heartbeat not written");
    }
  }

  async #watchReconnects(): Promise<void> {
    for await (const s of this.#d.nc.status()) {
      if (s.type !== "reconnect") continue;
      // Acks the server had not yet written come back as first deliveries: those of messages
      // delivered since its last flush at once, those that were awaiting their ack after the ack wait.
      // Two ack waits cover both; reading records meanwhile costs a KV get per task.
      this.#replaySuspectedUntil = Date.now() + 2 * this.#d.config.workAckWaitMs;
      // the server may have lost our pull requests with its restart: ask again for what we still need
      for (const r of this.#runners.values()) r.puller.reset();
      void this.#register();
    }
  }
}
