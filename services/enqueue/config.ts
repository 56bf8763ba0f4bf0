import { z } from "zod";
import {
  type CommonConfig,
  ConfigError,
  commonConfig,
  commonEnv,
  envBool,
  envInt,
  parseEnv,
} from "../../shared/config.ts";
import { MAX_MSG_BYTES } from "../../shared/nats/topology.ts";
import { otelEnv, type TracingConfig, tracingConfig } from "../../shared/telemetry/otel-env.ts";
import { type AppwriteWebhook, parseAppwriteWebhooks } from "./appwrite/config.ts";
import { type ApiKey, parseApiKeys } from "./auth/keys.ts";
import { readSecretFile } from "./secret-file.ts";

/**
 * The enqueue gateway's configuration: the common NATS/deployment settings plus its HTTP listener, the
 * payload limit, API keys, CORS, Appwrite webhooks and the limits of the read/stream endpoints. Parsed
 * once in main.ts and passed down; nothing else reads the environment. Secrets named by `*_FILE`
 * variables (a mounted Kubernetes/Docker secret) are read here, once, at startup.
 */

/** Room kept inside a stream message for the task envelope around the payload (id, type, …). */
export const ENVELOPE_BYTES = 64 * 1024;

/**
 * The largest payload the streams can carry: their `max_msg_size` (2 MiB, shared/nats/topology.ts)
 * minus the envelope. A larger limit would accept tasks the stream then refuses.
 */
export const MAX_PAYLOAD_LIMIT_BYTES = MAX_MSG_BYTES - ENVELOPE_BYTES;

/** Paths answered without an API key unless AUTH_EXEMPT_PATHS says otherwise. */
export const DEFAULT_AUTH_EXEMPT = "/healthz,/readyz,/metrics,/openapi.json,/docs";

/** The enqueue service's environment variables. */
export const envSchema = z.object({
  ...commonEnv,
  /** Interface the HTTP API listens on. */
  HTTP_HOST: z.string().min(1).default("0.0.0.0"),
  /** Port of the HTTP API; 0 lets the OS pick (the ready log line says which). */
  HTTP_PORT: envInt(0, 65535).default(8080),
  /** Largest task payload accepted, in bytes of its JSON serialization. */
  MAX_PAYLOAD_BYTES: envInt(1, MAX_PAYLOAD_LIMIT_BYTES).default(1024 * 1024),
  /** How long one HTTP request may take to arrive and be answered, ms. */
  REQUEST_TIMEOUT_MS: envInt(100, 300_000).default(10_000),
  /** Require an API key on every route but the exempt ones (`npm start` turns it off). */
  AUTH_ENABLED: envBool.default(true),
  /** API keys: `name:scope+scope:sha256hex` entries separated by commas or newlines. */
  SLUICE_API_KEYS: z.string().optional(),
  /** A file (mounted secret) with more API key entries, one per line, `#` comments. */
  SLUICE_API_KEYS_FILE: z.string().optional(),
  /** Comma-separated paths answered without a key (exact paths; `/docs` covers `/docs/…`). */
  AUTH_EXEMPT_PATHS: z.string().default(DEFAULT_AUTH_EXEMPT),
  /** Origins allowed to call the API from a browser (comma-separated, or `*`); unset = CORS off. */
  CORS_ORIGINS: z.string().optional(),
  /** Appwrite webhooks as JSON: name → {secret, url, rules: [{events, type, priority?}]}. */
  APPWRITE_WEBHOOKS: z.string().optional(),
  /** A file (mounted secret) with the same JSON as APPWRITE_WEBHOOKS, merged over it. */
  APPWRITE_WEBHOOKS_FILE: z.string().optional(),
  /** Longest `?wait=` a caller may ask for on POST /v1/tasks, ms (longer asks are shortened). */
  WAIT_MAX_MS: envInt(0, 300_000).default(30_000),
  /** Largest body of POST /v1/tasks:batch, bytes. */
  BATCH_MAX_BYTES: envInt(1024, 64 * 1024 * 1024).default(8 * 1024 * 1024),
  /** Most state records GET /v1/tasks reads for one page (it answers a cursor to go on). */
  LIST_SCAN_MAX: envInt(100, 1_000_000).default(5_000),
  /** Most live event streams (SSE and WebSocket) one gateway serves at once. */
  MAX_EVENT_STREAMS: envInt(1, 100_000).default(1_000),
  /** Interval of keep-alive comments on idle event streams, ms. */
  EVENTS_HEARTBEAT_MS: envInt(1_000, 300_000).default(15_000),
  /** Serve `GET /metrics` on the HTTP API (METRICS_PORT, when set, serves it as well). */
  METRICS_ENABLED: envBool.default(true),
  ...otelEnv,
});

/** The parsed, frozen configuration. */
export type Config = Readonly<
  CommonConfig & {
    httpHost: string;
    httpPort: number;
    maxPayloadBytes: number;
    requestTimeoutMs: number;
    /** How long a write waits for the JetStream ack before the request fails with 503, ms. */
    publishTimeoutMs: number;
    authEnabled: boolean;
    /** Every configured key (hashes only). */
    apiKeys: readonly ApiKey[];
    authExemptPaths: readonly string[];
    /** `undefined`: CORS off; `true`: any origin; else the allowed origins. */
    corsOrigins: readonly string[] | true | undefined;
    appwriteWebhooks: ReadonlyMap<string, AppwriteWebhook>;
    waitMaxMs: number;
    batchMaxBytes: number;
    listScanMax: number;
    maxEventStreams: number;
    eventsHeartbeatMs: number;
    /** `GET /metrics` on the HTTP API. */
    metricsEnabled: boolean;
    tracing: TracingConfig;
  }
>;

/** Parse an env record (normally `process.env`) into the enqueue config; throws ConfigError. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const e = parseEnv(envSchema, env);
  const keyText = [e.SLUICE_API_KEYS ?? "", readSecretFile("SLUICE_API_KEYS_FILE", e.SLUICE_API_KEYS_FILE)];
  const webhooks = parseAppwriteWebhooks([
    ["APPWRITE_WEBHOOKS", e.APPWRITE_WEBHOOKS],
    [
      "APPWRITE_WEBHOOKS_FILE",
      readSecretFile("APPWRITE_WEBHOOKS_FILE", e.APPWRITE_WEBHOOKS_FILE) || undefined,
    ],
  ]);
  return Object.freeze({
    ...commonConfig(e),
    httpHost: e.HTTP_HOST,
    httpPort: e.HTTP_PORT,
    maxPayloadBytes: e.MAX_PAYLOAD_BYTES,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    // Well inside the request timeout, so a slow server yields our 503 rather than a dropped request.
    publishTimeoutMs: Math.max(50, Math.min(5_000, Math.floor(e.REQUEST_TIMEOUT_MS / 2))),
    authEnabled: e.AUTH_ENABLED,
    apiKeys: Object.freeze(parseApiKeys(keyText.join("\n"))),
    authExemptPaths: Object.freeze(parsePaths(e.AUTH_EXEMPT_PATHS)),
    corsOrigins: parseOrigins(e.CORS_ORIGINS),
    appwriteWebhooks: webhooks,
    waitMaxMs: e.WAIT_MAX_MS,
    batchMaxBytes: e.BATCH_MAX_BYTES,
    listScanMax: e.LIST_SCAN_MAX,
    maxEventStreams: e.MAX_EVENT_STREAMS,
    eventsHeartbeatMs: e.EVENTS_HEARTBEAT_MS,
    metricsEnabled: e.METRICS_ENABLED,
    tracing: tracingConfig(e, "sluice-enqueue"),
  });
}

function parsePaths(v: string): string[] {
  const paths = v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = paths.filter((p) => !p.startsWith("/"));
  if (bad.length > 0)
    throw new ConfigError(`invalid configuration:\n  AUTH_EXEMPT_PATHS: not a path: ${bad[0]}`);
  return paths;
}

function parseOrigins(v: string | undefined): readonly string[] | true | undefined {
  if (v === undefined) return undefined;
  const origins = v
    .split(",")
    .map((s) => s.trim().replace(/\/$/, ""))
    .filter(Boolean);
  if (origins.includes("*")) return true;
  for (const o of origins) {
    if (!/^https?:\/\/[^/\s]+$/.test(o)) {
      throw new ConfigError(
        `invalid configuration:\n  CORS_ORIGINS: not an origin (scheme://host[:port]): ${o}`,
      );
    }
  }
  return origins.length > 0 ? Object.freeze(origins) : undefined;
}
