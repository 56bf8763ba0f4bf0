import type { JetStreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Names } from "../../shared/names.ts";
import type { TaskState } from "../../shared/task.ts";
import { epochMs, until } from "./clock.ts";

/**
 * How the bench knows Sluice finished its tasks, from JetStream itself rather than from anything the
 * services report: a task's message stays in the tasks stream until the worker that ran it has stored
 * its final state and acked it (the dispatcher hands tasks to workers without taking them out;
 * docs/architecture.md), so an empty tasks stream means every task accepted so far is final. The audit
 * at the end reads every state record to prove it.
 */

/**
 * Messages in the tasks stream: the tasks not yet final, whether waiting, held by the dispatcher or
 * with a worker.
 */
export async function unfinished(jsm: JetStreamManager, n: Names): Promise<number> {
  return (await jsm.streams.info(n.tasksStream)).state.messages;
}

/** Poll until the tasks stream is empty; returns when that was seen (epoch ms). */
export async function untilEmpty(jsm: JetStreamManager, n: Names, timeoutMs: number): Promise<number> {
  return until(
    "the tasks stream to empty",
    async () => ((await unfinished(jsm, n)) === 0 ? epochMs() : 0),
    timeoutMs,
    20,
  );
}

/** Latest status of every task, counted; tasks whose id starts with the excluded prefix apart. */
export type Audit = { counts: Record<string, number>; excluded: Record<string, number> };

/**
 * Count the latest state record of every task by status (reads the whole bucket; not on a measured
 * path). Ids starting with `excludePrefix` (tasks the bench purged on purpose) are counted apart.
 */
export async function auditStates(
  nc: NatsConnection,
  bucket: string,
  excludePrefix?: string,
  timeoutMs = 120_000,
): Promise<Audit> {
  const kv = await new Kvm(nc).open(bucket);
  const audit: Audit = { counts: {}, excluded: {} };
  if ((await kv.status()).values === 0) return audit;
  const watch = await kv.watch({ key: ">" });
  const t = setTimeout(() => watch.stop(), timeoutMs);
  try {
    for await (const e of watch) {
      if (e.operation === "PUT") {
        const status = e.json<TaskState>().status;
        const counts = excludePrefix && e.key.startsWith(excludePrefix) ? audit.excluded : audit.counts;
        counts[status] = (counts[status] ?? 0) + 1;
      }
      if (e.delta === 0) break;
    }
  } finally {
    clearTimeout(t);
    watch.stop();
  }
  return audit;
}
