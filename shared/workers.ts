/**
 * The worker registration record in the workers bucket: the contract between workers (who write it on
 * every heartbeat) and the dispatcher and gateway (who read it for capacity and `GET /v1/workers`).
 */
export type WorkerRecord = {
  id: string;
  hostname: string;
  pid: number;
  version: string;
  /** `running` while it takes work; `draining` after SIGTERM (its slots no longer count). */
  state: "running" | "draining";
  startedAt: number;
  /** Epoch ms of this write. */
  heartbeatAt: number;
  /** Interval of the heartbeats, ms: a record older than 3 intervals is a dead worker. */
  heartbeatMs: number;
  /** Slots, busy slots and running tasks per concurrency key, per task type. */
  types: Record<string, WorkerTypeRecord>;
};

/** What a worker reports for one task type it serves. */
export type WorkerTypeRecord = {
  slots: number;
  busy: number;
  /**
   * Tasks per `concurrencyKey` that this worker runs or is still finishing (outcome being stored, ack
   * not yet sent), as of `heartbeatAt`; omitted when there are none (and by workers older than it).
   * A new dispatcher leader rebuilds its per-key counts from these (dispatcher/limits/in-flight-keys.ts).
   */
  keys?: Record<string, number>;
};

/** True when a record is recent enough to count (the bucket's own expiry is slower and not observable). */
export function isLive(w: WorkerRecord, now: number): boolean {
  return w.state === "running" && now - w.heartbeatAt <= 3 * w.heartbeatMs + 1000;
}
