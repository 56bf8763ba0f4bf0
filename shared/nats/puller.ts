import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import type { Logger } from "../logger.ts";
import { type Delivery, toDelivery } from "./delivery.ts";

/** Options of a {@link Puller}. */
export type PullerOptions = {
  /** Server-side life of one pull request, ms (default 10000). Shorter means faster recovery from a lost request. */
  expiresMs?: number;
  /** Called for every message; the owner acks it. */
  onMessage: (d: Delivery) => void;
  log?: Logger;
};

type Request = { remaining: number; expiresAt: number };

const encoder = new TextEncoder();

/**
 * Pulls from one durable pull consumer exactly as many messages as its owner asked for, no more.
 *
 * The stock `consume()` refills its buffer as soon as messages are handed over, which for a worker
 * with busy slots means hoarding tasks other workers could run (and, for the dispatcher, reading
 * further into a priority than it can use). Here the owner calls `request(n)` when n slots free up;
 * requests raised in the same tick are coalesced into one pull request; a request that expires
 * unfulfilled (408 with `Nats-Pending-Messages`) or is lost (server restart) is raised again, so the
 * outstanding demand always equals what the owner asked for minus what arrived.
 */
export class Puller {
  readonly #nc: NatsConnection;
  readonly #api: string;
  readonly #opts: Required<Pick<PullerOptions, "expiresMs">> & PullerOptions;
  readonly #inbox = createInbox();
  readonly #sub: Subscription;
  /** Pull requests in flight, oldest first; the server fills them in this order. */
  #requests: Request[] = [];
  /** Demand raised but not yet sent. */
  #unsent = 0;
  #flushScheduled = false;
  #stopped = false;
  #timer: NodeJS.Timeout;

  constructor(nc: NatsConnection, stream: string, consumer: string, opts: PullerOptions) {
    this.#nc = nc;
    this.#api = `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`;
    this.#opts = { expiresMs: 10_000, ...opts };
    this.#sub = nc.subscribe(this.#inbox, { callback: (_e, m) => this.#onMsg(m) });
    // Requests lost with a server (no 408 ever comes) are noticed here and raised again.
    this.#timer = setInterval(() => this.#reap(), 1000);
    this.#timer.unref();
  }

  /** Ask for `n` more messages. */
  request(n: number): void {
    if (n <= 0 || this.#stopped) return;
    this.#unsent += n;
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
  }

  /** Messages asked for and not yet delivered. */
  get outstanding(): number {
    let n = this.#unsent;
    for (const r of this.#requests) n += r.remaining;
    return n;
  }

  /**
   * Forget every request in flight and raise the same demand again; call after a reconnect, when the
   * server may have dropped them. Messages for the old requests that still arrive are over-delivery,
   * which owners must tolerate anyway (nak what you cannot take).
   */
  reset(): void {
    const n = this.outstanding - this.#unsent;
    this.#requests = [];
    this.request(n);
  }

  /** Stop asking. Requests already with the server run out by themselves; arrivals still reach onMessage. */
  stop(): void {
    this.#stopped = true;
    this.#unsent = 0;
    clearInterval(this.#timer);
  }

  /** Stop and drop the subscription (arrivals after this are redelivered by the server after ack_wait). */
  close(): void {
    this.stop();
    this.#sub.unsubscribe();
  }

  #flush(): void {
    this.#flushScheduled = false;
    const n = this.#unsent;
    if (n <= 0 || this.#stopped || this.#nc.isClosed()) return;
    this.#unsent = 0;
    const expiresMs = this.#opts.expiresMs;
    this.#requests.push({ remaining: n, expiresAt: Date.now() + expiresMs });
    try {
      this.#nc.publish(
        this.#api,
        encoder.encode(JSON.stringify({ batch: n, expires: expiresMs * 1_000_000 })),
        {
          reply: this.#inbox,
        },
      );
    } catch (err) {
      // disconnected and the client's buffer refused it: keep the demand, the reaper raises it again
      this.#opts.log?.debug({ err }, "pull request not sent");
    }
  }

  #onMsg(m: Msg): void {
    const h = m.headers;
    if (h && h.code > 0 && m.data.length === 0 && !m.reply) {
      this.#onStatus(h.code, h.description, Number(h.get("Nats-Pending-Messages") || 0));
      return;
    }
    const d = toDelivery(this.#nc, m);
    if (!d) return;
    const head = this.#requests[0];
    if (head) {
      head.remaining--;
      if (head.remaining <= 0) this.#requests.shift();
    }
    this.#opts.onMessage(d);
  }

  #onStatus(code: number, description: string, pendingMsgs: number): void {
    if (code === 100) return; // idle heartbeat
    // 408 request expired, 409 exceeded max waiting / consumer deleted / leadership change: the request
    // at the head of the queue is gone with `pendingMsgs` of it unfilled; raise those again.
    // "Exceeded MaxWaiting" refuses the request just sent; every other status ends the oldest one
    const head =
      code === 409 && /maxwaiting/i.test(description) ? this.#requests.pop() : this.#requests.shift();
    const lost = pendingMsgs > 0 ? pendingMsgs : (head?.remaining ?? 0);
    if (code !== 408) this.#opts.log?.warn({ code, description }, "pull request ended by the server");
    if (!this.#stopped && lost > 0) {
      // back off a little on errors so a missing consumer does not become a busy loop
      if (code === 408) this.request(lost);
      else setTimeout(() => this.request(lost), 250).unref();
    }
  }

  #reap(): void {
    const now = Date.now();
    const graceMs = 2000;
    while (this.#requests.length > 0 && this.#requests[0]!.expiresAt + graceMs < now) {
      const r = this.#requests.shift()!;
      this.request(r.remaining);
    }
  }
}
