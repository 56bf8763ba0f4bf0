import type { Logger } from "../../../shared/logger.ts";
import type { Delivery } from "../../../shared/nats/delivery.ts";
import { PRIORITIES } from "../../../shared/priority.ts";
import { concurrencyKeyOf } from "./in-flight-keys.ts";
import type { SlotsNotice } from "./slots-notice.ts";

/** Delay before rebuilding the counts after a notice that did not name its keys, ms. */
const RESCAN_DELAY_MS = 100;

/** What the counts need from their gate. */
export type KeyCountsDeps = {
  type: string;
  log: Logger;
  /**
   * Running tasks per concurrency key as the workers report them, covering every task handed on
   * before the call (./in-flight-keys.ts `reportedKeys`); rejects when `signal` aborts.
   */
  scan: (signal: AbortSignal) => Promise<Map<string, number>>;
  /** A key's count fell or a rebuild finished: the dispatcher may dispatch again. */
  wake: () => void;
};

/** The blocked front of one priority's held messages, remembered so each pick scans only what is new. */
type BlockedPrefix = { first: Delivery; last: Delivery; upTo: number; bytes: number; gen: number };

/**
 * Running tasks per concurrencyKey of one type while its keyConcurrency is set: +1 per dispatch, −n per
 * slots notice that names its keys, and rebuilt from the workers' reports when they may be stale.
 * Counts err high only (see {@link KeyCounts.rescan}), so a key may wait a little but never runs past
 * its limit.
 */
export class KeyCounts {
  readonly #d: KeyCountsDeps;
  #keys = new Map<string, number>();
  #ready = false;
  /** Bumped whenever a count falls (or the limit changes): remembered blocked prefixes are void. */
  #gen = 0;
  readonly #keyOf = new WeakMap<Delivery, string | null>();
  readonly #prefix: (BlockedPrefix | undefined)[] = PRIORITIES.map(() => undefined);
  #scanning: Map<string, number> | undefined;
  readonly #abort = new AbortController();
  #scanAgain = false;
  #scanTimer: NodeJS.Timeout | undefined;
  /** A notice freed slots without naming their keys: counts may be high until the next rebuild. */
  #dirty = false;
  #closed = false;

  /** Start counting: no task with a key is admitted until the first rebuild is in. */
  constructor(deps: KeyCountsDeps) {
    this.#d = deps;
    this.rescan();
  }

  /** False until the counts have been built once. */
  get ready(): boolean {
    return this.#ready;
  }

  /** Running tasks per key. */
  get counts(): ReadonlyMap<string, number> {
    return this.#keys;
  }

  /** The limit changed: what was blocked must be looked at again. */
  invalidate(): void {
    this.#gen++;
  }

  /** Index of the first held message of priority `i` whose key is below `limit`, or -1. */
  firstEligible(i: number, h: readonly Delivery[], limit: number): number {
    const p = this.#prefix[i];
    let j = 0;
    let bytes = 0;
    if (p && p.gen === this.#gen && p.upTo <= h.length && h[0] === p.first && h[p.upTo - 1] === p.last) {
      j = p.upTo;
      bytes = p.bytes;
    }
    for (; j < h.length; j++) {
      const m = h[j]!;
      const k = this.#key(m);
      if (k === undefined || (this.#keys.get(k) ?? 0) < limit) break;
      bytes += m.data.length;
    }
    this.#prefix[i] = j > 0 ? { first: h[0]!, last: h[j - 1]!, upTo: j, bytes, gen: this.#gen } : undefined;
    return j < h.length ? j : -1;
  }

  /** Bytes of the blocked front of priority `i`, as of the last {@link KeyCounts.firstEligible}. */
  blockedBytes(i: number): number {
    return this.#prefix[i]?.bytes ?? 0;
  }

  /** A task with this message's key was dispatched. */
  taken(m: Delivery): void {
    const k = this.#key(m);
    if (k === undefined) return;
    this.#keys.set(k, (this.#keys.get(k) ?? 0) + 1);
    if (this.#scanning) this.#scanning.set(k, (this.#scanning.get(k) ?? 0) + 1);
  }

  /** A dispatch was not stored and the message went back. */
  returned(m: Delivery): void {
    const k = this.#key(m);
    if (k !== undefined) this.#release(k, 1);
  }

  /** Workers freed slots of this type. */
  freed(notice: SlotsNotice): void {
    if (notice.keys) {
      for (const [k, n] of Object.entries(notice.keys)) this.#release(k, n);
    } else if (notice.n > 0 && this.#keys.size > 0) {
      // an older worker: which keys freed is unknown until the workers report again
      this.#dirty = true;
      this.#rescanSoon();
    }
  }

  /** Once a second: rebuild when the counts may be stale (see docs: a lost notice heals here). */
  tick(blocking: boolean): void {
    if (!this.#ready || this.#dirty || blocking) this.rescan();
  }

  /** Stop timers and any rebuild under way. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#scanTimer);
    this.#abort.abort();
  }

  /**
   * Rebuild the counts from the workers' reports, which take up to a heartbeat interval to cover
   * everything handed on before the rebuild began. Dispatches made meanwhile are added on top (they may
   * or may not be in what was reported) and frees meanwhile are ignored: both err high. The first
   * rebuild sets the counts; later ones only lower them, key by key, to the rebuilt value: both are
   * upper bounds, so the lower one is too. Kept up by dispatches and notices, the counts are exact
   * but for lost notices, while a rebuild under load counts the frees it ignored: replacing them
   * would hold a busy key back for a rebuild's length each time, lowering them is what heals a lost
   * notice.
   */
  rescan(): void {
    if (this.#closed) return;
    if (this.#scanning) {
      this.#scanAgain = true;
      return;
    }
    const during = new Map<string, number>();
    this.#scanning = during;
    this.#dirty = false;
    this.#d
      .scan(this.#abort.signal)
      .then(
        (counts) => {
          if (this.#closed) return;
          for (const [k, n] of during) counts.set(k, (counts.get(k) ?? 0) + n);
          if (!this.#ready) {
            this.#keys = counts;
            this.#ready = true;
          } else {
            for (const [k, n] of this.#keys) {
              const rebuilt = counts.get(k) ?? 0;
              if (rebuilt >= n) continue;
              if (rebuilt > 0) this.#keys.set(k, rebuilt);
              else this.#keys.delete(k);
            }
          }
          this.#gen++;
        },
        (err) => {
          if (this.#closed) return;
          this.#dirty = true;
          this.#d.log.warn({ err: String(err), type: this.#d.type }, "could not count running tasks per key");
        },
      )
      .finally(() => {
        this.#scanning = undefined;
        if (this.#scanAgain) {
          this.#scanAgain = false;
          this.#rescanSoon();
        }
        if (!this.#closed) this.#d.wake();
      });
  }

  #key(m: Delivery): string | undefined {
    let k = this.#keyOf.get(m);
    if (k === undefined) {
      k = concurrencyKeyOf(m.data) ?? null;
      this.#keyOf.set(m, k);
    }
    return k ?? undefined;
  }

  #release(k: string, n: number): void {
    const c = (this.#keys.get(k) ?? 0) - n;
    if (c > 0) this.#keys.set(k, c);
    else this.#keys.delete(k);
    this.#gen++;
    if (!this.#closed) this.#d.wake();
  }

  #rescanSoon(): void {
    if (this.#scanTimer || this.#closed) return;
    this.#scanTimer = setTimeout(() => {
      this.#scanTimer = undefined;
      this.rescan();
    }, RESCAN_DELAY_MS);
    this.#scanTimer.unref();
  }
}
