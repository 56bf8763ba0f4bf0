import { z } from "zod";
import { commonEnv, envInt, parseEnv } from "../shared/config.ts";

/**
 * Configuration of the developer scripts (`npm start`, `ensure-nats-server`). Like the services, they
 * parse an explicit env record once; the services' own variables (LOG_LEVEL, WORKER_CONCURRENCY, …)
 * are passed through to the children untouched and parsed there.
 */

/** The task types `npm start` prepares consumers for: the worker's built-in examples. */
export const EXAMPLE_TYPES = ["noop", "webhook.deliver", "doc.chunk"] as const;

/** Default client port of the nats-server `npm start` spawns; another is picked when it is taken. */
export const DEFAULT_NATS_PORT = 4222;

/** Environment of `scripts/ensure-nats-server.ts`. */
export const ensureEnvSchema = z.object({
  /** Path of the nats-server binary to use instead of searching PATH and the usual install spots. */
  NATS_SERVER_BIN: z.string().min(1).optional(),
});

/** Environment of `scripts/start.ts`. */
export const startEnvSchema = z.object({
  ...commonEnv,
  ...ensureEnvSchema.shape,
  /** An existing NATS (comma-separated URLs): when set, no nats-server is spawned. */
  NATS_URL: z.string().min(1).optional(),
  /** Client port of the spawned nats-server (default 4222, or a free one when 4222 is taken). */
  NATS_PORT: envInt(1, 65535).optional(),
  /** Interface of the enqueue HTTP API: loopback, unlike the service's own default, on a developer machine. */
  HTTP_HOST: z.string().min(1).default("127.0.0.1"),
  /** Port of the enqueue HTTP API; 0 picks a free one. */
  HTTP_PORT: envInt(0, 65535).default(8080),
  /** Folder of local state: the spawned server's JetStream store lives in `<dir>/nats`. */
  SLUICE_DATA_DIR: z.string().min(1).default(".data"),
  /** The worker's drain time on SIGTERM, ms; `npm start` waits this plus a margin before SIGKILL. */
  SHUTDOWN_GRACE_MS: envInt(0).default(25_000),
  /** Ack wait of the work consumers, ms (the worker's variable; consumers are created with it). */
  WORK_ACK_WAIT_MS: envInt(1_000, 3_600_000).optional(),
});

/** The parsed configuration of `npm start`. */
export type StartConfig = Readonly<{
  /** Existing NATS servers; empty when `npm start` spawns its own. */
  natsUrl: string[];
  natsUser: string | undefined;
  natsPass: string | undefined;
  natsToken: string | undefined;
  natsServerBin: string | undefined;
  /** The requested port; `undefined` means 4222 if free, else any free port. */
  natsPort: number | undefined;
  httpHost: string;
  /** 0 = pick a free port. */
  httpPort: number;
  dataDir: string;
  prefix: string;
  replicas: number;
  storage: "file" | "memory";
  logLevel: string;
  /** How long the services get to drain after SIGTERM before SIGKILL, ms. */
  stopTimeoutMs: number;
  workAckWaitMs: number | undefined;
}>;

/** Parse the env record of `npm start`; throws ConfigError listing every bad variable. */
export function loadStartConfig(env: Record<string, string | undefined>): StartConfig {
  const e = parseEnv(startEnvSchema, env);
  return Object.freeze({
    natsUrl: (e.NATS_URL ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    natsUser: e.NATS_USER,
    natsPass: e.NATS_PASS,
    natsToken: e.NATS_TOKEN,
    natsServerBin: e.NATS_SERVER_BIN,
    natsPort: e.NATS_PORT,
    httpHost: e.HTTP_HOST,
    httpPort: e.HTTP_PORT,
    dataDir: e.SLUICE_DATA_DIR,
    prefix: e.SLUICE_PREFIX,
    replicas: e.SLUICE_REPLICAS,
    storage: e.SLUICE_STORAGE,
    logLevel: e.LOG_LEVEL,
    // the worker's grace plus time for its final writes and for the other two to close
    stopTimeoutMs: e.SHUTDOWN_GRACE_MS + 10_000,
    workAckWaitMs: e.WORK_ACK_WAIT_MS,
  });
}

/** Parse the env record of `ensure-nats-server`. */
export function loadEnsureConfig(env: Record<string, string | undefined>): { natsServerBin?: string } {
  const e = parseEnv(ensureEnvSchema, env);
  return e.NATS_SERVER_BIN ? { natsServerBin: e.NATS_SERVER_BIN } : {};
}
