/**
 * A sliding-window rate limit: at most `max` dispatches in any window of `intervalMs`. It keeps the
 * times of the last `max` dispatches in a ring; a dispatch is allowed when fewer than `max` happened
 * or the oldest of them is a full interval old. Unlike a token bucket it never lets a burst of 2 × max
 * through across a window boundary, which is what a provider's "15 per minute" means.
 */
export class RateWindow {
  readonly max: number;
  readonly intervalMs: number;
  readonly #ring: Float64Array;
  /** Index of the oldest recorded dispatch. */
  #head = 0;
  #count = 0;

  /** `max` dispatches per `intervalMs`; `history` seeds it with earlier dispatch times (oldest first). */
  constructor(max: number, intervalMs: number, history: readonly number[] = []) {
    this.max = max;
    this.intervalMs = intervalMs;
    this.#ring = new Float64Array(max);
    for (const t of history.slice(-max)) this.take(t);
  }

  /** Milliseconds until the next dispatch is allowed; 0 means now. */
  waitMs(now: number): number {
    if (this.#count < this.max) return 0;
    return Math.max(0, this.#ring[this.#head]! + this.intervalMs - now);
  }

  /** Record a dispatch at `now`. */
  take(now: number): void {
    if (this.#count < this.max) {
      this.#ring[(this.#head + this.#count) % this.max] = now;
      this.#count++;
    } else {
      this.#ring[this.#head] = now;
      this.#head = (this.#head + 1) % this.max;
    }
  }

  /** Recorded dispatch times of the last `withinMs`, oldest first (to carry over into a resized window). */
  recent(now: number, withinMs = this.intervalMs): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.#count; i++) {
      const t = this.#ring[(this.#head + i) % this.max]!;
      if (t > now - withinMs) out.push(t);
    }
    return out;
  }
}
