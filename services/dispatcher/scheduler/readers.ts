import { type Consumer, DeliverPolicy, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";

/**
 * Readers of the delayed stream. Both use ephemeral ordered consumers with `headers_only`, so the
 * scheduler sees each message's sequence, subject and due-time header but never its body: holding a
 * bucket costs a heap entry per message, however large the payloads.
 *
 * Messages are taken in a callback as they arrive, never queued in an iterator: at tens of thousands
 * a second, queued message objects outlive young-generation collections and grow the old generation
 * (measured: ~250 MB RSS to load a million with an iterator and batches of 2,000, ~170 MB like this).
 */

/**
 * Called for every message read, with the message itself: a caller that only needs its sequence and
 * subject never decodes its headers (the follower sees every message scheduled, most of them far ahead).
 */
export type OnDelayed = (m: JsMsg) => void;

const BATCH = 256;
const IDLE_CHECK_MS = 1_000;

/**
 * Read one minute bucket from its first message up to stream sequence `bound` (inclusive), in
 * sequence order. Resolves with the number of messages handed to `onEntry`.
 */
export async function readBucket(
  js: JetStreamClient,
  names: Names,
  minute: number,
  bound: number,
  onEntry: OnDelayed,
  stopped: () => boolean,
): Promise<number> {
  const c = await js.consumers.get(names.delayedStream, {
    filter_subjects: names.delayedSubject(minute),
    headers_only: true,
    deliver_policy: DeliverPolicy.All,
  });
  let idle: NodeJS.Timeout | undefined;
  try {
    if ((await c.info(true)).num_pending === 0) return 0;
    let n = 0;
    let lastAt = Date.now();
    let finished = false;
    let resolve: () => void = () => undefined;
    const done = new Promise<void>((r) => {
      resolve = r;
    });
    const finish = () => {
      finished = true;
      resolve();
    };
    const messages = await c.consume({
      max_messages: BATCH,
      callback: (m: JsMsg) => {
        lastAt = Date.now();
        if (finished) return;
        if (m.seq > bound || stopped()) return finish();
        onEntry(m);
        n++;
        if (m.info.pending === 0) finish();
      },
    });
    // `pending` reaches 0 on the last message; if that one is deleted while we read, nothing more
    // arrives, so an idle reader asks the server whether anything is left
    idle = setInterval(() => {
      if (Date.now() - lastAt < IDLE_CHECK_MS) return;
      void c.info().then(
        (i) => i.num_pending === 0 && finish(),
        () => undefined,
      );
    }, IDLE_CHECK_MS);
    void messages.closed().then(() => finish());
    await done;
    await messages.close().catch(() => undefined);
    return n;
  } finally {
    clearInterval(idle);
    void deleteQuietly(c);
  }
}

/** A running follower of new delayed messages. */
export type Follower = { stop(): Promise<void> };

/** Hand every message from stream sequence `startSeq` on to `onEntry`, in order, until stopped. */
export async function followDelayed(
  js: JetStreamClient,
  names: Names,
  startSeq: number,
  onEntry: OnDelayed,
  log: Logger,
  /** Called when the follower ended by itself (its consumer could not be kept): the caller restarts. */
  onEnd: () => void,
): Promise<Follower> {
  const c = await js.consumers.get(names.delayedStream, {
    filter_subjects: names.delayedSubjectAll,
    headers_only: true,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: startSeq,
  });
  let stopping = false;
  const messages = await c.consume({
    max_messages: BATCH,
    callback: onEntry,
  });
  const done = messages.closed().then(
    (err) => {
      if (err) log.error({ err }, "delayed stream follower failed");
      if (!stopping) onEnd();
    },
    () => undefined,
  );
  return {
    async stop() {
      stopping = true;
      await messages.close().catch(() => undefined);
      await done;
      void deleteQuietly(c);
    },
  };
}

async function deleteQuietly(c: Consumer): Promise<void> {
  // ordered consumers are ephemeral (they go after 5 min idle); deleting them now frees the server sooner
  await c.delete().catch(() => undefined);
}
