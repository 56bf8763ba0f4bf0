import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { nanos } from "@nats-io/transport-node";
import type { Names } from "../names.ts";
import { PRIORITIES } from "../priority.ts";

/**
 * Streams, buckets and consumers, created idempotently by whichever service starts first (every
 * service calls `ensureTopology`; creating something that exists with the same config is a no-op).
 * docs/architecture.md describes each one; keep the two in step.
 */

/** How streams and buckets are stored: R1 file locally, R3 on a cluster. */
export type TopologyOptions = {
  replicas: number;
  storage: "file" | "memory";
  /** Dedup window of the streams, ms: a re-publish with the same msg id inside it is dropped (default 2 min). */
  duplicateWindowMs?: number;
  /** Largest message a stream accepts, bytes (payload limit plus envelope; default 2 MiB). */
  maxMsgBytes?: number;
  /**
   * How long a worker's registration outlives its last heartbeat, ms (default 15 s). Only a caller that
   * passes it changes an existing bucket, so services with other defaults do not fight over it.
   */
  workerTtlMs?: number;
  /** How long a lease outlives its last renewal, ms (default 5 s); passed by the dispatcher only. */
  leaseTtlMs?: number;
};

/** Handles to the buckets every service uses. */
export type Topology = {
  jsm: JetStreamManager;
  state: KV;
  workers: KV;
  leases: KV;
  signals: KV;
  /** Queue config per task type (pause, limits, fairness): shared/queues.ts. */
  queues: KV;
  /** Recurring schedules (cron or every): shared/schedule.ts. */
  schedules: KV;
};

/**
 * Largest message a stream accepts and largest value a bucket stores, bytes (2 MiB): a task's payload
 * plus its envelope, a state record with its result. The services' limits are derived from it.
 */
export const MAX_MSG_BYTES = 2 * 1024 * 1024;

/** How long dead tasks stay in the dead-letter stream (and their records in the state bucket), ms. */
export const DEAD_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;
/** How long a control signal (cancel, pause) waits for the task it names, ms. */
export const SIGNAL_TTL_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * How long every Sluice stream remembers a msg id (the streams' `duplicate_window` unless topology
 * options say otherwise). A repeat of a task publish inside it is dropped, which is what lets a caller's
 * retry safely store a message the first attempt may not have stored.
 */
export const DUPLICATE_WINDOW_MS = 120_000;

/**
 * Default ack wait of the per-(priority, type) tasks consumers: how long a task whose worker (or
 * dispatcher) died waits before it is delivered again. The dispatcher keeps the messages it holds
 * alive, workers the ones they run, each every third of it. Workers may set it (`WORK_ACK_WAIT_MS`).
 */
export const TASKS_ACK_WAIT_MS = 10_000;

/** Create (or confirm) the tasks and work streams and the buckets. */
export async function ensureTopology(nc: NatsConnection, n: Names, o: TopologyOptions): Promise<Topology> {
  const jsm = await jetstreamManager(nc);
  const storage = o.storage === "memory" ? StorageType.Memory : StorageType.File;
  // what every Sluice stream shares; each one adds its retention and purpose
  const base: Partial<StreamConfig> = {
    storage,
    num_replicas: o.replicas,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(o.duplicateWindowMs ?? DUPLICATE_WINDOW_MS),
    max_msg_size: o.maxMsgBytes ?? MAX_MSG_BYTES,
  };
  const common: Partial<StreamConfig> = { ...base, retention: RetentionPolicy.Workqueue };
  // Tasks: written by enqueue (and direct producers), read by the dispatcher, which hands each task
  // to a worker; a message leaves the stream when that worker acks it after recording the outcome.
  // (Earlier versions also had a work stream between dispatcher and workers: see dispatcher/legacy-work.ts.)
  await ensureStream(jsm, {
    ...common,
    name: n.tasksStream,
    subjects: [n.tasksSubjectAll],
    description: "Sluice accepted tasks, one subject per (priority, type)",
  });
  // Dead letters: written by workers when a task is exhausted or non-retryable, read and replayed or
  // purged by the gateway's /v1/dlq; limits retention, so entries age out with the dead records.
  await ensureStream(jsm, {
    ...base,
    retention: RetentionPolicy.Limits,
    max_age: nanos(DEAD_RETENTION_MS),
    // the API pages through it with direct gets (next message on a subject from a sequence)
    allow_direct: true,
    name: n.dlqStream,
    subjects: [n.dlqSubjectAll],
    description: "Sluice dead tasks, one subject per type",
  });
  // Delayed: delayed tasks (gateway) and retry waits (workers), one subject per due minute; read by the
  // dispatcher leader's scheduler, which deletes each message once it has fired. Limits retention with
  // no age limit: nothing may expire unfired (services/dispatcher/scheduler).
  await ensureStream(jsm, {
    ...base,
    retention: RetentionPolicy.Limits,
    // the scheduler loads each message by sequence as it fires: direct gets skip the JS API queue
    allow_direct: true,
    name: n.delayedStream,
    subjects: [n.delayedSubjectAll],
    description: "Sluice delayed tasks and retry waits, one subject per due epoch minute",
  });
  const kvm = new Kvm(nc);
  const state = await ensureBucket(jsm, kvm, n.stateBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
    maxValueSize: o.maxMsgBytes ?? MAX_MSG_BYTES,
  });
  const workers = await ensureBucket(jsm, kvm, n.workersBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
    ttl: o.workerTtlMs ?? 15_000,
    enforceTtl: o.workerTtlMs !== undefined,
  });
  const leases = await ensureBucket(jsm, kvm, n.leasesBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
    ttl: o.leaseTtlMs ?? 5_000,
    enforceTtl: o.leaseTtlMs !== undefined,
  });
  // Signals: written by the gateway (cancel, pause), watched by workers and the dispatcher leader.
  const signals = await ensureBucket(jsm, kvm, n.signalsBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
    ttl: SIGNAL_TTL_MS,
  });
  // Queues: task type → queue config, written by the gateway's /v1/queues, watched by every service.
  const queues = await ensureBucket(jsm, kvm, n.queuesBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
  });
  // Schedules: name → recurring schedule, written by the gateway's /v1/schedules, watched by the
  // dispatcher leader, which fires each tick and advances the record with compare-and-set.
  const schedules = await ensureBucket(jsm, kvm, n.schedulesBucket, {
    history: 1,
    replicas: o.replicas,
    storage,
  });
  return { jsm, state, workers, leases, signals, queues, schedules };
}

/**
 * Create the consumers a task type needs: one per priority on the tasks stream. Workers pass their ack
 * wait (`WORK_ACK_WAIT_MS`: it bounds how long their tasks may go without a keepalive); others create
 * missing consumers with the default and leave an existing one's ack wait as it is.
 */
export async function ensureTypeConsumers(
  jsm: JetStreamManager,
  n: Names,
  type: string,
  o: { ackWaitMs?: number } = {},
): Promise<void> {
  await Promise.all(
    PRIORITIES.map((p) =>
      ensureConsumer(
        jsm,
        n.tasksStream,
        {
          durable_name: n.tasksConsumer(p, type),
          filter_subject: n.tasksSubject(p, type),
          ack_policy: AckPolicy.Explicit,
          ack_wait: nanos(o.ackWaitMs ?? TASKS_ACK_WAIT_MS),
          deliver_policy: DeliverPolicy.All,
          // bounds the tasks of one (priority, type) held by the dispatcher or running
          max_ack_pending: 20_000,
          max_waiting: 512,
          description: `dispatcher reads ${p} ${type}`,
        },
        { keepAckWait: o.ackWaitMs === undefined },
      ),
    ),
  );
}

async function ensureStream(
  jsm: JetStreamManager,
  cfg: Partial<StreamConfig> & { name: string },
): Promise<void> {
  try {
    const info = await jsm.streams.info(cfg.name);
    const c = info.config;
    if (
      c.num_replicas !== cfg.num_replicas ||
      c.max_msg_size !== cfg.max_msg_size ||
      c.duplicate_window !== cfg.duplicate_window ||
      JSON.stringify(c.subjects) !== JSON.stringify(cfg.subjects)
    ) {
      await jsm.streams.update(cfg.name, { ...cfg });
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
    try {
      await jsm.streams.add(cfg);
    } catch (e) {
      // another service created it between our info and add
      if (!/already in use/i.test(String((e as Error).message))) throw e;
    }
  }
}

type ConsumerCfg = Parameters<JetStreamManager["consumers"]["add"]>[1] & { durable_name: string };

async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  cfg: ConsumerCfg,
  o: { keepAckWait?: boolean } = {},
): Promise<void> {
  try {
    const info = await jsm.consumers.info(stream, cfg.durable_name);
    const c = info.config;
    if (o.keepAckWait) cfg = { ...cfg, ack_wait: c.ack_wait };
    if (
      c.ack_wait !== cfg.ack_wait ||
      c.max_ack_pending !== cfg.max_ack_pending ||
      c.max_waiting !== cfg.max_waiting
    ) {
      const { durable_name: _d, filter_subject: _f, deliver_policy: _p, ...mutable } = cfg;
      await jsm.consumers.update(stream, cfg.durable_name, mutable);
    }
  } catch (err) {
    if (!isNotFound(err)) throw err;
    await jsm.consumers.add(stream, cfg);
  }
}

async function ensureBucket(
  jsm: JetStreamManager,
  kvm: Kvm,
  bucket: string,
  opts: {
    history: number;
    replicas: number;
    storage: StorageType;
    ttl?: number;
    maxValueSize?: number;
    enforceTtl?: boolean;
  },
): Promise<KV> {
  const { enforceTtl, ...kvOpts } = opts;
  const kv = await kvm.create(bucket, kvOpts);
  const streamName = `KV_${bucket}`;
  const info = await jsm.streams.info(streamName);
  const wantAge = enforceTtl ? (opts.ttl ? nanos(opts.ttl) : 0) : info.config.max_age;
  if (info.config.num_replicas !== opts.replicas || info.config.max_age !== wantAge) {
    // the dedup window may not exceed max age (KV sets it to min(2 min, ttl) on create)
    const dup = wantAge > 0 ? Math.min(info.config.duplicate_window, wantAge) : info.config.duplicate_window;
    await jsm.streams.update(streamName, {
      ...info.config,
      num_replicas: opts.replicas,
      max_age: wantAge,
      duplicate_window: dup,
    });
  }
  return kv;
}

/** True for a JetStream API error saying the stream, consumer or message does not exist. */
export function isNotFound(err: unknown): boolean {
  return /not found/i.test(String((err as Error)?.message));
}
