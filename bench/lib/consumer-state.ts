import { epochMs } from "./clock.ts";
import type { BenchPayload } from "./payload.ts";

/**
 * What every consumer role keeps: a running count of finished messages (so the orchestrator can ask
 * "when did the count reach n?" without racing the producer) and the latencies of `rec` messages.
 */
export class ConsumerTally {
  #count = 0;
  #latencies: number[] = [];
  #waiters: { target: number; resolve: (at: { at: number; count: number }) => void }[] = [];

  /** Record one finished message; `p` is its payload (undefined if the caller does not decode it). */
  done(p: BenchPayload | undefined): void {
    const now = epochMs();
    this.#count++;
    if (p?.rec) this.#latencies.push(now - p.ts);
    if (this.#waiters.length === 0) return;
    for (let i = this.#waiters.length - 1; i >= 0; i--) {
      const w = this.#waiters[i]!;
      if (this.#count >= w.target) {
        this.#waiters.splice(i, 1);
        w.resolve({ at: now, count: this.#count });
      }
    }
  }

  /** Messages finished so far. */
  get count(): number {
    return this.#count;
  }

  /** Resolves with the time (epoch ms) at which the running count reached `target`. */
  waitCount(target: number): Promise<{ at: number; count: number }> {
    if (this.#count >= target) return Promise.resolve({ at: epochMs(), count: this.#count });
    return new Promise((resolve) => this.#waiters.push({ target, resolve }));
  }

  /** Hand over the latencies recorded so far and start a new sample. */
  takeLatencies(): number[] {
    const l = this.#latencies;
    this.#latencies = [];
    return l;
  }
}
