import { Kvm } from "@nats-io/kv";
import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";
import { QueueConfigs } from "../../../shared/queues.ts";
import { type KeyReports, reportedKeys } from "./in-flight-keys.ts";
import type { SlotsNotice } from "./slots-notice.ts";
import { type ThrottleReason, TypeGate } from "./type-gate.ts";

/** What the dispatcher's limits need. */
export type DispatchLimitsDeps = {
  nc: NatsConnection;
  names: Names;
  log: Logger;
  /** What workers report running per concurrency key: the worker registry (../registry.ts). */
  keyReports: KeyReports;
  /** Every time dispatching of a type is held back (feeds `sluice_throttled_total{type,reason}`). */
  onThrottled?: (type: string, reason: ThrottleReason) => void;
};

/** Longest hold a handler's retry-after may impose, ms: a garbled notice cannot stop a type for good. */
const MAX_RETRY_AFTER_MS = 24 * 60 * 60 * 1000;
const TICK_MS = 1000;
const decoder = new TextDecoder();

/**
 * The dispatcher's side of queue configuration. Every replica watches the queues bucket (so a new
 * leader starts with the current configs); the leader also listens for handlers' throttle notices and
 * runs one {@link TypeGate} per active type. Gates live only while leading: after a failover the new
 * leader starts with an empty rate window and no retry-after holds, and rebuilds running counts per key
 * from the workers' registration records before it admits a task with a key.
 */
export class DispatchLimits {
  readonly #d: DispatchLimitsDeps;
  readonly #gates = new Map<string, TypeGate>();
  /** Retry-after holds for types without a gate yet, epoch ms. */
  readonly #pendingHolds = new Map<string, number>();
  #configs: QueueConfigs | undefined;
  #sub: Subscription | undefined;
  #tick: NodeJS.Timeout | undefined;

  constructor(deps: DispatchLimitsDeps) {
    this.#d = deps;
  }

  /** The live queue configs (undefined before start). */
  get configs(): QueueConfigs | undefined {
    return this.#configs;
  }

  /** The gate of an active type (status views and tests). */
  gateOf(type: string): TypeGate | undefined {
    return this.#gates.get(type);
  }

  /** Open the queues bucket and load every config; changes then apply to the gates as they arrive. */
  async start(): Promise<void> {
    const kv = await new Kvm(this.#d.nc).open(this.#d.names.queuesBucket);
    const configs = new QueueConfigs(kv, { log: this.#d.log });
    configs.onChange((type, cfg, prev) => {
      // a config change is rare and worth a line; a re-read of the same config is not
      if (cfg.updatedAt !== prev.updatedAt) this.#d.log.info({ type, config: cfg }, "queue config changed");
      this.#gates.get(type)?.configure(cfg);
    });
    await configs.start();
    this.#configs = configs;
  }

  /** Became leader: listen for throttle notices and keep key counts fresh. */
  lead(): void {
    if (this.#sub) return;
    const prefix = `${this.#d.names.prefix}.throttle.`;
    this.#sub = this.#d.nc.subscribe(this.#d.names.throttleSubjectAll, {
      callback: (_err, m) => this.#onThrottle(m.subject.slice(prefix.length), m.data),
    });
    this.#tick = setInterval(() => {
      for (const g of this.#gates.values()) g.tick();
    }, TICK_MS);
    this.#tick.unref();
  }

  /** Stopped leading: forget every gate (the next leader rebuilds its own). */
  standDown(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    clearInterval(this.#tick);
    for (const g of this.#gates.values()) g.close();
    this.#gates.clear();
    this.#pendingHolds.clear();
  }

  /** Stop everything. Idempotent. */
  stop(): void {
    this.standDown();
    this.#configs?.stop();
  }

  /** The gate for a type the leader starts dispatching; `wake` pumps its type dispatcher. */
  gate(type: string, wake: () => void): TypeGate {
    this.#gates.get(type)?.close();
    const g = new TypeGate(
      {
        type,
        log: this.#d.log,
        wake,
        scanKeys: (signal) => reportedKeys(this.#d.keyReports, type, signal),
        onThrottled: (reason) => this.#d.onThrottled?.(type, reason),
      },
      this.#configs?.get(type) ?? { paused: false, updatedAt: 0 },
    );
    const hold = this.#pendingHolds.get(type);
    if (hold !== undefined) {
      this.#pendingHolds.delete(type);
      if (hold > Date.now()) g.throttle(hold - Date.now());
    }
    this.#gates.set(type, g);
    return g;
  }

  /** Workers freed slots of a type. */
  freed(type: string, notice: SlotsNotice): void {
    this.#gates.get(type)?.freed(notice);
  }

  #onThrottle(type: string, data: Uint8Array): void {
    let ms = 0;
    try {
      const v = JSON.parse(decoder.decode(data)) as { retryAfterMs?: unknown };
      if (typeof v.retryAfterMs === "number" && Number.isFinite(v.retryAfterMs)) ms = v.retryAfterMs;
    } catch {
      this.#d.log.debug({ type }, "unreadable throttle notice ignored");
      return;
    }
    ms = Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.floor(ms)));
    if (ms === 0) return;
    const g = this.#gates.get(type);
    if (g) g.throttle(ms);
    else this.#pendingHolds.set(type, Math.max(this.#pendingHolds.get(type) ?? 0, Date.now() + ms));
    this.#d.log.debug({ type, retryAfterMs: ms }, "type throttled by its handler");
  }
}
