import { headers, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";

/** Where to hand the next task: a request's reply subject, and the form the worker reads. */
export type HandOffTarget = {
  readonly reply: string;
  /**
   * The worker asked for hand-off replies (`"handoff": "reply"` in its request): the ack subject and
   * dispatch time ride in the reply subject, no headers. Otherwise (workers older than that) they ride
   * in the `Sluice-Ack` and `Sluice-Dispatched-At` headers. shared/nats/delivery.ts reads both.
   */
  readonly ackInReply: boolean;
};

/** One worker pull request: tasks still owed to its reply subject until it expires. */
type Want = HandOffTarget & { remaining: number; expiresAt: number; worker: string | undefined };

/** The requests of one type, served in turn; `total` is what they still ask for. */
type Queue = { wants: Want[]; total: number };

const decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);
/** How often expired requests are ended (with a 408) when no dispatch gets to them first, ms. */
const SWEEP_MS = 500;
/** A request the body does not bound lives this long, ms (workers always say). */
const DEFAULT_EXPIRES_MS = 5_000;
const MAX_EXPIRES_MS = 60_000;

/**
 * Workers' demand for tasks, held by the dispatcher leader. A worker asks for as many tasks of a type
 * as it has free slots, with the body of a JetStream pull request (`{batch, expires}`, expires in ns)
 * sent to `<prefix>.demand.<type>`; the leader hands tasks to the request's reply subject, and ends an
 * expired request with a 408 carrying `Nats-Pending-Messages`, as nats-server ends a pull request. So
 * the worker's side is the same {@link Puller} that reads a consumer, with the same recovery: a request
 * lost with a leader is raised again after its expiry, or at once when a new leader says so.
 *
 * Requests of a type are served in turn, one task each, so work spreads over the workers that ask.
 */
export class Demand {
  readonly #nc: NatsConnection;
  readonly #names: Names;
  readonly #log: Logger;
  readonly #onDemand: (type: string) => void;
  readonly #byType = new Map<string, Queue>();
  #sub: Subscription | undefined;
  #sweep: NodeJS.Timeout | undefined;

  /** @param onDemand called when a type's demand grew (dispatch what is held). */
  constructor(nc: NatsConnection, names: Names, log: Logger, onDemand: (type: string) => void) {
    this.#nc = nc;
    this.#names = names;
    this.#log = log;
    this.#onDemand = onDemand;
  }

  /** Start taking requests (the leader only: standbys must not answer them). */
  start(): void {
    if (this.#sub) return;
    const prefix = `${this.#names.prefix}.demand.`;
    this.#sub = this.#nc.subscribe(this.#names.demandSubjectAll, {
      callback: (_err, m) => {
        if (!m.reply) return;
        this.#add(m.subject.slice(prefix.length), m.reply, m.data);
      },
    });
    this.#sweep = setInterval(() => this.#expire(Date.now()), SWEEP_MS);
    this.#sweep.unref();
  }

  /**
   * Stop taking requests and end the ones held with a 409, so their workers ask the next leader
   * (which also announces itself) instead of waiting for their expiry.
   */
  stop(): void {
    this.#sub?.unsubscribe();
    this.#sub = undefined;
    clearInterval(this.#sweep);
    for (const q of this.#byType.values()) for (const w of q.wants) this.#end(w, 409, "Leadership Change");
    this.#byType.clear();
  }

  /** Tasks of `type` asked for and not yet handed on (expired requests included until ended). */
  outstanding(type: string): number {
    return this.#byType.get(type)?.total ?? 0;
  }

  /**
   * Where to hand the next task of `type`, with that task charged to its request; undefined when no
   * live request wants one.
   */
  take(type: string): HandOffTarget | undefined {
    const q = this.#byType.get(type);
    if (!q) return undefined;
    const now = Date.now();
    while (q.wants.length > 0) {
      const w = q.wants.shift()!;
      if (w.expiresAt <= now) {
        q.total -= w.remaining;
        this.#end(w, 408, "Request Timeout");
        continue;
      }
      w.remaining--;
      q.total--;
      if (w.remaining > 0) q.wants.push(w);
      return w;
    }
    return undefined;
  }

  #add(type: string, reply: string, data: Uint8Array): void {
    let batch = 0;
    let expiresMs = DEFAULT_EXPIRES_MS;
    let worker: string | undefined;
    let ackInReply = false;
    try {
      const body = JSON.parse(decoder.decode(data)) as {
        batch?: unknown;
        expires?: unknown;
        worker?: unknown;
        handoff?: unknown;
      };
      if (typeof body.worker === "string") worker = body.worker;
      ackInReply = body.handoff === "reply";
      batch = typeof body.batch === "number" ? Math.floor(body.batch) : 0;
      if (typeof body.expires === "number" && body.expires > 0)
        expiresMs = Math.min(MAX_EXPIRES_MS, body.expires / 1_000_000);
    } catch {
      // not a pull request: ignored below
    }
    if (!(batch > 0) || type.length === 0) {
      this.#log.debug({ type, reply }, "malformed demand ignored");
      return;
    }
    let q = this.#byType.get(type);
    if (!q) {
      q = { wants: [], total: 0 };
      this.#byType.set(type, q);
    }
    q.wants.push({ reply, ackInReply, remaining: batch, expiresAt: Date.now() + expiresMs, worker });
    q.total += batch;
    this.#onDemand(type);
  }

  /**
   * Forget the requests of workers that left (drained or lost): tasks handed to them would wait out
   * their ack wait instead of running elsewhere.
   */
  dropWorkers(gone: ReadonlySet<string>): void {
    if (gone.size === 0) return;
    for (const q of this.#byType.values()) {
      const keep = q.wants.filter((w) => w.worker === undefined || !gone.has(w.worker));
      if (keep.length === q.wants.length) continue;
      q.wants = keep;
      q.total = keep.reduce((n, w) => n + w.remaining, 0);
    }
  }

  #expire(now: number): void {
    for (const q of this.#byType.values()) {
      if (q.wants.length === 0) continue;
      const live: Want[] = [];
      for (const w of q.wants) {
        if (w.expiresAt > now) live.push(w);
        else {
          q.total -= w.remaining;
          this.#end(w, 408, "Request Timeout");
        }
      }
      q.wants = live;
    }
  }

  /** End a request the way nats-server does: a status message saying how much of it was not filled. */
  #end(w: Want, code: number, description: string): void {
    const h = headers(code, description);
    h.set("Nats-Pending-Messages", String(w.remaining));
    try {
      this.#nc.publish(w.reply, EMPTY, { headers: h });
    } catch {
      // the connection is closing: the worker's own expiry covers it
    }
  }
}
