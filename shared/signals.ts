import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "./logger.ts";
import { watchBucket } from "./nats/kv-watch.ts";

/**
 * Control signals for single tasks, in the signals bucket under the task id: the gateway writes one
 * when a caller cancels or pauses a task; whoever holds the task (the dispatcher about to dispatch
 * it, the worker about to run or running it) acts on it. A watch keeps every holder's view current.
 */
export type Signal = { action: "cancel" | "pause"; at: number };

/** A live, in-memory view of the signals bucket. */
export class SignalWatcher {
  readonly #kv: KV;
  readonly #log: Logger;
  readonly #signals = new Map<string, Signal>();
  readonly #onSignal: ((id: string, s: Signal) => void) | undefined;
  #stop: (() => void) | undefined;

  /** `onSignal` is called for every new signal after the initial load. */
  constructor(kv: KV, log: Logger, onSignal?: (id: string, s: Signal) => void) {
    this.#kv = kv;
    this.#log = log;
    this.#onSignal = onSignal;
  }

  /** Start watching (re-opened after reconnects); resolves once current signals are loaded. */
  async start(nc: NatsConnection): Promise<void> {
    let loaded = false;
    const w = await watchBucket(nc, this.#kv, {
      log: this.#log,
      onEntry: (e) => {
        if (e.operation !== "PUT") {
          this.#signals.delete(e.key);
          return;
        }
        try {
          const s = e.json<Signal>();
          const known = this.#signals.get(e.key);
          this.#signals.set(e.key, s);
          // a re-opened watch replays current values: only new signals are news
          if (loaded && known?.at !== s.at) this.#onSignal?.(e.key, s);
        } catch {
          this.#log.warn({ key: e.key }, "unreadable signal ignored");
        }
      },
      onLoaded: () => {
        loaded = true;
      },
    });
    this.#stop = () => w.stop();
  }

  /** The pending signal for a task, if any. */
  get(id: string): Signal | undefined {
    return this.#signals.get(id);
  }

  /** Stop watching. */
  stop(): void {
    this.#stop?.();
  }
}

/** Write a signal for a task. */
export async function sendSignal(kv: KV, id: string, action: Signal["action"]): Promise<void> {
  await kv.put(id, JSON.stringify({ action, at: Date.now() } satisfies Signal));
}
