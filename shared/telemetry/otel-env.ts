import { z } from "zod";
import { ConfigError, envBool } from "../config.ts";

/**
 * The standard OpenTelemetry variables Sluice honours for tracing, as a zod shape each service spreads
 * into its `envSchema`, and their translation into a {@link TracingConfig}. Tracing is on only when
 * something asks for it (an OTLP endpoint or `OTEL_TRACES_EXPORTER=otlp`): with nothing configured the
 * SDK is never loaded.
 */

/** Sampler names of the OpenTelemetry specification. */
export const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
] as const;
export type SamplerName = (typeof SAMPLERS)[number];

/** The OTEL_* variables a service reads (spread into its envSchema). */
export const otelEnv = {
  /** `true` turns tracing off whatever else is set. */
  OTEL_SDK_DISABLED: envBool.optional(),
  /** `service.name` of the spans (default `sluice-<service>`). */
  OTEL_SERVICE_NAME: z.string().min(1).optional(),
  /** Extra resource attributes, `key=value,key2=value2` (percent-encoded values). */
  OTEL_RESOURCE_ATTRIBUTES: z.string().optional(),
  /** `otlp` turns tracing on (to the default endpoint if none is set); `none` turns it off. */
  OTEL_TRACES_EXPORTER: z.enum(["otlp", "none"]).optional(),
  /** Base URL of an OTLP/HTTP receiver; traces go to `<url>/v1/traces`. Setting it turns tracing on. */
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url().optional(),
  /** Full URL for traces (wins over OTEL_EXPORTER_OTLP_ENDPOINT). Setting it turns tracing on. */
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url().optional(),
  /** Headers sent with every export, `key=value,key2=value2` (e.g. an API key). */
  OTEL_EXPORTER_OTLP_HEADERS: z.string().optional(),
  /** Only `http/protobuf` (port 4318) is supported; anything else is refused at startup. */
  OTEL_EXPORTER_OTLP_PROTOCOL: z.string().optional(),
  /** Sampler (default `parentbased_always_on`: a sampled caller's trace is always recorded). */
  OTEL_TRACES_SAMPLER: z.enum(SAMPLERS).optional(),
  /** Ratio of the `*traceidratio` samplers, 0..1 (default 1). */
  OTEL_TRACES_SAMPLER_ARG: z.coerce.number().min(0).max(1).optional(),
};

/** What the OTEL_* variables parse to. */
export type OtelEnv = {
  OTEL_SDK_DISABLED?: boolean | undefined;
  OTEL_SERVICE_NAME?: string | undefined;
  OTEL_RESOURCE_ATTRIBUTES?: string | undefined;
  OTEL_TRACES_EXPORTER?: "otlp" | "none" | undefined;
  OTEL_EXPORTER_OTLP_ENDPOINT?: string | undefined;
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?: string | undefined;
  OTEL_EXPORTER_OTLP_HEADERS?: string | undefined;
  OTEL_EXPORTER_OTLP_PROTOCOL?: string | undefined;
  OTEL_TRACES_SAMPLER?: SamplerName | undefined;
  OTEL_TRACES_SAMPLER_ARG?: number | undefined;
};

/** Tracing settings of one service, from its OTEL_* variables. */
export type TracingConfig = Readonly<{
  /** False unless an endpoint or `OTEL_TRACES_EXPORTER=otlp` asked for tracing. */
  enabled: boolean;
  serviceName: string;
  /** Where spans are POSTed (OTLP/HTTP, protobuf). */
  tracesUrl: string;
  headers: Readonly<Record<string, string>>;
  sampler: SamplerName;
  /** Ratio of the `*traceidratio` samplers, 0..1. */
  samplerRatio: number;
  resourceAttributes: Readonly<Record<string, string>>;
}>;

/** The OTLP/HTTP default of the specification: a collector on this host. */
const DEFAULT_OTLP_ENDPOINT = "http://localhost:4318";

/** Map parsed OTEL_* variables onto a tracing config; throws ConfigError for an unsupported protocol. */
export function tracingConfig(e: OtelEnv, defaultServiceName: string): TracingConfig {
  const protocol = e.OTEL_EXPORTER_OTLP_PROTOCOL?.trim();
  if (protocol !== undefined && protocol !== "" && protocol !== "http/protobuf") {
    throw new ConfigError(
      `invalid configuration:\n  OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf is supported (got ${JSON.stringify(protocol)}); point the endpoint at the receiver's OTLP/HTTP port (4318)`,
    );
  }
  const asked =
    e.OTEL_TRACES_EXPORTER === "otlp" ||
    e.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined ||
    e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined;
  const enabled = asked && e.OTEL_SDK_DISABLED !== true && e.OTEL_TRACES_EXPORTER !== "none";
  const base = (e.OTEL_EXPORTER_OTLP_ENDPOINT ?? DEFAULT_OTLP_ENDPOINT).replace(/\/+$/, "");
  return Object.freeze({
    enabled,
    serviceName: e.OTEL_SERVICE_NAME ?? defaultServiceName,
    tracesUrl: e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? `${base}/v1/traces`,
    headers: Object.freeze(parseKeyValues(e.OTEL_EXPORTER_OTLP_HEADERS)),
    sampler: e.OTEL_TRACES_SAMPLER ?? "parentbased_always_on",
    samplerRatio: e.OTEL_TRACES_SAMPLER_ARG ?? 1,
    resourceAttributes: Object.freeze(parseKeyValues(e.OTEL_RESOURCE_ATTRIBUTES)),
  });
}

/** `k=v,k2=v2` with percent-encoded values (the W3C baggage-like format of the OTEL_* lists). */
export function parseKeyValues(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (s ?? "").split(",")) {
    const i = part.indexOf("=");
    if (i <= 0) continue;
    const key = part.slice(0, i).trim();
    if (!key) continue;
    const raw = part.slice(i + 1).trim();
    try {
      out[key] = decodeURIComponent(raw);
    } catch {
      out[key] = raw;
    }
  }
  return out;
}
