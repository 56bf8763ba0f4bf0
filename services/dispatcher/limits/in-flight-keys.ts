import type { JetStreamManager } from "@nats-io/jetstream";
import type { Names } from "../../../shared/names.ts";

const decoder = new TextDecoder();

/** Most work messages read by one scan; beyond it the scan gives up and the old counts stay. */
export const SCAN_MAX_MESSAGES = 20_000;

/** The `concurrencyKey` of a task message body, or undefined (none, or not a task). */
export function concurrencyKeyOf(data: Uint8Array): string | undefined {
  try {
    const body = JSON.parse(decoder.decode(data)) as { concurrencyKey?: unknown } | null;
    const k = body?.concurrencyKey;
    return typeof k === "string" && k.length > 0 ? k : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Running tasks per concurrencyKey of a type, read from the work stream: it is a work queue, so the
 * messages on `<prefix>.work.<type>` are exactly the tasks dispatched and not yet acked (waiting for a
 * worker, or with one). One stream "next message by subject" request per message, so a scan costs
 * about one round trip per task in flight; undefined when more than `max` are.
 *
 * A message whose handler just ended but whose ack has not arrived is still counted: the result can
 * only over-count, which delays a key a little and never admits too many.
 */
export async function scanInFlightKeys(
  jsm: JetStreamManager,
  names: Names,
  type: string,
  max = SCAN_MAX_MESSAGES,
): Promise<Map<string, number> | undefined> {
  const counts = new Map<string, number>();
  const subject = names.workSubject(type);
  let seq = 0;
  for (let n = 0; ; n++) {
    if (n >= max) return undefined;
    // `next_by_subj` (server 2.9+) is missing from the client's MsgRequest type, not from the API
    const query = { seq, next_by_subj: subject } as unknown as { seq: number };
    const sm = await jsm.streams.getMessage(names.workStream, query);
    if (!sm) return counts;
    const key = concurrencyKeyOf(sm.data);
    if (key !== undefined) counts.set(key, (counts.get(key) ?? 0) + 1);
    seq = sm.seq + 1;
  }
}
