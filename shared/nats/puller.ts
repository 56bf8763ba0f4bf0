import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import type { Logger } from "../logger.ts";
import { type Delivery, toDelivery } from "./delivery.ts";

/** Options of a {@link Puller}. */
export type PullerOptions = {
  /** Server-side life of one pull request, ms (default 10000). Shorter means faster recovery from a lost request. */
  expiresMs?: number;
  /** Called for every message; the owner acks it. */
  onMessage: (d: Delivery) => void;
  /**
   * Hold small top-ups back while more than this many messages are already asked for (default 0:
   * send every request at once). A worker with 100 slots and 99 requested gains nothing from a pull
   * request of 1 the moment one slot frees: the server is already pushing into the 99. At a steady
   * 2,000 tasks/s that one-per-task request was a large share of the server's and clients' CPU.
   * Demand held back is sent when it reaches this size, or when what is requested falls to it.
   */
  lowWater?: number;
  /** Fields added to every pull request body: the dispatcher's demand reads `worker` (who asks). */
  extra?: Record<string, string>;
  log?: Logger;
};

/** The subject pull requests of a durable consumer go to. */
export function consumerSource(stream: string, consumer: string): string {
  return `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`;
}

type Request = { remaining: number; expiresAt: number; sub: Subscription };

const encoder = new TextEncoder();
/**
 * How long after its expiry a request without a 408 is taken for gone. nats-server removes a pull
 * request that expired without a word when a message arrives for it before its expiry timer runs
 * (consumer.go nextWaiting, 2.9); waiting long for a 408 that never comes stalled the pipeline.
 */
const EXPIRY_GRACE_MS = 250;
/** Least time between two warnings about requests the server ended. */
const WARN_EVERY_MS = 10_000;

/**
 * Pulls from one durable pull consumer exactly as many messages as its owner asked for, no more.
 *
 * The stock `consume()` refills its buffer as soon as messages are handed over, which for a worker
 * with busy slots means hoarding tasks other workers could run (and, for the dispatcher, reading
 * further into a priority than it can use). Here the owner calls `request(n)` when n slots free up;
 * requests raised in the same tick are coalesced into one pull request; a request that expires
 * unfulfilled (408 with `Nats-Pending-Messages`) or is lost (server restart) is raised again, so the
 * outstanding demand always equals what the owner asked for minus what arrived.
 *
 * Every pull request has its own reply subscription, so each delivery and each 408/409 is charged to
 * the request it belongs to: the server serves its waiting requests round robin, not oldest first,
 * and guessing which one a message filled drifted the count until a worker stopped asking. (A
 * delivery's subject is the stream subject, not the reply subject: only the subscription tells.)
 */
export class Puller {
  readonly #nc: NatsConnection;
  readonly #api: string;
  readonly #opts: Required<Pick<PullerOptions, "expiresMs">> & PullerOptions;
  readonly #inbox = createInbox();
  /** Pull requests in flight by reply token (insertion order is expiry order). */
  #requests = new Map<number, Request>();
  #nextId = 1;
  /** Demand raised but not yet sent. */
  #unsent = 0;
  #flushScheduled = false;
  #stopped = false;
  #warnedAt = 0;
  /** See {@link PullerOptions.lowWater}; owners whose demand changes size may adjust it. */
  lowWater: number;
  #timer: NodeJS.Timeout;

  /**
   * @param source where pull requests go: a consumer's next-message API ({@link consumerSource}), or
   *   the dispatcher's demand subject of a type, which answers the same requests the same way.
   */
  constructor(nc: NatsConnection, source: string, opts: PullerOptions) {
    this.#nc = nc;
    this.#api = source;
    this.#opts = { expiresMs: 10_000, ...opts };
    this.lowWater = opts.lowWater ?? 0;
    // Requests lost with a server (no 408 ever comes) are noticed here and raised again.
    this.#timer = setInterval(() => this.#reap(), 100);
    this.#timer.unref();
  }

  /** Ask for `n` more messages. */
  request(n: number): void {
    if (n <= 0 || this.#stopped) return;
    this.#unsent += n;
    const low = this.lowWater;
    if (low > 0 && this.#unsent < low && this.#sent() > low) return;
    this.#schedule();
  }

  #schedule(): void {
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /** Messages asked for and not yet delivered (including demand held back, see `lowWater`). */
  get outstanding(): number {
    return this.#unsent + this.#sent();
  }

  /** Messages asked of the server and not yet delivered. */
  #sent(): number {
    let n = 0;
    for (const r of this.#requests.values()) n += r.remaining;
    return n;
  }

  /**
   * Write off every request in flight and raise the same demand again; call after a reconnect, when the
   * server may have dropped them, or when a new dispatcher leads. The old requests still listen until
   * they expire: what arrives for them is over-delivery, which owners must tolerate anyway (nak what
   * you cannot take) and which costs less than a message sent to a dropped subscription, which comes
   * back only after its ack wait.
   */
  reset(): void {
    let n = this.#unsent;
    this.#unsent = 0;
    for (const r of this.#requests.values()) {
      n += r.remaining;
      r.remaining = 0;
    }
    this.request(n);
  }

  /** Stop asking. Requests already with the server run out by themselves; arrivals still reach onMessage. */
  stop(): void {
    this.#stopped = true;
    this.#unsent = 0;
    clearInterval(this.#timer);
  }

  /** Stop and drop the subscriptions (arrivals after this are redelivered by the server after ack_wait). */
  close(): void {
    this.stop();
    for (const id of [...this.#requests.keys()]) this.#end(id);
  }

  /** Forget a request and its subscription: it was filled, ended by the server, or given up on. */
  #end(id: number): void {
    const r = this.#requests.get(id);
    if (!r) return;
    this.#requests.delete(id);
    r.sub.unsubscribe();
  }

  #flush(): void {
    this.#flushScheduled = false;
    const n = this.#unsent;
    if (n <= 0 || this.#stopped || this.#nc.isClosed()) return;
    this.#unsent = 0;
    const expiresMs = this.#opts.expiresMs;
    const id = this.#nextId++;
    const reply = `${this.#inbox}.${id}`;
    try {
      const sub = this.#nc.subscribe(reply, { callback: (_e, m) => this.#onMsg(id, m) });
      this.#requests.set(id, { remaining: n, expiresAt: Date.now() + expiresMs, sub });
      this.#nc.publish(
        this.#api,
        encoder.encode(JSON.stringify({ ...this.#opts.extra, batch: n, expires: expiresMs * 1_000_000 })),
        { reply },
      );
    } catch (err) {
      // disconnected and the client's buffer refused it: keep the demand, the reaper raises it again
      this.#opts.log?.debug({ err }, "pull request not sent");
    }
  }

  #onMsg(id: number, m: Msg): void {
    const h = m.headers;
    if (h && h.code > 0 && m.data.length === 0 && !m.reply) {
      this.#onStatus(id, h.code, h.description, Number(h.get("Nats-Pending-Messages") || 0));
      return;
    }
    const d = toDelivery(this.#nc, m);
    if (!d) return;
    const r = this.#requests.get(id);
    // a written-off request (reset) keeps listening, uncounted, until it expires
    if (r && r.remaining > 0 && --r.remaining <= 0) this.#end(id);
    // demand held back goes out once what the server still owes us is down to the low-water mark
    if (this.#unsent > 0 && this.#sent() <= this.lowWater) this.#schedule();
    this.#opts.onMessage(d);
  }

  #onStatus(id: number, code: number, description: string, pendingMsgs: number): void {
    if (code === 100) return; // idle heartbeat
    // 408 request expired, 409 exceeded max waiting / consumer deleted / leadership change: the request
    // is gone with `pendingMsgs` of it unfilled; raise those again
    const r = this.#requests.get(id);
    if (!r) return; // already raised again (reaped or reset)
    this.#end(id);
    const lost = pendingMsgs > 0 ? Math.min(pendingMsgs, r.remaining) : r.remaining;
    if (code !== 408) {
      // a 503 (no responders: no dispatcher leads right now, or JetStream is down) repeats with every
      // retry until it is over: say it once in a while, not four times a second
      const now = Date.now();
      if (now - this.#warnedAt >= WARN_EVERY_MS) {
        this.#warnedAt = now;
        this.#opts.log?.warn({ code, description }, "pull request ended by the server");
      }
    }
    if (!this.#stopped && lost > 0) {
      // back off a little on errors so a missing consumer does not become a busy loop
      if (code === 408) this.request(lost);
      else setTimeout(() => this.request(lost), 250).unref();
    }
  }

  #reap(): void {
    const now = Date.now();
    for (const [id, r] of this.#requests) {
      if (r.expiresAt + EXPIRY_GRACE_MS >= now) break; // insertion order is expiry order
      this.#end(id);
      this.request(r.remaining);
    }
  }
}
