import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import { watchBucket } from "../../shared/nats/kv-watch.ts";
import { isLive, type WorkerRecord } from "../../shared/workers.ts";

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
