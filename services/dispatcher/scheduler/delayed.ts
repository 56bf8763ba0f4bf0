import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { dueAtOf, epochMinute } from "../../../shared/schedule.ts";
import { DueHeap } from "./due-heap.ts";
import { type FireDeps, type FireOutcome, fireDelayed, minuteOf } from "./fire.ts";
import { type Follower, followDelayed, readBucket } from "./readers.ts";

/** What the delayed scheduler needs. */
export type DelayedSchedulerDeps = FireDeps & {
  js: JetStreamClient;
  /** How long before a minute starts its bucket is read, ms. */
  lookaheadMs: number;
  /** Most fires under way at once. */
  maxInFlight?: number;
  /** Called after every fire attempt that settled (metrics, tests). */
  onFire?: (outcome: FireOutcome, lateMs: number) => void;
};

const MAX_SLEEP_MS = 250;
const RETRY_MS = 1_000;

/**
 * Fires the delayed stream's messages at their due times, on the dispatcher leader only.
 *
 * Messages sit in minute buckets (`<prefix>.delayed.<epoch minute>`). Two readers feed one heap of
 * (due, seq) entries — never message bodies:
 * - the loader reads a bucket when its minute is `lookaheadMs` away (at once for overdue buckets, oldest
 *   first) and takes the messages up to the follower's position at that moment;
 * - the follower sees every message published since we took the lead and keeps it if its bucket was
 *   already loaded (else it only notes that the bucket exists).
 * So each message enters the heap exactly once. While a bucket loads, only entries due before its
 * minute fire, which keeps catch-up after downtime in due order.
 */
export class DelayedScheduler {
  readonly #d: DelayedSchedulerDeps;
  readonly #heap = new DueHeap();
  /** Minute buckets known to hold messages the heap does not have yet. */
  readonly #buckets = new Set<number>();
  #loadedThrough = Number.NEGATIVE_INFINITY;
  /** Stream sequence of the last message the follower handled. */
  #followedSeq = 0;
  #loading: number | undefined;
  #advancing: Promise<void> | undefined;
  #follower: Follower | undefined;
  #timer: NodeJS.Timeout | undefined;
  #wakeAt = Number.POSITIVE_INFINITY;
  #inFlight = 0;
  #running = false;
  #wanted = false;
  #retry: NodeJS.Timeout | undefined;
  /** Bumped on every (re)start, so late callbacks of an earlier run change nothing. */
  #generation = 0;

  constructor(deps: DelayedSchedulerDeps) {
    this.#d = deps;
  }

  /** Entries waiting in the heap. */
  get held(): number {
    return this.#heap.size;
  }

  /** Start firing (and keep at it, restarting after failures, until {@link stop}). */
  start(): void {
    this.#wanted = true;
    void this.#begin();
  }

  /** Stop firing and forget the heap (the next leader rebuilds it from the stream). */
  async stop(): Promise<void> {
    this.#wanted = false;
    clearTimeout(this.#retry);
    await this.#halt();
  }

  /** Note the buckets there are, follow new messages, then load what is due soon. */
  async #begin(): Promise<void> {
    this.#running = true;
    const gen = ++this.#generation;
    try {
      const { jsm, names } = this.#d;
      const info = await jsm.streams.info(names.delayedStream, { subjects_filter: names.delayedSubjectAll });
      if (gen !== this.#generation) return;
      for (const subject of Object.keys(info.state.subjects ?? {})) {
        const minute = minuteOf(subject);
        if (minute !== undefined) this.#buckets.add(minute);
      }
      this.#followedSeq = info.state.last_seq;
      const follower = await followDelayed(
        this.#d.js,
        names,
        info.state.last_seq + 1,
        (m) => gen === this.#generation && this.#onFollowed(m),
        this.#d.log,
        () => gen === this.#generation && this.#restart("follower ended"),
      );
      if (gen !== this.#generation) {
        await follower.stop();
        return;
      }
      this.#follower = follower;
      this.#d.log.info(
        { buckets: this.#buckets.size, lastSeq: info.state.last_seq },
        "delayed scheduler started",
      );
      this.#wake(0);
    } catch (err) {
      if (gen === this.#generation) this.#restart(String(err));
    }
  }

  async #halt(): Promise<void> {
    this.#running = false;
    this.#generation++;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#wakeAt = Number.POSITIVE_INFINITY;
    // a bucket read still under way ends on its own; its entries are ignored (older generation)
    this.#advancing = undefined;
    this.#loading = undefined;
    this.#heap.clear();
    this.#buckets.clear();
    this.#loadedThrough = Number.NEGATIVE_INFINITY;
    const f = this.#follower;
    this.#follower = undefined;
    await f?.stop();
  }

  #restart(reason: string): void {
    if (!this.#wanted) return;
    this.#d.log.warn({ reason }, "delayed scheduler restarting");
    void this.#halt().then(() => {
      clearTimeout(this.#retry);
      if (this.#wanted) this.#retry = setTimeout(() => this.#wanted && void this.#begin(), RETRY_MS);
    });
  }

  #onFollowed(m: JsMsg): void {
    this.#followedSeq = m.seq;
    const minute = minuteOf(m.subject);
    if (minute === undefined) return;
    if (minute > this.#loadedThrough) {
      this.#buckets.add(minute);
      return;
    }
    const due = dueAtOf(m.headers, minute);
    this.#heap.push(due, m.seq);
    if (due < this.#wakeAt) this.#wake(due - Date.now());
  }

  /** Load every known bucket up to the lookahead horizon, oldest first; one run at a time. */
  #advance(): void {
    if (this.#advancing || !this.#running) return;
    const gen = this.#generation;
    const run: Promise<void> = (async () => {
      while (gen === this.#generation) {
        const target = epochMinute(Date.now() + this.#d.lookaheadMs);
        if (target <= this.#loadedThrough) break;
        // from here on the follower keeps messages of these minutes; the loader takes the older ones
        const bound = this.#followedSeq;
        this.#loadedThrough = target;
        const minutes = [...this.#buckets].filter((m) => m <= target).sort((a, b) => a - b);
        for (const m of minutes) {
          this.#buckets.delete(m);
          this.#loading = m;
          const n = await readBucket(
            this.#d.js,
            this.#d.names,
            m,
            bound,
            (msg) => {
              if (gen === this.#generation) this.#heap.push(dueAtOf(msg.headers, m), msg.seq);
            },
            () => gen !== this.#generation,
          );
          if (gen !== this.#generation) return;
          this.#loading = undefined;
          // one line a minute at most; a big bucket is worth seeing at info
          this.#d.log[n >= 1000 ? "info" : "debug"](
            { minute: m, messages: n, held: this.#heap.size },
            "delayed bucket loaded",
          );
          this.#wake(0);
        }
      }
    })()
      .catch((err) => {
        // a half-read bucket cannot be resumed without reading some entries twice: rebuild from scratch
        if (gen === this.#generation) this.#restart(`bucket load failed: ${String(err)}`);
      })
      .finally(() => {
        if (this.#advancing === run) this.#advancing = undefined;
      });
    this.#advancing = run;
  }

  #wake(inMs: number): void {
    if (!this.#running) return;
    const ms = Math.max(0, Math.min(inMs, MAX_SLEEP_MS));
    const at = Date.now() + ms;
    if (this.#timer && at >= this.#wakeAt) return;
    clearTimeout(this.#timer);
    this.#wakeAt = at;
    this.#timer = setTimeout(() => this.#tick(), ms);
  }

  #tick(): void {
    this.#timer = undefined;
    this.#wakeAt = Number.POSITIVE_INFINITY;
    if (!this.#running || !this.#follower) return;
    const now = Date.now();
    if (epochMinute(now + this.#d.lookaheadMs) > this.#loadedThrough) this.#advance();
    const gate = this.#loading === undefined ? Number.POSITIVE_INFINITY : this.#loading * 60_000;
    const max = this.#d.maxInFlight ?? 256;
    while (this.#inFlight < max) {
      const due = this.#heap.peekDue();
      if (due > now || due >= gate) break;
      this.#fire(this.#heap.pop()!, due);
    }
    this.#wake(this.#heap.peekDue() - now);
  }

  #fire(seq: number, due: number): void {
    const gen = this.#generation;
    this.#inFlight++;
    fireDelayed(this.#d, seq)
      .then(
        (outcome) => this.#d.onFire?.(outcome, Date.now() - due),
        (err) => {
          this.#d.log.warn({ err: String(err), seq }, "delayed fire failed; trying again");
          setTimeout(() => {
            if (gen !== this.#generation) return;
            this.#heap.push(due, seq);
            this.#wake(0);
          }, RETRY_MS).unref();
        },
      )
      .finally(() => {
        this.#inFlight--;
        if (gen === this.#generation) this.#wake(0);
      });
  }
}
