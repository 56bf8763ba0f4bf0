import { Bucket, type KV } from "@nats-io/kv";
import { isLive, type WorkerRecord } from "../../shared/workers.ts";

/** A worker as `GET /v1/workers` shows it. */
export type WorkerView = WorkerRecord & {
  /** Heartbeat recent enough and not draining: its slots count for dispatch. */
  live: boolean;
  /** Ms since its last heartbeat, at the time of the request. */
  heartbeatAgeMs: number;
  slots: number;
  busy: number;
};

/** Totals per task type over live workers. */
export type TypeCapacity = { workers: number; slots: number; busy: number };

/** `GET /v1/workers`: the workers and, per type, their live capacity. */
export type WorkersView = { workers: WorkerView[]; types: Record<string, TypeCapacity> };

const decoder = new TextDecoder();

/**
 * Read the workers bucket (one record per worker process, refreshed every heartbeat, expiring after
 * the bucket's TTL). Records whose heartbeat is too old, or that are draining, are reported with
 * `live: false` when `all` is set and left out otherwise.
 */
export async function readWorkers(kv: KV, o: { all?: boolean; now?: number } = {}): Promise<WorkersView> {
  const now = o.now ?? Date.now();
  const keys = await listKeys(kv);
  const entries = await Promise.all([...keys].map((k) => kv.get(k).catch(() => null)));
  const workers: WorkerView[] = [];
  const types: Record<string, TypeCapacity> = {};
  for (const e of entries) {
    if (!e || e.operation !== "PUT") continue;
    let w: WorkerRecord;
    try {
      w = JSON.parse(decoder.decode(e.value)) as WorkerRecord;
    } catch {
      continue;
    }
    const live = isLive(w, now);
    if (!live && !o.all) continue;
    let slots = 0;
    let busy = 0;
    for (const [type, t] of Object.entries(w.types ?? {})) {
      slots += t.slots;
      busy += t.busy;
      if (!live) continue;
      const c = types[type] ?? { workers: 0, slots: 0, busy: 0 };
      types[type] = c;
      c.workers++;
      c.slots += t.slots;
      c.busy += t.busy;
    }
    workers.push({ ...w, live, heartbeatAgeMs: Math.max(0, now - w.heartbeatAt), slots, busy });
  }
  workers.sort((a, b) => a.id.localeCompare(b.id));
  return { workers, types };
}

/**
 * The keys of a bucket, from its stream's subjects (one stream-info request), not `kv.keys()`: that
 * lists through an ordered consumer, and with entries expiring while it reads (heartbeats age out of
 * this bucket all the time) it was seen never to finish, leaving `GET /v1/queues` unanswered for the
 * client's whole timeout under load. A deleted key still has its delete marker, which `get` reports.
 */
async function listKeys(kv: KV): Promise<Set<string>> {
  const keys = new Set<string>();
  if (kv instanceof Bucket) {
    const info = await kv.jsm.streams.info(kv.stream, { subjects_filter: `${kv.prefix}.>` });
    const skip = kv.prefix.length + 1;
    for (const subject of Object.keys(info.state.subjects ?? {})) keys.add(subject.slice(skip));
    return keys;
  }
  // a Set: a heartbeat written while the keys are listed is listed again
  for await (const k of await kv.keys()) keys.add(k);
  return keys;
}
