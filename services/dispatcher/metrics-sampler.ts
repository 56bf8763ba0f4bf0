import type { JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { PRIORITIES } from "../../shared/priority.ts";
import { primeLifecycleSeries, zeroLifecycleGauges } from "../../shared/telemetry/lifecycle-metrics.ts";
import { isLive, type WorkerRecord } from "../../shared/workers.ts";
import { leader, primeDispatchSeries, queueDepth, workerSlotsTotal, workersLive } from "./metrics.ts";

/** What the sampler reads from a dispatcher replica (the real `Dispatcher` fits). */
export type SampledDispatcher = {
  readonly state: string;
  /** Type dispatchers while leading, each with its held messages per priority (PRIORITIES order). */
  readonly active: ReadonlyMap<string, { held(): number[] }>;
  readonly registry: { all(): WorkerRecord[] };
};

/** Options of {@link DispatcherMetricsSampler}. */
export type SamplerOptions = {
  dispatcher: SampledDispatcher;
  jsm: JetStreamManager;
  names: Names;
  log: Logger;
  /** Types known from configuration (TASK_TYPES), exported at 0 before any worker registers. */
  taskTypes?: readonly string[];
  /** Refresh interval, ms (default 2000). */
  intervalMs?: number;
};

/**
 * Refreshes the dispatcher's gauges on an interval, never per request: leadership, live workers and
 * capacity per type (from the registry every replica watches), and — on the leader only — queue depth
 * per (type, priority). Depth comes from one paged consumer listing of the tasks stream per refresh
 * (num_pending of each `d_<priority>_<type>` consumer) plus the messages the leader holds, so a
 * scrape costs no NATS request. A replica that stops leading drops its depth series at once: the
 * autoscalers must never read a standby's stale backlog.
 */
export class DispatcherMetricsSampler {
  readonly #o: SamplerOptions;
  readonly #known = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #busy = false;
  #wasLeading = false;

  constructor(o: SamplerOptions) {
    this.#o = o;
  }

  /** Sample now and then every interval. */
  start(): void {
    void this.sample();
    this.#timer = setInterval(() => void this.sample(), this.#o.intervalMs ?? 2_000);
    this.#timer.unref();
  }

  /** Stop sampling (the gauges keep their last values). */
  stop(): void {
    clearInterval(this.#timer);
  }

  /** One refresh; overlapping calls are skipped. */
  async sample(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      await this.#sample();
    } catch (err) {
      this.#o.log.debug({ err }, "metrics sample failed");
    } finally {
      this.#busy = false;
    }
  }

  async #sample(): Promise<void> {
    const d = this.#o.dispatcher;
    const records = d.registry.all();
    this.#learnTypes([
      ...(this.#o.taskTypes ?? []),
      ...d.active.keys(),
      ...records.flatMap((w) => Object.keys(w.types)),
    ]);
    this.#sampleWorkers(records);

    const leading = d.state === "leading";
    leader.set(leading ? 1 : 0);
    if (!leading) {
      if (this.#wasLeading) {
        queueDepth.reset();
        zeroLifecycleGauges(this.#known);
      }
      this.#wasLeading = false;
      return;
    }
    this.#wasLeading = true;
    const pending = await this.#pendingByConsumer();
    // leadership may have changed while the listing was on its way
    if (d.state !== "leading") return;
    queueDepth.reset();
    const { names } = this.#o;
    for (const [type, td] of d.active) {
      const held = td.held();
      PRIORITIES.forEach((priority, i) => {
        const n = (pending.get(names.tasksConsumer(priority, type)) ?? 0) + (held[i] ?? 0);
        queueDepth.set({ type, priority }, n);
      });
    }
  }

  #learnTypes(types: Iterable<string>): void {
    for (const t of types) {
      if (this.#known.has(t)) continue;
      this.#known.add(t);
      primeLifecycleSeries(t);
      primeDispatchSeries(t, PRIORITIES);
    }
  }

  #sampleWorkers(records: WorkerRecord[]): void {
    const now = Date.now();
    const live = new Map<string, number>();
    const slots = new Map<string, number>();
    for (const t of this.#known) {
      live.set(t, 0);
      slots.set(t, 0);
    }
    for (const w of records) {
      if (!isLive(w, now)) continue;
      for (const [type, t] of Object.entries(w.types)) {
        live.set(type, (live.get(type) ?? 0) + 1);
        slots.set(type, (slots.get(type) ?? 0) + t.slots);
      }
    }
    for (const [type, n] of live) workersLive.set({ type }, n);
    for (const [type, n] of slots) workerSlotsTotal.set({ type }, n);
  }

  /** num_pending of every consumer on the tasks stream, by consumer name. */
  async #pendingByConsumer(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for await (const ci of this.#o.jsm.consumers.list(this.#o.names.tasksStream)) {
      out.set(ci.name, ci.num_pending);
    }
    return out;
  }
}
