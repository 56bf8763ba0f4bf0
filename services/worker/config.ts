import { hostname } from "node:os";
import { z } from "zod";
import { type CommonConfig, commonConfig, commonEnv, envInt, parseEnv } from "../../shared/config.ts";
import { MAX_MSG_BYTES, TASKS_ACK_WAIT_MS } from "../../shared/nats/topology.ts";
import { otelEnv, type TracingConfig, tracingConfig } from "../../shared/telemetry/otel-env.ts";

/** Room kept inside a state record for everything around the result (id, type, times, keys, …). */
export const RECORD_ENVELOPE_BYTES = 64 * 1024;

/**
 * The largest result a state record can carry: the state bucket's value size (2 MiB,
 * shared/nats/topology.ts) minus the rest of the record. A larger limit would pass results NATS then
 * refuses, each costing a handler run before it is given up.
 */
export const MAX_RESULT_LIMIT_BYTES = MAX_MSG_BYTES - RECORD_ENVELOPE_BYTES;

/** Environment of the worker service. */
export const envSchema = z.object({
  ...commonEnv,
  /** Stable id of this worker process (default: `<hostname>-<pid>`). */
  WORKER_ID: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,128}$/)
    .optional(),
  /** Module exporting task definitions (`default` array, or named exports); default: the built-in examples. */
  WORKER_TASKS_MODULE: z.string().optional(),
  /** Comma-separated subset of the defined types to serve (default: all). */
  WORKER_TYPES: z.string().optional(),
  /** Slots per type, overriding every definition's `concurrency`. */
  WORKER_CONCURRENCY: envInt(1, 10_000).optional(),
  /** How long SIGTERM waits for running handlers before aborting them, ms. */
  SHUTDOWN_GRACE_MS: envInt(0).default(25_000),
  /** Registration heartbeat interval, ms. */
  HEARTBEAT_MS: envInt(100, 60_000).default(2_000),
  /** A task still running after this long gets a `running` state write, ms. */
  RUNNING_WRITE_AFTER_MS: envInt(0).default(250),
  /** Ack wait of the tasks consumers of this worker's types, ms: a task whose worker died runs again after it. */
  WORK_ACK_WAIT_MS: envInt(1_000, 3_600_000).default(TASKS_ACK_WAIT_MS),
  /** Largest handler result stored in the task state, bytes (at most {@link MAX_RESULT_LIMIT_BYTES}). */
  MAX_RESULT_BYTES: envInt(1024)
    .max(MAX_RESULT_LIMIT_BYTES, {
      message:
        `must be at most ${MAX_RESULT_LIMIT_BYTES}: the result is stored in the task's state record, ` +
        `which the state bucket caps at ${MAX_MSG_BYTES} bytes (2 MiB), ` +
        `${RECORD_ENVELOPE_BYTES} of them kept for the rest of the record`,
    })
    .default(1024 * 1024),
  /** Secret `webhook.deliver` signs requests with. */
  WEBHOOK_SIGNING_SECRET: z.string().min(1).default("sluice-dev-secret"),
  ...otelEnv,
});

/** The worker's parsed, frozen configuration. */
export type Config = CommonConfig & {
  workerId: string;
  tasksModule: string | undefined;
  types: string[] | undefined;
  concurrencyOverride: number | undefined;
  shutdownGraceMs: number;
  heartbeatMs: number;
  runningWriteAfterMs: number;
  workAckWaitMs: number;
  maxResultBytes: number;
  webhookSigningSecret: string;
  tracing: TracingConfig;
};

/** Parse the worker's env record once at startup. */
export function loadConfig(env: Record<string, string | undefined>): Readonly<Config> {
  const e = parseEnv(envSchema, env);
  return Object.freeze({
    ...commonConfig(e),
    workerId: e.WORKER_ID ?? `${hostname().replace(/[^A-Za-z0-9_-]/g, "-")}-${process.pid}`,
    tasksModule: e.WORKER_TASKS_MODULE,
    types: e.WORKER_TYPES?.split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    concurrencyOverride: e.WORKER_CONCURRENCY,
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    heartbeatMs: e.HEARTBEAT_MS,
    runningWriteAfterMs: e.RUNNING_WRITE_AFTER_MS,
    workAckWaitMs: e.WORK_ACK_WAIT_MS,
    maxResultBytes: e.MAX_RESULT_BYTES,
    webhookSigningSecret: e.WEBHOOK_SIGNING_SECRET,
    tracing: tracingConfig(e, "sluice-worker"),
  });
}
