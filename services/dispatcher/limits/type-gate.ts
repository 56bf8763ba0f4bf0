import type { Logger } from "../../../shared/logger.ts";
import type { Delivery } from "../../../shared/nats/delivery.ts";
import { DEFAULT_QUEUE_CONFIG, type QueueConfig, type RateLimit } from "../../../shared/queues.ts";
import { KeyCounts } from "./key-counts.ts";
import { RateWindow } from "./rate-window.ts";
import type { SlotsNotice } from "./slots-notice.ts";

/** Why dispatching of a type was held back (the `reason` label of `sluice_throttled_total`). */
export type ThrottleReason = "rate_limit" | "retry_after" | "key_concurrency";

/** Most messages held per priority while a concurrency key blocks the front of that priority. */
export const LOOKAHEAD_MAX = 10_000;
/** Most bytes of blocked messages held per priority before the lookahead stops growing. */
export const LOOKAHEAD_BYTES = 32 * 1024 * 1024;
/** How many more messages one lookahead step asks for. */
const LOOKAHEAD_STEP = 256;

/** What a gate needs from its owner. */
export type TypeGateDeps = {
  type: string;
  log: Logger;
  /** Ask the type dispatcher to pump again: a limit was lifted or a wait ended. */
  wake: () => void;
  /**
   * Running tasks per concurrency key as the workers report them, covering everything handed on before
   * the call (./in-flight-keys.ts `reportedKeys`); rejects when `signal` aborts.
   */
  scanKeys: (signal: AbortSignal) => Promise<Map<string, number>>;
  onThrottled?: (reason: ThrottleReason) => void;
  now?: () => number;
};

/**
 * The limits of one task type, applied by the leader's type dispatcher: pause, global concurrency,
 * the rate window, a handler's retry-after, per-key concurrency and aging. The type dispatcher asks it
 * how many tasks may be in flight ({@link TypeGate.limit}), which held message goes next
 * ({@link TypeGate.pick}), and how many to hold per priority ({@link TypeGate.window}); it reports
 * each dispatch ({@link TypeGate.taken}) and the workers' freed slots ({@link TypeGate.freed}).
 * Only the leader dispatches, so this local state is the whole truth while it leads.
 */
export class TypeGate {
  readonly #d: TypeGateDeps;
  readonly #now: () => number;
  #cfg: QueueConfig = DEFAULT_QUEUE_CONFIG;
  #rate: RateWindow | undefined;
  #throttledUntil = 0;
  /** Running tasks per key, kept while keyConcurrency is set. */
  #keys: KeyCounts | undefined;
  #blocked: ThrottleReason | undefined;
  #wakeTimer: NodeJS.Timeout | undefined;
  #wakeAt = 0;
  #closed = false;

  constructor(deps: TypeGateDeps, cfg: QueueConfig) {
    this.#d = deps;
    this.#now = deps.now ?? Date.now;
    this.configure(cfg);
  }

  /** The config in force. */
  get config(): QueueConfig {
    return this.#cfg;
  }

  /** Running tasks per concurrency key (status views and tests). */
  keyCounts(): ReadonlyMap<string, number> {
    return this.#keys?.counts ?? new Map();
  }

  /**
   * True when in-flight must never be under-counted (a global or per-key limit is set): the type
   * dispatcher's reconcile then ignores slot notices that raced its consumer-info request.
   */
  get strict(): boolean {
    return this.#cfg.concurrency !== undefined || this.#cfg.keyConcurrency !== undefined;
  }

  /** Apply a new config (from the queues bucket watch); takes effect at the next pick. */
  configure(cfg: QueueConfig): void {
    const prev = this.#cfg;
    this.#cfg = cfg;
    if (!sameRate(prev.rateLimit, cfg.rateLimit) || (cfg.rateLimit && !this.#rate)) {
      const now = this.#now();
      const r = cfg.rateLimit;
      // keep the dispatches already made in the window, so a PATCH cannot reset the count
      const history = this.#rate?.recent(now, Math.max(r?.intervalMs ?? 0, this.#rate.intervalMs)) ?? [];
      this.#rate = r ? new RateWindow(r.max, r.intervalMs, history) : undefined;
    }
    if (cfg.keyConcurrency === undefined) {
      this.#keys?.close();
      this.#keys = undefined;
    } else if (!this.#keys) {
      // counts were not kept until now: they are rebuilt from the workers' reports before a task
      // with a key is admitted
      const d = this.#d;
      this.#keys = new KeyCounts({ type: d.type, log: d.log, scan: d.scanKeys, wake: () => this.#wake() });
    } else {
      this.#keys.invalidate();
    }
    this.#wake();
  }

  /** The type's `concurrency` limit, if it has one. */
  get concurrency(): number | undefined {
    return this.#cfg.concurrency;
  }

  /** Most tasks in flight allowed now, given the workers' limit (slots plus prefetch). */
  limit(workerLimit: number): number {
    const c = this.#cfg.concurrency;
    return c === undefined ? workerLimit : Math.min(workerLimit, c);
  }

  /** A handler threw RateLimitedError: dispatch nothing of this type for `retryAfterMs`. */
  throttle(retryAfterMs: number): void {
    const until = this.#now() + retryAfterMs;
    if (until > this.#throttledUntil) this.#throttledUntil = until;
    this.#d.onThrottled?.("retry_after");
  }

  /**
   * `[priority index, position]` of the held message to dispatch next, or undefined to dispatch none
   * now (the gate wakes its dispatcher when a wait ends). Strict priority picks the first eligible
   * message of the highest priority that has one; with aging, each priority's first eligible message
   * counts one level higher per `afterMs` it has waited, and the lowest level wins, older first.
   */
  pick(held: readonly (readonly Delivery[])[]): [number, number] | undefined {
    const cfg = this.#cfg;
    if (cfg.paused) return undefined;
    const now = this.#now();
    if (now < this.#throttledUntil) {
      this.#wakeAtTime(this.#throttledUntil);
      return undefined;
    }
    const wait = this.#rate?.waitMs(now) ?? 0;
    if (wait > 0) {
      this.#wakeAtTime(now + wait);
      return this.#refuse("rate_limit");
    }
    const keys = this.#keys;
    // until the counts are built (about a heartbeat interval after a leader starts) a task with a key
    // waits, as its key may be at its limit already; tasks without one go on
    const limit = keys && !keys.ready ? 0 : (cfg.keyConcurrency ?? Number.POSITIVE_INFINITY);
    let best: [number, number] | undefined;
    let bestLevel = Number.POSITIVE_INFINITY;
    let bestAt = Number.POSITIVE_INFINITY;
    let anyHeld = false;
    for (let i = 0; i < held.length; i++) {
      const h = held[i]!;
      if (h.length === 0) continue;
      anyHeld = true;
      const j = keys ? keys.firstEligible(i, h, limit) : 0;
      if (j < 0) continue;
      if (!cfg.aging) {
        best = [i, j];
        break;
      }
      const at = h[j]!.storedAtMs;
      const level = Math.max(0, i - Math.floor((now - at) / cfg.aging.afterMs));
      if (level < bestLevel || (level === bestLevel && at < bestAt)) {
        best = [i, j];
        bestLevel = level;
        bestAt = at;
      }
    }
    if (!best) return anyHeld && keys?.ready ? this.#refuse("key_concurrency") : undefined;
    this.#blocked = undefined;
    return best;
  }

  /**
   * How many messages to hold for priority `i`: the dispatcher's `base` window, grown in steps while
   * every held message of the priority is blocked by its key limit (so a quiet key's task behind a
   * noisy key's burst is found), up to {@link LOOKAHEAD_MAX} messages or {@link LOOKAHEAD_BYTES}.
   */
  window(i: number, base: number, held: readonly Delivery[]): number {
    const keys = this.#keys;
    if (base === 0 || !keys || !keys.ready || this.#cfg.paused || held.length === 0) return base;
    if (keys.firstEligible(i, held, this.#cfg.keyConcurrency ?? Number.POSITIVE_INFINITY) >= 0) return base;
    if (keys.blockedBytes(i) >= LOOKAHEAD_BYTES) return base;
    return Math.max(base, Math.min(LOOKAHEAD_MAX, held.length + Math.max(base, LOOKAHEAD_STEP)));
  }

  /**
   * A held message is being dispatched at `at` (epoch ms): count it against the rate window and its
   * key. The dispatcher passes the time it stamps on the hand-off, so the recorded `dispatchedAt` of
   * any window's worth of tasks spans the interval exactly.
   */
  taken(m: Delivery, at = this.#now()): void {
    this.#rate?.take(at);
    this.#keys?.taken(m);
  }

  /** A dispatch was not stored and the message went back: its key slot is free again. */
  returned(m: Delivery): void {
    this.#keys?.returned(m);
  }

  /** Workers freed slots of this type. */
  freed(notice: SlotsNotice): void {
    this.#keys?.freed(notice);
  }

  /** Once a second: let the key counts be rebuilt from the workers' reports if they may be stale. */
  tick(): void {
    this.#keys?.tick(this.#blocked === "key_concurrency");
  }

  /** Stop timers; the gate is not used again. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#wakeTimer);
    this.#keys?.close();
  }

  #refuse(reason: ThrottleReason): undefined {
    // one event per episode, not one per pump
    if (this.#blocked !== reason) {
      this.#blocked = reason;
      this.#d.onThrottled?.(reason);
    }
    return undefined;
  }

  #wakeAtTime(at: number): void {
    if (this.#closed || (this.#wakeTimer && this.#wakeAt <= at)) return;
    clearTimeout(this.#wakeTimer);
    this.#wakeAt = at;
    this.#wakeTimer = setTimeout(
      () => {
        this.#wakeTimer = undefined;
        this.#wake();
      },
      Math.max(0, at - this.#now()),
    );
    this.#wakeTimer.unref();
  }

  #wake(): void {
    if (!this.#closed) this.#d.wake();
  }
}

function sameRate(a: RateLimit | undefined, b: RateLimit | undefined): boolean {
  return a?.max === b?.max && a?.intervalMs === b?.intervalMs;
}
