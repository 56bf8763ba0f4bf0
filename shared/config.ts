import { z } from "zod";

/**
 * Config helpers shared by the services. Each service owns a `config.ts` that extends `commonEnv`,
 * parses an explicit env record once at startup, and passes the frozen result down. Nothing else
 * reads `process.env`.
 */

/** An env boolean: `1|true|yes|on` / `0|false|no|off`. */
export const envBool = z
  .enum(["1", "0", "true", "false", "yes", "no", "on", "off"])
  .transform((v) => v === "1" || v === "true" || v === "yes" || v === "on");

/** A non-negative integer given as a string. */
export const envInt = (min = 0, max = Number.MAX_SAFE_INTEGER) => z.coerce.number().int().min(min).max(max);

/** Settings every service shares: where NATS is and how the deployment is named. */
export const commonEnv = {
  /** Comma-separated NATS server URLs. */
  NATS_URL: z.string().min(1).default("nats://127.0.0.1:4222"),
  /** Optional NATS credentials. */
  NATS_USER: z.string().optional(),
  NATS_PASS: z.string().optional(),
  NATS_TOKEN: z.string().optional(),
  /** Prefix of every subject, stream and bucket (several deployments may share one NATS). */
  SLUICE_PREFIX: z
    .string()
    .regex(/^[a-z][a-z0-9_-]{0,31}$/)
    .default("sluice"),
  /** Stream and bucket replicas: 1 locally, 3 on a cluster. */
  SLUICE_REPLICAS: envInt(1, 5).default(1),
  /** JetStream storage for streams and buckets. */
  SLUICE_STORAGE: z.enum(["file", "memory"]).default("file"),
  /** pino level. */
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  /** `json` (production) or `pretty` (humans, needs the dev dependency pino-pretty). */
  LOG_FORMAT: z.enum(["json", "pretty"]).default("json"),
  /** Port of the metrics/health HTTP listener of services without their own HTTP API (0 = off). */
  METRICS_PORT: envInt(0, 65535).default(0),
  METRICS_HOST: z.string().default("0.0.0.0"),
};

/** The parsed common settings. */
export type CommonConfig = {
  natsUrl: string[];
  natsUser: string | undefined;
  natsPass: string | undefined;
  natsToken: string | undefined;
  prefix: string;
  replicas: number;
  storage: "file" | "memory";
  logLevel: string;
  logFormat: "json" | "pretty";
  metricsPort: number;
  metricsHost: string;
};

/** Map the parsed common env onto unit-named config fields. */
export function commonConfig(e: {
  NATS_URL: string;
  NATS_USER?: string | undefined;
  NATS_PASS?: string | undefined;
  NATS_TOKEN?: string | undefined;
  SLUICE_PREFIX: string;
  SLUICE_REPLICAS: number;
  SLUICE_STORAGE: "file" | "memory";
  LOG_LEVEL: string;
  LOG_FORMAT: "json" | "pretty";
  METRICS_PORT: number;
  METRICS_HOST: string;
}): CommonConfig {
  return {
    natsUrl: e.NATS_URL.split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    natsUser: e.NATS_USER,
    natsPass: e.NATS_PASS,
    natsToken: e.NATS_TOKEN,
    prefix: e.SLUICE_PREFIX,
    replicas: e.SLUICE_REPLICAS,
    storage: e.SLUICE_STORAGE,
    logLevel: e.LOG_LEVEL,
    logFormat: e.LOG_FORMAT,
    metricsPort: e.METRICS_PORT,
    metricsHost: e.METRICS_HOST,
  };
}

/** Thrown when the environment does not parse; the message lists every bad variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Parse an env record with a zod object schema. Unknown variables are ignored (the process env holds
 * many), empty strings count as unset so `FOO=` falls back to the default.
 */
export function parseEnv<S extends z.ZodObject>(
  schema: S,
  env: Record<string, string | undefined>,
): z.output<S> {
  const cleaned: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== "") cleaned[key] = v;
  }
  const r = schema.safeParse(cleaned);
  if (!r.success) {
    const lines = r.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  return r.data;
}
