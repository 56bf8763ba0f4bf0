import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";
import type { AckedPublisher } from "../../../shared/nats/publisher.ts";
import { DUPLICATE_WINDOW_MS } from "../../../shared/nats/topology.ts";
import { DelayedScheduler } from "./delayed.ts";
import type { FireOutcome } from "./fire.ts";
import { RecurringScheduler } from "./recurring.ts";

/** What the dispatcher hands its scheduler when it takes the lead. */
export type SchedulingDeps = {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: Names;
  publisher: AckedPublisher;
  log: Logger;
  /** How long before a minute starts its delayed bucket is read, ms (default 5000). */
  lookaheadMs?: number;
  /** Duplicate window of the tasks stream, ms (default 2 min, as shared/nats/topology.ts creates it). */
  duplicateWindowMs?: number;
  onFire?: (outcome: FireOutcome, lateMs: number) => void;
  onTick?: (name: string, tick: number, lateMs: number) => void;
};

/** The running schedulers of a leader. */
export type Scheduling = {
  /** Stop both; resolves once nothing more will fire from this replica. */
  stop(): Promise<void>;
};

const RETRY_MS = 1_000;

/**
 * Start the delayed-task scheduler and the recurring-schedule runner. Only the dispatcher replica that
 * holds the lease runs them (Dispatcher #lead / #standDown); both rebuild everything from JetStream on
 * start, so a new leader needs no hand-over.
 */
export function startScheduling(d: SchedulingDeps): Scheduling {
  const log = d.log.child({ component: "scheduler" });
  let stopped = false;
  let retry: NodeJS.Timeout | undefined;
  let delayed: DelayedScheduler | undefined;
  let recurring: RecurringScheduler | undefined;

  const begin = async (): Promise<void> => {
    try {
      const kvm = new Kvm(d.nc);
      const [state, schedules] = await Promise.all([
        kvm.open(d.names.stateBucket),
        kvm.open(d.names.schedulesBucket),
      ]);
      if (stopped) return;
      const common = { state, publisher: d.publisher, names: d.names, log };
      delayed = new DelayedScheduler({
        ...common,
        jsm: d.jsm,
        js: d.jsm.jetstream(),
        lookaheadMs: d.lookaheadMs ?? 5_000,
        duplicateWindowMs: d.duplicateWindowMs ?? DUPLICATE_WINDOW_MS,
        onFire: d.onFire,
      });
      delayed.start();
      const rec = new RecurringScheduler({ ...common, schedules, onTick: d.onTick });
      recurring = rec;
      await rec.start();
      if (stopped) rec.stop();
    } catch (err) {
      log.warn({ err: String(err) }, "scheduler could not start; trying again");
      await halt();
      if (!stopped) retry = setTimeout(() => void begin(), RETRY_MS);
    }
  };
  const halt = async (): Promise<void> => {
    recurring?.stop();
    recurring = undefined;
    const dl = delayed;
    delayed = undefined;
    await dl?.stop();
  };
  void begin();
  return {
    async stop() {
      stopped = true;
      clearTimeout(retry);
      await halt();
    },
  };
}
