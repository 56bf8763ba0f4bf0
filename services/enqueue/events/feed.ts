import { type KV, type KvWatchEntry, KvWatchInclude } from "@nats-io/kv";
import { isFinal, type TaskState } from "../../../shared/task.ts";

/**
 * Live task events, read from the state bucket itself: every state write (queued, running, progress,
 * final, …) is a KV revision, so a watch of the bucket is the complete, ordered truth, with the
 * revision as a resumable event id. The workers' `<prefix>.events.*` notices are best effort and carry
 * only outcomes, so they are not used here.
 *
 * No gap between a read and a subscription: a task watch starts with the record's current value and
 * continues with the later writes, so a client that GETs and then subscribes sees at least the state
 * it read. The bucket keeps one revision per task, so a write already replaced when the server's
 * consumer gets to it is passed over (a progress write right before the result, say): events arrive
 * in order, never repeat, and the last write is always among them, since nothing replaces a final
 * state. A resumed stream likewise gets the latest state, not each one it missed.
 */

/** One change of a task's state record. */
export type TaskEvent =
  | { kind: "state"; revision: number; state: TaskState }
  | { kind: "deleted"; revision: number; id: string };

/** Why a feed ended. */
export type FeedEnd = "final" | "deleted" | "stopped" | "failed";

/** A running watch. */
export type Feed = {
  /** Stop watching (ends with `stopped`). Idempotent. */
  stop(): void;
  readonly ended: Promise<FeedEnd>;
};

/** Record fields never sent on event streams: the stored task message and checkpoints are internal. */
const INTERNAL_FIELDS = ["task", "checkpoint"] as const;

/** The record as event streams send it; `withResult: false` also drops the result (firehose). */
export function publicState(s: TaskState, o: { withResult: boolean }): Partial<TaskState> {
  const out: Partial<TaskState> = { ...s };
  for (const f of INTERNAL_FIELDS) delete out[f];
  if (!o.withResult) delete out.result;
  return out;
}

/**
 * Watch one task from its current record on. Entries at or below `afterRevision` (a client's
 * Last-Event-ID) are skipped. Ends after delivering a final status or a deletion.
 */
export async function watchTask(
  kv: KV,
  id: string,
  o: { afterRevision?: number },
  onEvent: (e: TaskEvent) => void,
): Promise<Feed> {
  const iter = await kv.watch({ key: id, include: KvWatchInclude.LastValue });
  const after = o.afterRevision ?? 0;
  return run(iter, (e) => {
    if (e.operation !== "PUT") {
      if (e.revision > after) onEvent({ kind: "deleted", revision: e.revision, id });
      return "deleted";
    }
    const state = parse(e);
    if (!state) return undefined;
    if (e.revision > after) onEvent({ kind: "state", revision: e.revision, state });
    // a client resuming after the final event gets nothing more, and the stream ends
    return isFinal(state.status) ? "final" : undefined;
  });
}

/**
 * Watch every task record; `accept` filters (by type, status). New writes only, or every record still
 * stored above `afterRevision` when resuming. Deletions are not reported.
 */
export async function watchAll(
  kv: KV,
  o: { afterRevision?: number; accept: (s: TaskState) => boolean },
  onEvent: (e: TaskEvent) => void,
): Promise<Feed> {
  const iter =
    o.afterRevision !== undefined
      ? await kv.watch({ key: ">", ignoreDeletes: true, resumeFromRevision: o.afterRevision + 1 })
      : await kv.watch({ key: ">", ignoreDeletes: true, include: KvWatchInclude.UpdatesOnly });
  return run(iter, (e) => {
    if (e.operation !== "PUT") return undefined;
    const state = parse(e);
    if (state && o.accept(state)) onEvent({ kind: "state", revision: e.revision, state });
    return undefined;
  });
}

type WatchIter = AsyncIterable<KvWatchEntry> & { stop(): void };

function run(iter: WatchIter, onEntry: (e: KvWatchEntry) => FeedEnd | undefined): Feed {
  let stopped = false;
  const ended = (async (): Promise<FeedEnd> => {
    try {
      for await (const e of iter) {
        const end = onEntry(e);
        if (end) {
          iter.stop();
          return end;
        }
      }
    } catch {
      // the watch died with the connection; the client resumes from its last event id
      return stopped ? "stopped" : "failed";
    }
    return stopped ? "stopped" : "failed";
  })();
  return {
    ended,
    stop() {
      if (stopped) return;
      stopped = true;
      iter.stop();
    },
  };
}

const decoder = new TextDecoder();

function parse(e: KvWatchEntry): TaskState | undefined {
  try {
    return JSON.parse(decoder.decode(e.value)) as TaskState;
  } catch {
    return undefined;
  }
}
