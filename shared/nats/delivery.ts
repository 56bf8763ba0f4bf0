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
  const t = reply.split(".");
  // v1: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>             (9 tokens)
  // v2: $JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>.<token>
  const o = t.length === 9 ? 4 : 6;
  const deliveryCount = Number(t[o]);
  const streamSeq = Number(t[o + 1]);
  const storedAtMs = Math.floor(Number(t[o + 3]) / 1e6);
  const pending = Number(t[o + 4]);
  return {
    subject: m.subject,
    ackSubject: reply,
    data: m.data,
    headers: m.headers,
    streamSeq,
    deliveryCount,
    pending,
    storedAtMs,
    dispatchedAtMs: dispatchedAtMs && dispatchedAtMs > 0 ? dispatchedAtMs : undefined,
    ack: () => nc.publish(reply, ACK),
    nak: (delayMs?: number) =>
      nc.publish(
        reply,
        delayMs && delayMs > 0 ? `-NAK ${JSON.stringify({ delay: delayMs * 1_000_000 })}` : NAK,
      ),
    working: () => nc.publish(reply, WPI),
    term: () => nc.publish(reply, TERM),
  };
}
