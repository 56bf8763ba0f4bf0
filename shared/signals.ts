import type { KV } from "@nats-io/kv";
import type { Logger } from "./logger.ts";

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

  /** Start watching; resolves once current signals are loaded. */
  async start(): Promise<void> {
    const iter = await this.#kv.watch({ key: ">" });
    this.#stop = () => iter.stop();
    const status = await this.#kv.status();
    let loading = status.values > 0;
    let loaded: () => void = () => undefined;
    const ready = new Promise<void>((r) => {
      loaded = r;
    });
    if (!loading) loaded();
    void (async () => {
      for await (const e of iter) {
        if (e.operation === "PUT") {
          try {
            const s = e.json<Signal>();
            this.#signals.set(e.key, s);
            if (!loading) this.#onSignal?.(e.key, s);
          } catch {
            this.#log.warn({ key: e.key }, "unreadable signal ignored");
          }
        } else {
          this.#signals.delete(e.key);
        }
        if (loading && e.delta === 0) {
          loading = false;
          loaded();
        }
      }
    })();
    await ready;
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
