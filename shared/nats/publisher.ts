import {
  createInbox,
  type MsgHdrs,
  type NatsConnection,
  headers as newHeaders,
} from "@nats-io/transport-node";

/** What the server answered for a stored message. */
export type PubAck = { stream: string; seq: number; duplicate: boolean };

/** A JetStream API error answered for a publish (wrong last sequence, no stream, …). */
export class PublishError extends Error {
  override name = "PublishError";
  /** JetStream `err_code` (10071 = wrong last sequence), or 0 when the server sent none. */
  readonly apiCode: number;
  /** HTTP-like status from the server (503 = no responders / no stream). */
  readonly status: number;
  constructor(message: string, status: number, apiCode: number) {
    super(message);
    this.status = status;
    this.apiCode = apiCode;
  }
}

/** JetStream's `err_code` for a failed expected-last-sequence check: the KV key already exists. */
export const WRONG_LAST_SEQUENCE = 10071;

/** True when a publish failed because an expected-last-sequence check did not hold. */
export function isWrongLastSequence(err: unknown): boolean {
  return err instanceof PublishError && err.apiCode === WRONG_LAST_SEQUENCE;
}

/** Options of one acknowledged publish. */
export type PublishOpts = {
  /** `Nats-Msg-Id`: the stream drops a second message with this id inside its duplicate window. */
  msgId?: string;
  /** `Nats-Expected-Last-Subject-Sequence`: 0 means "only if the subject is empty" (KV create). */
  expectLastSubjectSeq?: number;
  headers?: MsgHdrs;
};

type Pending = { resolve: (a: PubAck) => void; reject: (e: Error) => void; deadline: number };
/** A publish held for the end of the event-loop iteration; `id` is its pending ack (none for `send`). */
type Held = { subject: string; data: Uint8Array | string; headers?: MsgHdrs; id?: number };

const decoder = new TextDecoder();

function withPublishHeaders(opts: PublishOpts): MsgHdrs | undefined {
  let h = opts.headers;
  if (opts.msgId !== undefined || opts.expectLastSubjectSeq !== undefined) {
    h ??= newHeaders();
    if (opts.msgId !== undefined) h.set("Nats-Msg-Id", opts.msgId);
    if (opts.expectLastSubjectSeq !== undefined)
      h.set("Nats-Expected-Last-Subject-Sequence", String(opts.expectLastSubjectSeq));
  }
  return h;
}

/**
 * Acknowledged JetStream publishes over one shared reply subscription.
 *
 * Why not `js.publish()`: each call there creates a request with its own timer and an Error object
 * for its cancellation path, which was the largest single cost in our profiles at ~10k writes/s
 * (see docs/performance.md). Here a publish is one `nc.publish` with a reply token, a map entry, and
 * one shared sweep timer for timeouts. Callers still get one promise per write and are expected to
 * keep many in flight (never await them one at a time on a hot path).
 */
export class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #timeoutMs: number;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #sweep: NodeJS.Timeout;
  #closed = false;
  /** Publishes held until the end of this event-loop iteration (`coalesce`), else undefined. */
  #held: Held[] | undefined;
  #heldScheduled = false;

  /**
   * `timeoutMs`: how long to wait for the server's ack before rejecting (default 5000).
   * `coalesce`: hold publishes until the end of the current event-loop iteration and hand them to the
   * client together. The client flushes its buffer in a microtask, so a process that takes requests
   * on many sockets (the HTTP gateway: each request is its own I/O callback) otherwise makes one socket
   * write per request; that was a quarter of the gateway's CPU under load. Costs well under a
   * millisecond of latency. Pointless for services whose work arrives on the NATS socket itself: all
   * the messages of one read are already handled before that microtask runs.
   */
  constructor(nc: NatsConnection, opts: { timeoutMs?: number; coalesce?: boolean } = {}) {
    this.#nc = nc;
    this.#timeoutMs = opts.timeoutMs ?? 5000;
    if (opts.coalesce) this.#held = [];
    this.#prefix = `${createInbox()}.`;
    nc.subscribe(`${this.#prefix}*`, {
      callback: (_err, m) => {
        const id = Number(m.subject.slice(this.#prefix.length));
        const p = this.#pending.get(id);
        if (!p) return;
        this.#pending.delete(id);
        const h = m.headers;
        if (h && h.code >= 300) {
          // 503: no responders, i.e. no stream listens on the subject
          p.reject(new PublishError(h.description || `status ${h.code}`, h.code, 0));
          return;
        }
        try {
          const r = JSON.parse(decoder.decode(m.data)) as {
            stream?: string;
            seq?: number;
            duplicate?: boolean;
            error?: { code: number; err_code?: number; description: string };
          };
          if (r.error) p.reject(new PublishError(r.error.description, r.error.code, r.error.err_code ?? 0));
          else p.resolve({ stream: r.stream ?? "", seq: r.seq ?? 0, duplicate: r.duplicate === true });
        } catch (e) {
          p.reject(e as Error);
        }
      },
    });
    this.#sweep = setInterval(() => this.#expire(), Math.min(250, this.#timeoutMs));
    this.#sweep.unref();
  }

  /** Publish `data` to a stream subject and resolve with the server's ack. */
  publish(subject: string, data: Uint8Array | string, opts: PublishOpts = {}): Promise<PubAck> {
    if (this.#closed) return Promise.reject(new PublishError("publisher closed", 503, 0));
    const h = withPublishHeaders(opts);
    const id = this.#next++;
    return new Promise<PubAck>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, deadline: Date.now() + this.#timeoutMs });
      if (this.#held) {
        this.#hold({ subject, data, headers: h, id });
        return;
      }
      try {
        this.#nc.publish(subject, data, { reply: `${this.#prefix}${id}`, headers: h });
      } catch (e) {
        this.#pending.delete(id);
        reject(e as Error);
      }
    });
  }

  #hold(p: Held): void {
    this.#held!.push(p);
    if (this.#heldScheduled) return;
    this.#heldScheduled = true;
    setImmediate(() => this.#release());
  }

  /** Hand the held publishes to the client in one go (in order); its one flush writes them together. */
  #release(): void {
    this.#heldScheduled = false;
    const held = this.#held!;
    this.#held = [];
    for (const p of held) {
      const reply = p.id === undefined ? undefined : `${this.#prefix}${p.id}`;
      try {
        this.#nc.publish(p.subject, p.data, { reply, headers: p.headers });
      } catch (e) {
        if (p.id === undefined) continue; // a `send`: nothing waits on it
        this.#pending.get(p.id)?.reject(e as Error);
        this.#pending.delete(p.id);
      }
    }
  }

  /**
   * Store without asking for an ack: for writes nothing depends on, where a lost one is harmless and
   * the ack round trip (a reply, a map entry, a promise) would be most of the cost. The server still
   * applies `msgId` and `expectLastSubjectSeq`; a refused write is dropped silently. Throws only when
   * the client cannot even buffer it (closed connection).
   */
  send(subject: string, data: Uint8Array | string, opts: PublishOpts = {}): void {
    if (this.#closed) return;
    if (!this.#held) {
      this.#nc.publish(subject, data, { headers: withPublishHeaders(opts) });
      return;
    }
    if (this.#nc.isClosed()) throw new PublishError("connection closed", 503, 0);
    this.#hold({ subject, data, headers: withPublishHeaders(opts) });
  }

  /** Writes still waiting for their ack. */
  get inFlight(): number {
    return this.#pending.size;
  }

  #expire(): void {
    const now = Date.now();
    for (const [id, p] of this.#pending) {
      if (p.deadline > now) break; // insertion order is deadline order
      this.#pending.delete(id);
      p.reject(new PublishError("timed out waiting for the JetStream ack", 408, 0));
    }
  }

  /** Reject everything still pending and stop the sweep. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweep);
    if (this.#held) this.#held.length = 0;
    for (const p of this.#pending.values()) p.reject(new PublishError("publisher closed", 503, 0));
    this.#pending.clear();
  }
}
