import type { Msg, MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import { Headers } from "../headers.ts";

/**
 * A message delivered by a JetStream pull consumer, with the acknowledgements we use. We parse the
 * ack subject ourselves (both the v1 and the v2 domain/account-hash forms) instead of wrapping every
 * message in the client's JsMsg: it is the one per-message object on our hottest paths.
 */
export type Delivery = {
  readonly subject: string;
  /** The `$JS.ACK…` subject the acknowledgements go to. */
  readonly ackSubject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  /** Stream sequence: unique per stored message, the same on redelivery. */
  readonly streamSeq: number;
  /** How many times the server has delivered this message (1 on first delivery). */
  readonly deliveryCount: number;
  /** Messages left for the consumer after this one, as the server saw it. */
  readonly pending: number;
  /** Server timestamp of the stored message, epoch ms. */
  readonly storedAtMs: number;
  /** When the dispatcher handed it to this worker, epoch ms (its clock); undefined from a consumer. */
  readonly dispatchedAtMs: number | undefined;
  ack(): void;
  /** Ask for redelivery, after `delayMs` if given. */
  nak(delayMs?: number): void;
  /** Reset the ack timer: the message is still being worked on. */
  working(): void;
  /** Never redeliver this message. */
  term(): void;
};

const ACK = new TextEncoder().encode("+ACK");
const WPI = new TextEncoder().encode("+WPI");
const TERM = new TextEncoder().encode("+TERM");
const NAK = new TextEncoder().encode("-NAK");

const JS_ACK = "$JS.ACK.";
/**
 * Reply subject of a task the dispatcher hands to a worker: `_SLUICE_ACK.<dispatched at, epoch ms>.`
 * followed by the tokens of the tasks message's `$JS.ACK.…` subject. The ack subject itself cannot be
 * the reply: nats-server refuses a client publish whose reply starts with `$JS.ACK.` (a reserved
 * reply, "Permissions Violation for Publish with Reply of"). Carried in the reply instead of headers,
 * an untraced hand-off has no header block to build, send and parse: a measurable share of the
 * dispatcher's and the worker's CPU per task. Nobody subscribes to it: the worker maps it back.
 */
const HANDOFF = "_SLUICE_ACK.";

/** The reply subject for handing a task over: its tasks message's ack subject and the dispatch time. */
export function handOffReply(ackSubject: string, dispatchedAtMs: number): string {
  return `${HANDOFF}${dispatchedAtMs}.${ackSubject.slice(JS_ACK.length)}`;
}

/**
 * Wrap a raw message that carries a `$JS.ACK…` subject: as its reply subject (delivered by a consumer),
 * in a hand-off reply ({@link handOffReply}), or in the `Sluice-Ack` header (handed on by a dispatcher
 * older than hand-off replies, or to a worker that did not ask for them); undefined if it carries none.
 */
export function toDelivery(nc: NatsConnection, m: Msg): Delivery | undefined {
  let reply = m.reply;
  let dispatchedAtMs: number | undefined;
  if (reply?.startsWith(HANDOFF)) {
    const dot = reply.indexOf(".", HANDOFF.length);
    dispatchedAtMs = Number(reply.slice(HANDOFF.length, dot));
    reply = JS_ACK + reply.slice(dot + 1);
  } else if (!reply) {
    const h = m.headers;
    reply = h?.get(Headers.ack);
    if (reply) dispatchedAtMs = Number(h!.get(Headers.dispatchedAt));
  }
  if (!reply || !reply.startsWith(JS_ACK)) return undefined;
  // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>             (9 tokens)
  // v2: $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
  // Read in place (token bounds from the dots): no array of a dozen strings per message.
  let n = 0;
  for (let k = reply.indexOf("."); k >= 0 && n < DOTS.length; k = reply.indexOf(".", k + 1)) DOTS[n++] = k;
  const o = n === 8 ? 4 : 6;
  const token = (t: number) => reply.slice(DOTS[t - 1]! + 1, t < n ? DOTS[t] : reply.length);
  const ts = token(o + 3);
  return new JsDelivery(
    nc,
    m,
    reply,
    Number(token(o + 1)),
    Number(token(o)),
    Number(token(o + 4)),
    // nanoseconds: the ms are the digits before the last six (exact, where the whole is not)
    Number(ts.slice(0, -6)) || 0,
    dispatchedAtMs && dispatchedAtMs > 0 ? dispatchedAtMs : undefined,
  );
}

/** Dot positions of the ack subject being read (one message at a time: no allocation per message). */
const DOTS = new Int32Array(16);

/** A Delivery whose acknowledgements are methods, not four closures per message. */
class JsDelivery implements Delivery {
  readonly subject: string;
  readonly ackSubject: string;
  readonly data: Uint8Array;
  readonly headers: MsgHdrs | undefined;
  readonly streamSeq: number;
  readonly deliveryCount: number;
  readonly pending: number;
  readonly storedAtMs: number;
  readonly dispatchedAtMs: number | undefined;
  readonly #nc: NatsConnection;

  constructor(
    nc: NatsConnection,
    m: Msg,
    ackSubject: string,
    streamSeq: number,
    deliveryCount: number,
    pending: number,
    storedAtMs: number,
    dispatchedAtMs: number | undefined,
  ) {
    this.#nc = nc;
    this.subject = m.subject;
    this.ackSubject = ackSubject;
    this.data = m.data;
    this.headers = m.headers;
    this.streamSeq = streamSeq;
    this.deliveryCount = deliveryCount;
    this.pending = pending;
    this.storedAtMs = storedAtMs;
    this.dispatchedAtMs = dispatchedAtMs;
  }

  ack(): void {
    this.#nc.publish(this.ackSubject, ACK);
  }

  nak(delayMs?: number): void {
    this.#nc.publish(
      this.ackSubject,
      delayMs && delayMs > 0 ? `-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}` : NAK,
    );
  }

  working(): void {
    this.#nc.publish(this.ackSubject, WPI);
  }

  term(): void {
    this.#nc.publish(this.ackSubject, TERM);
  }
}
