import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import { watchBucket } from "../../shared/nats/kv-watch.ts";
import { isLive, type WorkerRecord } from "../../shared/workers.ts";

/**
 * How long after its last write a draining worker's record still counts its running keys, ms. A
 * draining worker stops heartbeating and deletes its record once its tasks are done; one killed while
 * draining leaves it behind, so it must stop counting some time: after the default shutdown grace
 * (25 s) and abort grace (5 s) with room to spare.
 */
export const DRAINING_KEYS_MS = 60_000;

/**
 * The live workers, from a watch on the workers bucket: capacity per type is the sum of the slots of
 * live workers serving it. A dead worker's record is not deleted by anyone (it just stops being
 * renewed), so liveness is judged from `heartbeatAt` on a timer as well as on every change.
 */
export class WorkerRegistry {
  readonly #kv: KV;
  readonly #log: Logger;
  readonly #workers = new Map<string, WorkerRecord>();
  readonly #onChange: () => void;
  #timer: NodeJS.Timeout | undefined;
  #stopWatch: (() => void) | undefined;
  #lastSignature = "";
  #loaded = false;

  constructor(kv: KV, log: Logger, onChange: () => void) {
    this.#kv = kv;
    this.#log = log;
    this.#onChange = onChange;
  }

  /** Start watching; resolves once the current records are loaded. */
  async start(nc: NatsConnection): Promise<void> {
    const w = await watchBucket(nc, this.#kv, {
      log: this.#log,
      onEntry: (e) => {
        if (e.operation === "PUT") {
          try {
            this.#workers.set(e.key, e.json<WorkerRecord>());
          } catch {
            this.#log.warn({ key: e.key }, "unreadable worker record ignored");
          }
        } else {
          this.#workers.delete(e.key);
        }
        if (this.#loaded) this.#changed();
      },
      onLoaded: () => {
        this.#loaded = true;
        this.#changed();
      },
      // live workers write every heartbeat: a long silence means the watch stalled, not that all died
      silenceMs: 3 * this.#minHeartbeatMs(),
      expectTraffic: () => this.#workers.size > 0,
    });
    this.#stopWatch = () => w.stop();
    this.#timer = setInterval(() => this.#changed(), 1000);
  }

  /** Stop watching. */
  stop(): void {
    clearInterval(this.#timer);
    this.#stopWatch?.();
  }

  /** Slots of live workers per type. */
  capacity(): Map<string, number> {
    const now = Date.now();
    const out = new Map<string, number>();
    for (const w of this.#workers.values()) {
      if (!isLive(w, now)) continue;
      for (const [type, t] of Object.entries(w.types)) out.set(type, (out.get(type) ?? 0) + t.slots);
    }
    return out;
  }

  /** Ids of the live workers (heartbeating, not draining). */
  liveIds(): Set<string> {
    const now = Date.now();
    const out = new Set<string>();
    for (const w of this.#workers.values()) if (isLive(w, now)) out.add(w.id);
    return out;
  }

  /**
   * Tasks of `type` per concurrency key that workers run or are finishing, summed over the records
   * that may still run some: live workers, and draining ones for {@link DRAINING_KEYS_MS} (a draining
   * worker takes nothing new, so its last record covers what it still runs). Undefined while a live
   * worker serving `type` has not reported since `since` (epoch ms, compared with its `heartbeatAt`,
   * as liveness itself is). A dead worker's tasks are not counted: they run again only once their ack
   * wait has passed and the leader dispatches them anew.
   */
  runningKeys(type: string, since: number, now = Date.now()): Map<string, number> | undefined {
    const out = new Map<string, number>();
    for (const w of this.#workers.values()) {
      const t = w.types?.[type];
      if (!t) continue;
      if (w.state === "running") {
        if (!isLive(w, now)) continue;
        if (w.heartbeatAt < since) return undefined;
      } else if (now - w.heartbeatAt > DRAINING_KEYS_MS) continue;
      for (const [k, n] of Object.entries(t.keys ?? {}))
        if (typeof n === "number" && n > 0) out.set(k, (out.get(k) ?? 0) + n);
    }
    return out;
  }

  /**
   * Handlers of `type` running, summed over the live workers' last records, and the oldest of those
   * records' heartbeats (epoch ms, the worker's clock): every task handed on before then that still
   * runs is in the sum. A draining worker counts for {@link DRAINING_KEYS_MS}, as in runningKeys.
   */
  runningOf(type: string, now = Date.now()): { running: number; at: number } {
    let running = 0;
    let at = now;
    for (const w of this.#workers.values()) {
      const t = w.types?.[type];
      if (!t) continue;
      if (w.state === "running" ? !isLive(w, now) : now - w.heartbeatAt > DRAINING_KEYS_MS) continue;
      running += t.busy;
      at = Math.min(at, w.heartbeatAt);
    }
    return { running, at };
  }

  /** Every record, live or not (for status views). */
  all(): WorkerRecord[] {
    return [...this.#workers.values()];
  }

  #minHeartbeatMs(): number {
    let min = 2000;
    for (const w of this.#workers.values()) min = Math.min(min, w.heartbeatMs);
    return min;
  }

  #changed(): void {
    // tell the owner only when capacity really changed (heartbeats rewrite records every few seconds)
    const sig = JSON.stringify([...this.capacity()].sort());
    if (sig === this.#lastSignature) return;
    this.#lastSignature = sig;
    this.#onChange();
  }
}
