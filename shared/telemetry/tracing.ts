import { context, propagation, type Tracer, trace } from "@opentelemetry/api";
import type { Sampler, SpanProcessor } from "@opentelemetry/sdk-trace";
import type { Logger } from "../logger.ts";
import type { TracingConfig } from "./otel-env.ts";

/**
 * Tracing bootstrap. When the config does not enable tracing, nothing is loaded or registered: the
 * OpenTelemetry API stays a no-op and the call sites (see spans.ts) skip span work altogether after
 * one boolean check, so an untraced deployment pays only for copying a caller's `traceparent`.
 */

/** Name of the tracer every Sluice span comes from. */
export const TRACER_NAME = "sluice";

let tracer: Tracer | undefined;

/** True while a tracer provider started by {@link startTracing} is registered. */
export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** The Sluice tracer; only meaningful while {@link tracingEnabled}. */
export function sluiceTracer(): Tracer {
  return tracer ?? trace.getTracer(TRACER_NAME);
}

/** A started (or skipped) tracing setup. */
export type Tracing = {
  readonly enabled: boolean;
  /** Flush spans still buffered and unregister the provider. Idempotent. */
  shutdown(): Promise<void>;
};

/** Options of {@link startTracing}. */
export type StartTracingOptions = {
  log?: Logger;
  /** Extra resource attributes (e.g. `service.instance.id`). */
  resourceAttributes?: Record<string, string>;
  /**
   * Span processors to use instead of the OTLP exporter (tests pass an in-memory exporter); given,
   * they enable tracing whatever the config says.
   */
  spanProcessors?: SpanProcessor[];
};

const OFF: Tracing = Object.freeze({ enabled: false, shutdown: async () => undefined });

/**
 * Register a tracer provider exporting to OTLP/HTTP (protobuf) with batching, the W3C trace-context
 * propagator and an AsyncLocalStorage context manager. Without `cfg.enabled` (and no test processors)
 * it returns at once having loaded nothing. One provider per process: a second start throws.
 */
export async function startTracing(cfg: TracingConfig, opts: StartTracingOptions = {}): Promise<Tracing> {
  if (!cfg.enabled && !opts.spanProcessors) return OFF;
  if (tracer) throw new Error("tracing is already started in this process");
  const [sdk, core, resources, hooks] = await Promise.all([
    import("@opentelemetry/sdk-trace"),
    import("@opentelemetry/core"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/context-async-hooks"),
  ]);
  let processors = opts.spanProcessors;
  if (!processors) {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-proto");
    const exporter = new OTLPTraceExporter({ url: cfg.tracesUrl, headers: { ...cfg.headers } });
    processors = [new sdk.BatchSpanProcessor({ exporter })];
  }
  const sampler = buildSampler(sdk, cfg);
  const provider = new sdk.TracerProvider({
    sampler,
    spanProcessors: processors,
    resource: resources.resourceFromAttributes({
      ...cfg.resourceAttributes,
      ...opts.resourceAttributes,
      "service.name": cfg.serviceName,
    }),
  });
  const contextManager = new hooks.AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(contextManager);
  propagation.setGlobalPropagator(new core.W3CTraceContextPropagator());
  trace.setGlobalTracerProvider(provider);
  tracer = provider.getTracer(TRACER_NAME);
  opts.log?.info(
    { tracesUrl: opts.spanProcessors ? undefined : cfg.tracesUrl, sampler: cfg.sampler },
    "tracing enabled",
  );
  let stopping: Promise<void> | undefined;
  return {
    enabled: true,
    shutdown() {
      stopping ??= (async () => {
        tracer = undefined;
        try {
          await provider.shutdown();
        } catch (err) {
          opts.log?.warn({ err }, "span export on shutdown failed");
        }
        trace.disable();
        propagation.disable();
        context.disable();
      })();
      return stopping;
    },
  };
}

function buildSampler(sdk: typeof import("@opentelemetry/sdk-trace"), cfg: TracingConfig): Sampler {
  const ratio = new sdk.TraceIdRatioBasedSampler(cfg.samplerRatio);
  switch (cfg.sampler) {
    case "always_on":
      return new sdk.AlwaysOnSampler();
    case "always_off":
      return new sdk.AlwaysOffSampler();
    case "traceidratio":
      return ratio;
    case "parentbased_always_off":
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new sdk.ParentBasedSampler({ root: ratio });
    default:
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() });
  }
}
