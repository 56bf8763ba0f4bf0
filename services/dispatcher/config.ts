import { hostname } from "node:os";
import { z } from "zod";
import { type CommonConfig, commonConfig, commonEnv, envInt, parseEnv } from "../../shared/config.ts";
import { otelEnv, type TracingConfig, tracingConfig } from "../../shared/telemetry/otel-env.ts";

/** Environment of the dispatcher service. */
export const envSchema = z.object({
  ...commonEnv,
  /** Id of this replica in the leader lease (default: `<hostname>-<pid>`). */
  DISPATCHER_ID: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,128}$/)
    .optional(),
  /** Most tasks dispatched ahead of free slots, as a fraction of capacity (0 = strictly none). */
  DISPATCH_PREFETCH_RATIO: z.coerce.number().min(0).max(2).default(1),
  /** Dispatch ahead about this much work, ms of the observed completion rate (bounded by the ratio above). */
  DISPATCH_PREFETCH_MS: envInt(0, 10_000).default(10),
  /** Most messages held per (type, priority) while choosing what to dispatch next. */
  DISPATCH_WINDOW_MAX: envInt(1, 4096).default(256),
  /** Types to prepare consumers for before any worker registers (comma-separated). */
  TASK_TYPES: z.string().optional(),
  /** How long the leader lease outlives its holder, ms; a standby takes over after it. */
  LEASE_TTL_MS: envInt(1_000, 60_000).default(5_000),
  /** How often the leader renews its lease, ms. */
  LEASE_RENEW_MS: envInt(100, 30_000).default(1_000),
  /** How often in-flight counts are reconciled with the work consumers, ms. */
  RECONCILE_MS: envInt(100, 60_000).default(1_000),
  /** How long completed and cancelled task records are kept, ms (default 24 h). */
  RETENTION_COMPLETED_MS: envInt(1_000).default(24 * 60 * 60 * 1000),
  /** How long failed, timed-out and dead task records are kept, ms (default 7 days). */
  RETENTION_FAILED_MS: envInt(1_000).default(7 * 24 * 60 * 60 * 1000),
  /** Interval between retention sweeps and the sweeps for acked leftovers in the streams, ms. */
  RETENTION_SWEEP_MS: envInt(100, 3_600_000).default(60_000),
  /** How long before a minute starts the scheduler loads that minute's delayed tasks, ms. */
  SCHEDULE_LOOKAHEAD_MS: envInt(1_000, 24 * 60 * 60 * 1000).default(5_000),
  /** How often the leader refreshes sluice_queue_depth (and the other gauges) from consumer info, ms. */
  METRICS_SAMPLE_MS: envInt(100, 60_000).default(2_000),
  ...otelEnv,
});

/** The dispatcher's parsed, frozen configuration. */
export type Config = CommonConfig & {
  dispatcherId: string;
  prefetchRatio: number;
  prefetchMs: number;
  windowMax: number;
  taskTypes: string[];
  leaseTtlMs: number;
  leaseRenewMs: number;
  reconcileMs: number;
  retentionCompletedMs: number;
  retentionFailedMs: number;
  retentionSweepMs: number;
  scheduleLookaheadMs: number;
  metricsSampleMs: number;
  tracing: TracingConfig;
};

/** Parse the dispatcher's env record once at startup. */
export function loadConfig(env: Record<string, string | undefined>): Readonly<Config> {
  const e = parseEnv(envSchema, env);
  if (e.LEASE_RENEW_MS * 2 > e.LEASE_TTL_MS)
    throw new Error("LEASE_RENEW_MS must be at most half of LEASE_TTL_MS");
  return Object.freeze({
    ...commonConfig(e),
    dispatcherId: e.DISPATCHER_ID ?? `${hostname().replace(/[^A-Za-z0-9_-]/g, "-")}-${process.pid}`,
    prefetchRatio: e.DISPATCH_PREFETCH_RATIO,
    prefetchMs: e.DISPATCH_PREFETCH_MS,
    windowMax: e.DISPATCH_WINDOW_MAX,
    taskTypes: (e.TASK_TYPES ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    leaseTtlMs: e.LEASE_TTL_MS,
    leaseRenewMs: e.LEASE_RENEW_MS,
    reconcileMs: e.RECONCILE_MS,
    retentionCompletedMs: e.RETENTION_COMPLETED_MS,
    retentionFailedMs: e.RETENTION_FAILED_MS,
    retentionSweepMs: e.RETENTION_SWEEP_MS,
    scheduleLookaheadMs: e.SCHEDULE_LOOKAHEAD_MS,
    metricsSampleMs: e.METRICS_SAMPLE_MS,
    tracing: tracingConfig(e, "sluice-dispatcher"),
  });
}
