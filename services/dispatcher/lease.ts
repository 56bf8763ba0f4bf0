import type { KV } from "@nats-io/kv";
import type { Logger } from "../../shared/logger.ts";

/** Options of a {@link Lease}. */
export type LeaseOptions = {
  /** Lease lifetime without renewal, ms; must equal the leases bucket's TTL. */
  ttlMs: number;
  /** Renewal (and acquisition attempt) interval, ms. */
  renewMs: number;
  log: Logger;
  /** Called on every change of leadership. */
  onChange: (leader: boolean) => void;
};

/**
 * Leader election through one key of the leases bucket: `create` (insert-if-absent) acquires it,
 * `update` with the last revision renews it, and the bucket's TTL frees it when the holder dies.
 * A holder that cannot renew for `ttl - renew` ms steps down on its own, before anyone else can
 * acquire, so two leaders overlap only if clocks misbehave — and even then the streams' dedup keeps a
 * task from being dispatched twice.
 */
export class Lease {
  readonly #kv: KV;
  readonly #key: string;
  readonly #holder: string;
  readonly #o: LeaseOptions;
  #rev = 0;
  #leader = false;
  #lastRenewAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;

  constructor(kv: KV, key: string, holder: string, o: LeaseOptions) {
    this.#kv = kv;
    this.#key = key;
    this.#holder = holder;
    this.#o = o;
  }

  /** True while this process holds the lease. */
  get isLeader(): boolean {
    return this.#leader;
  }

  /** Start competing for the lease. */
  start(): void {
    void this.#tick();
    this.#timer = setInterval(() => void this.#tick(), this.#o.renewMs);
  }

  /** Stop, and hand the lease over at once if we hold it. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    if (this.#leader) {
      this.#set(false);
      await this.#kv.delete(this.#key, { previousSeq: this.#rev }).catch(() => undefined);
    }
  }

  async #tick(): Promise<void> {
    if (this.#ticking) return;
    this.#ticking = true;
    const value = JSON.stringify({ holder: this.#holder, renewedAt: Date.now() });
    try {
      if (this.#leader) {
        this.#rev = await this.#kv.update(this.#key, value, this.#rev);
        this.#lastRenewAt = Date.now();
      } else {
        this.#rev = await this.#kv.create(this.#key, value);
        this.#lastRenewAt = Date.now();
        this.#set(true);
      }
    } catch (err) {
      if (this.#leader) {
        const conflict = /wrong last sequence/i.test(String((err as Error).message));
        if (conflict || Date.now() - this.#lastRenewAt > this.#o.ttlMs - this.#o.renewMs) {
          this.#o.log.warn({ err: String(err) }, "leader lease lost");
          this.#set(false);
        }
      }
      // not the leader: the key exists (someone else leads) or NATS is away; try again next tick
    } finally {
      this.#ticking = false;
    }
  }

  #set(leader: boolean): void {
    if (this.#leader === leader) return;
    this.#leader = leader;
    this.#o.log.info({ holder: this.#holder, leader }, leader ? "became leader" : "stepped down");
    this.#o.onChange(leader);
  }
}
