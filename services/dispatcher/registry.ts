import type { KV } from "@nats-io/kv";
import type { Logger } from "../../shared/logger.ts";
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

  constructor(kv: KV, log: Logger, onChange: () => void) {
    this.#kv = kv;
    this.#log = log;
    this.#onChange = onChange;
  }

  /** Start watching; resolves once the current records are loaded. */
  async start(): Promise<void> {
    const iter = await this.#kv.watch({ key: ">" });
    this.#stopWatch = () => iter.stop();
    let initial = true;
    let resolveLoaded: () => void = () => undefined;
    const loaded = new Promise<void>((r) => {
      resolveLoaded = r;
    });
    void (async () => {
      for await (const e of iter) {
        if (e.operation === "PUT") {
          try {
            this.#workers.set(e.key, e.json<WorkerRecord>());
          } catch {
            this.#log.warn({ key: e.key }, "unreadable worker record ignored");
          }
        } else {
          this.#workers.delete(e.key);
        }
        if (initial && e.delta === 0) {
          initial = false;
          resolveLoaded();
        }
        if (!initial) this.#changed();
      }
    })();
    // an empty bucket yields nothing to mark the end of the initial load
    const status = await this.#kv.status();
    if (status.values === 0) resolveLoaded();
    await loaded;
    initial = false;
    this.#changed();
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

  #changed(): void {
    // tell the owner only when capacity really changed (heartbeats rewrite records every few seconds)
    const sig = JSON.stringify([...this.capacity()].sort());
    if (sig === this.#lastSignature) return;
    this.#lastSignature = sig;
    this.#onChange();
  }
}
