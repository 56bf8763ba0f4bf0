import { createHash } from "node:crypto";
import type { Priority } from "./priority.ts";

/**
 * Every stream, subject, consumer and bucket name Sluice uses, derived from one deployment prefix so
 * several deployments can share a NATS account. Nothing else in the code spells a subject by hand.
 *
 * A task type may contain dots (`doc.chunk`); in subjects it stays as is (so `sluice.tasks.urgent.>`
 * still works in tools), in consumer names dots are not allowed, so the type is encoded and a short hash
 * keeps `a.b` and `a_b` apart.
 */
export type Names = ReturnType<typeof names>;

/** Build the name table for a deployment prefix (default `sluice`). */
export function names(prefix: string) {
  const up = prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
  const bucketPrefix = prefix.replace(/[^a-zA-Z0-9_-]/g, "_");
  return Object.freeze({
    prefix,
    /** Work-queue stream of accepted tasks, one subject per (priority, type). */
    tasksStream: `${up}_TASKS`,
    tasksSubjectAll: `${prefix}.tasks.>`,
    tasksSubject: (priority: Priority, type: string) => `${prefix}.tasks.${priority}.${type}`,
    /** Durable pull consumer the dispatcher reads for one (priority, type). */
    tasksConsumer: (priority: Priority, type: string) => `d_${priority}_${typeToken(type)}`,
    /**
     * Work-queue stream of dispatched tasks, one subject per type: written by versions before the
     * direct hand-off; the dispatcher moves what is left in it back to the tasks stream.
     */
    workStream: `${up}_WORK`,
    workSubjectAll: `${prefix}.work.>`,
    workSubject: (type: string) => `${prefix}.work.${type}`,
    /** Durable pull consumer of the work stream, one per type (read only to move leftovers back). */
    workConsumer: (type: string) => `w_${typeToken(type)}`,
    /**
     * Core NATS: a worker's pull request for tasks of a type, answered by the dispatcher leader with
     * tasks handed on to the request's reply subject (the pull-request protocol of a consumer).
     */
    demandSubject: (type: string) => `${prefix}.demand.${type}`,
    demandSubjectAll: `${prefix}.demand.>`,
    /** Core NATS: a dispatcher just became leader; workers send their pull requests again. */
    leaderSubject: `${prefix}.dispatcher.leader`,
    /** KV bucket: task id → task state record. */
    stateBucket: `${bucketPrefix}-state`,
    /** KV bucket: worker id → registration and heartbeat (entries expire). */
    workersBucket: `${bucketPrefix}-workers`,
    /** KV bucket: leases for leader-elected singletons inside the dispatcher. */
    leasesBucket: `${bucketPrefix}-leases`,
    /** KV bucket: task type → queue config (pause, limits, fairness; shared/queues.ts). */
    queuesBucket: `${bucketPrefix}-queues`,
    /** KV bucket: task id → a pending control signal (cancel, pause) for whoever holds the task. */
    signalsBucket: `${bucketPrefix}-signals`,
    /** Stream of dead tasks (limits retention, kept as long as dead records), one subject per type. */
    dlqStream: `${up}_DLQ`,
    dlqSubjectAll: `${prefix}.dlq.>`,
    dlqSubject: (type: string) => `${prefix}.dlq.${type}`,
    /** Stream of delayed tasks and retry waits (limits retention), one subject per due epoch minute. */
    delayedStream: `${up}_DELAYED`,
    delayedSubjectAll: `${prefix}.delayed.>`,
    delayedSubject: (epochMinute: number) => `${prefix}.delayed.${epochMinute}`,
    /** KV bucket: schedule name → recurring schedule (cron or every) and its next tick. */
    schedulesBucket: `${bucketPrefix}-schedules`,
    /** Core NATS: a handler reported a rate limit; the dispatcher holds the type back. */
    throttleSubject: (type: string) => `${prefix}.throttle.${type}`,
    throttleSubjectAll: `${prefix}.throttle.>`,
    /** Core NATS request/reply of the control API: `<prefix>.api.<resource>.<action>`. */
    apiSubject: (resource: string, action: string) => `${prefix}.api.${resource}.${action}`,
    /** Core NATS request/reply subject of the enqueue service. */
    enqueueSubject: `${prefix}.enqueue`,
    /** Core NATS: a worker tells the dispatcher that slots of a type freed up. */
    slotsSubject: (type: string) => `${prefix}.slots.${type}`,
    slotsSubjectAll: `${prefix}.slots.>`,
    /** Core NATS: task state changes (best effort, for live views; KV is the truth). */
    eventsSubject: (type: string, status: string) => `${prefix}.events.${status}.${type}`,
    eventsSubjectAll: `${prefix}.events.>`,
  });
}

/** A type as it may appear in a consumer name: `[A-Za-z0-9_-]` plus a short hash of the original. */
export function typeToken(type: string): string {
  const readable = type.replace(/[^a-z0-9_-]/g, "_");
  const h = createHash("sha1").update(type).digest("hex").slice(0, 6);
  return `${readable}_${h}`;
}
