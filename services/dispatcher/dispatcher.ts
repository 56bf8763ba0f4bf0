import type { JetStreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { AckedPublisher } from "../../shared/nats/publisher.ts";
import { ensureTypeConsumers } from "../../shared/nats/topology.ts";
import type { Priority } from "../../shared/priority.ts";
import { SignalWatcher } from "../../shared/signals.ts";
import type { Config } from "./config.ts";
import { Demand } from "./demand.ts";
import { Lease } from "./lease.ts";
import { LeftoverSweeper } from "./leftovers.ts";
import { LegacyWork } from "./legacy-work.ts";
import { DispatchLimits } from "./limits/dispatch-limits.ts";
import { parseSlotsNotice } from "./limits/slots-notice.ts";
import type { ThrottleReason } from "./limits/type-gate.ts";
import { WorkerRegistry } from "./registry.ts";
import { RetentionSweeper } from "./retention.ts";
import { type Scheduling, startScheduling } from "./scheduler/index.ts";
import { TypeDispatcher } from "./type-dispatcher.ts";

const encoder = new TextEncoder();

/** Lifecycle of a dispatcher replica. */
export type DispatcherState = "created" | "standby" | "leading" | "stopped";

/** What a dispatcher replica needs; tests build one in-process. */
export type DispatcherDeps = {
  nc: NatsConnection;
  jsm: JetStreamManager;
  workers: KV;
  leases: KV;
  signals: KV;
  names: Names;
  config: Pick<
    Config,
    | "dispatcherId"
    | "prefetchRatio"
    | "prefetchMs"
    | "windowMax"
    | "taskTypes"
    | "leaseTtlMs"
    | "leaseRenewMs"
    | "reconcileMs"
    | "retentionCompletedMs"
    | "retentionFailedMs"
    | "retentionSweepMs"
    | "scheduleLookaheadMs"
  >;
  log: Logger;
  onDispatch?: (type: string, priority: Priority, waitedMs: number) => void;
  /** Called when a queue limit holds a type back (metrics hook: `sluice_throttled_total{type,reason}`). */
  onThrottle?: (type: string, reason: ThrottleReason) => void;
  /** Called when acked leftovers were removed from a stream (metrics hook, leftovers.ts). */
  onLeftoversRemoved?: (stream: string, n: number) => void;
  /** Metrics hook: `n` stranded `queued` records of `type` ended by retention (./stranded.ts). */
  onStrandedEnded?: (type: string, n: number) => void;
};

/**
 * A dispatcher replica. Every replica watches the worker registry; the one holding the `dispatcher`
 * lease runs a {@link TypeDispatcher} per known type and listens for freed slots. Standbys hold nothing,
 * so a failover only waits for the lease to expire.
 */
export class Dispatcher {
  readonly #d: DispatcherDeps;
  readonly #registry: WorkerRegistry;
  readonly #lease: Lease;
  readonly #types = new Set<string>();
  readonly #prepared = new Map<string, Promise<void>>();
  readonly #active = new Map<string, TypeDispatcher>();
  #publisher: AckedPublisher | undefined;
  readonly #demand: Demand;
  #slotsSub: Subscription | undefined;
  #reconcile: NodeJS.Timeout | undefined;
  #capacity = new Map<string, number>();
  #liveWorkers = new Set<string>();
  #state: DispatcherState = "created";
  #scheduling: Scheduling | undefined;
  #retention: RetentionSweeper | undefined;
  #leftovers: LeftoverSweeper | undefined;
  #legacyWork: LegacyWork | undefined;
  readonly #signals: SignalWatcher;
  readonly #limits: DispatchLimits;

  constructor(deps: DispatcherDeps) {
    this.#d = deps;
    this.#limits = new DispatchLimits({
      ...deps,
      // a new leader rebuilds running counts per concurrency key from what workers report
      keyReports: { runningKeys: (type, since) => this.#registry.runningKeys(type, since) },
      onThrottled: (type, reason) => deps.onThrottle?.(type, reason),
    });
    this.#signals = new SignalWatcher(deps.signals, deps.log);
    this.#demand = new Demand(deps.nc, deps.names, deps.log, (type) => this.#active.get(type)?.pump());
    this.#registry = new WorkerRegistry(deps.workers, deps.log, () => this.#onRegistry());
    this.#lease = new Lease(deps.leases, "dispatcher", deps.config.dispatcherId, {
      ttlMs: deps.config.leaseTtlMs,
      renewMs: deps.config.leaseRenewMs,
      log: deps.log,
      onChange: (leader) => (leader ? this.#lead() : this.#standDown()),
    });
  }

  /** `standby` or `leading` once started. */
  get state(): DispatcherState {
    return this.#state;
  }

  /** The type dispatchers running while leading (status views and tests). */
  get active(): ReadonlyMap<string, TypeDispatcher> {
    return this.#active;
  }

  /** Live worker records (for status views). */
  get registry(): WorkerRegistry {
    return this.#registry;
  }

  /** Queue configs and the leader's per-type gates (status views and tests). */
  get limits(): DispatchLimits {
    return this.#limits;
  }

  /** Load the registry, prepare configured types, and compete for the lease. */
  async start(): Promise<void> {
    this.#state = "standby";
    for (const t of this.#d.config.taskTypes) this.#types.add(t);
    await this.#registry.start(this.#d.nc);
    await this.#signals.start(this.#d.nc);
    await this.#limits.start();
    await Promise.all([...this.#types].map((t) => this.#prepare(t)));
    this.#lease.start();
    this.#watchReconnects();
  }

  /** Stop dispatching, give back held messages, release the lease. Idempotent. */
  async stop(): Promise<void> {
    if (this.#state === "stopped") return;
    this.#standDown();
    this.#state = "stopped";
    await this.#lease.stop();
    this.#registry.stop();
    this.#signals.stop();
    this.#limits.stop();
  }

  #onRegistry(): void {
    this.#capacity = this.#registry.capacity();
    // a worker that drained or died keeps no demand here
    const live = this.#registry.liveIds();
    const gone = new Set<string>();
    for (const id of this.#liveWorkers) if (!live.has(id)) gone.add(id);
    this.#liveWorkers = live;
    this.#demand.dropWorkers(gone);
    for (const t of this.#capacity.keys()) {
      if (!this.#types.has(t)) {
        this.#types.add(t);
        void this.#prepare(t).then(() => this.#ensureActive(t));
      }
    }
    for (const td of this.#active.values()) td.pump();
  }

  #prepare(type: string): Promise<void> {
    let p = this.#prepared.get(type);
    if (!p) {
      p = ensureTypeConsumers(this.#d.jsm, this.#d.names, type).catch((err) => {
        this.#prepared.delete(type);
        this.#d.log.error({ err, type }, "could not create consumers for type");
        throw err;
      });
      this.#prepared.set(type, p);
    }
    return p;
  }

  #lead(): void {
    if (this.#state === "stopped") return;
    this.#state = "leading";
    this.#publisher = new AckedPublisher(this.#d.nc);
    const prefix = `${this.#d.names.prefix}.slots.`;
    this.#slotsSub = this.#d.nc.subscribe(this.#d.names.slotsSubjectAll, {
      callback: (_err, m) => {
        const type = m.subject.slice(prefix.length);
        const notice = parseSlotsNotice(m.data);
        this.#limits.freed(type, notice);
        if (notice.n > 0) this.#active.get(type)?.freed(notice.n);
      },
    });
    this.#limits.lead();
    // workers' pull requests come to the leader; say we lead so workers whose requests went to a
    // leader that is gone ask again now, not after their expiry
    this.#demand.start();
    this.#d.nc.publish(this.#d.names.leaderSubject, encoder.encode(this.#d.config.dispatcherId));
    this.#scheduling = startScheduling({
      ...this.#d,
      publisher: this.#publisher,
      lookaheadMs: this.#d.config.scheduleLookaheadMs,
    });
    for (const t of this.#types)
      void this.#prepare(t).then(
        () => this.#ensureActive(t),
        () => undefined,
      );
    this.#reconcile = setInterval(() => {
      for (const td of this.#active.values()) void td.reconcile().then(() => td.pump());
    }, this.#d.config.reconcileMs);
    this.#retention = new RetentionSweeper(this.#d, {
      completedMs: this.#d.config.retentionCompletedMs,
      failedMs: this.#d.config.retentionFailedMs,
      sweepMs: this.#d.config.retentionSweepMs,
      onStrandedEnded: this.#d.onStrandedEnded,
    });
    this.#retention.start();
    this.#leftovers = new LeftoverSweeper({ ...this.#d, onRemoved: this.#d.onLeftoversRemoved });
    this.#leftovers.start(this.#d.config.retentionSweepMs);
    // tasks an earlier version left in its work stream go back to the tasks stream (legacy-work.ts)
    this.#legacyWork = new LegacyWork({ ...this.#d, publisher: this.#publisher });
    this.#legacyWork.start();
  }

  #ensureActive(type: string): void {
    if (this.#state !== "leading" || this.#active.has(type)) return;
    const td = new TypeDispatcher(type, {
      nc: this.#d.nc,
      jsm: this.#d.jsm,
      names: this.#d.names,
      log: this.#d.log,
      demand: {
        outstanding: () => this.#demand.outstanding(type),
        take: () => this.#demand.take(type),
      },
      prefetchRatio: this.#d.config.prefetchRatio,
      prefetchMs: this.#d.config.prefetchMs,
      windowMax: this.#d.config.windowMax,
      capacity: () => this.#capacity.get(type) ?? 0,
      reportedRunning: () => this.#registry.runningOf(type),
      isCancelled: (id) => this.#signals.get(id)?.action === "cancel",
      onDispatch: (p, waited) => this.#d.onDispatch?.(type, p, waited),
      gate: this.#limits.gate(type, () => this.#active.get(type)?.pump()),
    });
    this.#active.set(type, td);
    td.start();
  }

  #standDown(): void {
    if (this.#state !== "leading") return;
    this.#state = "standby";
    clearInterval(this.#reconcile);
    this.#slotsSub?.unsubscribe();
    this.#demand.stop();
    for (const td of this.#active.values()) td.stop();
    this.#active.clear();
    this.#limits.standDown();
    void this.#scheduling?.stop();
    this.#scheduling = undefined;
    this.#retention?.stop();
    this.#retention = undefined;
    this.#leftovers?.stop();
    this.#leftovers = undefined;
    this.#legacyWork?.stop();
    this.#legacyWork = undefined;
    // the scheduler's publishes in flight still settle (and ack their delayed messages) before it goes
    const pub = this.#publisher;
    setTimeout(() => pub?.close(), 5000).unref();
    this.#publisher = undefined;
  }

  async #watchReconnects(): Promise<void> {
    for await (const s of this.#d.nc.status()) {
      if (s.type === "reconnect") for (const td of this.#active.values()) td.resetPulls();
    }
  }
}
