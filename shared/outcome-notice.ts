/**
 * The workers' best-effort outcome notices on `<prefix>.events.<status>.<type>`, batched: one message
 * per (status, type) every 100 ms carrying the ids that ended so, instead of one per task. A
 * per-task notice cost the server a message in and one out per subscriber, and each subscriber a
 * wake-up, on every task — for counters and live views that KV already serves exactly. Body:
 * `{"type","status","n","ids":[…],"at"}`; `n` is the number of ids.
 */
export type OutcomeNotice = { type: string; status: string; n: number; ids: string[]; at: number };

const decoder = new TextDecoder();

/** How many outcomes a notice stands for: `n` of a batch, 1 for a per-task notice of an older worker. */
export function noticeCount(data: Uint8Array): number {
  try {
    const v = JSON.parse(decoder.decode(data)) as { n?: unknown };
    return typeof v.n === "number" && Number.isInteger(v.n) && v.n > 0 ? v.n : 1;
  } catch {
    return 1;
  }
}
