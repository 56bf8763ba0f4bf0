import { z } from "zod";
import { type CommonConfig, commonConfig, commonEnv, envInt, parseEnv } from "../../shared/config.ts";

/**
 * The enqueue gateway's configuration: the common NATS/deployment settings plus its HTTP listener and
 * the payload limit. Parsed once in main.ts and passed down; nothing else reads the environment.
 */

/** Room kept inside a stream message for the task envelope around the payload (id, type, …). */
export const ENVELOPE_BYTES = 64 * 1024;

/**
 * The largest payload the streams can carry: their `max_msg_size` (2 MiB, shared/nats/topology.ts)
 * minus the envelope. A larger limit would accept tasks the stream then refuses.
 */
export const MAX_PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024 - ENVELOPE_BYTES;

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
  }
>;

/** Parse an env record (normally `process.env`) into the enqueue config; throws ConfigError. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const e = parseEnv(envSchema, env);
  return Object.freeze({
    ...commonConfig(e),
    httpHost: e.HTTP_HOST,
    httpPort: e.HTTP_PORT,
    maxPayloadBytes: e.MAX_PAYLOAD_BYTES,
    requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    // Well inside the request timeout, so a slow server yields our 503 rather than a dropped request.
    publishTimeoutMs: Math.max(50, Math.min(5_000, Math.floor(e.REQUEST_TIMEOUT_MS / 2))),
  });
}
