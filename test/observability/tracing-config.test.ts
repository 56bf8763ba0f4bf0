import { headers as newHeaders } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { loadConfig as loadDispatcherConfig } from "../../services/dispatcher/config.ts";
import { traceDispatch } from "../../services/dispatcher/tracing.ts";
import { loadConfig as loadEnqueueConfig } from "../../services/enqueue/config.ts";
import { loadConfig as loadWorkerConfig } from "../../services/worker/config.ts";
import { ConfigError } from "../../shared/config.ts";
import { carrierFromHttp, copyTraceContext, traceIdOf } from "../../shared/telemetry/propagation.ts";
import { startTracing, tracingEnabled } from "../../shared/telemetry/tracing.ts";

const TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OTEL_GLOBAL = Symbol.for("opentelemetry.js.api.1");

describe("observability - tracing configuration", () => {
  it("is off when nothing is configured, in every service", () => {
    expect(loadEnqueueConfig({}).tracing.enabled).toBe(false);
    expect(loadDispatcherConfig({}).tracing.enabled).toBe(false);
    expect(loadWorkerConfig({}).tracing.enabled).toBe(false);
  });

  it("turns on with an endpoint and sends to <endpoint>/v1/traces with the given headers", () => {
    const t = loadWorkerConfig({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318/",
      OTEL_EXPORTER_OTLP_HEADERS: "api-key=s%3Dcret, x-team = core",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=staging",
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    }).tracing;
    expect(t).toMatchObject({
      enabled: true,
      serviceName: "sluice-worker",
      tracesUrl: "http://collector:4318/v1/traces",
      headers: { "api-key": "s=cret", "x-team": "core" },
      resourceAttributes: { "deployment.environment": "staging" },
      sampler: "parentbased_traceidratio",
      samplerRatio: 0.25,
    });
  });

  it("uses a traces endpoint as given, and OTEL_TRACES_EXPORTER=otlp alone means the local default", () => {
    expect(
      loadDispatcherConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://x.example/api/traces" }).tracing
        .tracesUrl,
    ).toBe("https://x.example/api/traces");
    const t = loadEnqueueConfig({ OTEL_TRACES_EXPORTER: "otlp", OTEL_SERVICE_NAME: "gw" }).tracing;
    expect(t).toMatchObject({
      enabled: true,
      serviceName: "gw",
      tracesUrl: "http://localhost:4318/v1/traces",
    });
  });

  it("stays off when disabled explicitly, whatever else is set", () => {
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318" };
    expect(loadWorkerConfig({ ...env, OTEL_SDK_DISABLED: "true" }).tracing.enabled).toBe(false);
    expect(loadWorkerConfig({ ...env, OTEL_TRACES_EXPORTER: "none" }).tracing.enabled).toBe(false);
  });

  it("refuses protocols other than http/protobuf and bad values, naming the variable", () => {
    expect(() => loadWorkerConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toThrow(ConfigError);
    expect(() => loadWorkerConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" })).toThrow(
      /OTEL_EXPORTER_OTLP_PROTOCOL/,
    );
    expect(() => loadWorkerConfig({ OTEL_TRACES_SAMPLER: "sometimes" })).toThrow(/OTEL_TRACES_SAMPLER/);
    expect(() => loadWorkerConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "not a url" })).toThrow(
      /OTEL_EXPORTER_OTLP_ENDPOINT/,
    );
    expect(loadWorkerConfig({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" }).tracing.enabled).toBe(false);
  });
});

describe("observability - untraced processes", () => {
  it("register no tracer provider, propagator or context manager", async () => {
    const t = await startTracing(loadWorkerConfig({}).tracing);
    expect(t.enabled).toBe(false);
    expect(tracingEnabled()).toBe(false);
    const api = (globalThis as Record<symbol, Record<string, unknown> | undefined>)[OTEL_GLOBAL];
    expect(api?.trace).toBeUndefined();
    expect(api?.propagation).toBeUndefined();
    expect(api?.context).toBeUndefined();
    await t.shutdown();
  });

  it("pass a caller's trace context on unchanged and start no span", () => {
    const incoming = newHeaders();
    incoming.set("traceparent", TP);
    incoming.set("tracestate", "vendor=1");
    const out = newHeaders();
    expect(traceDispatch(incoming, out, "t1", "noop", "normal", "sluice.demand.noop")).toBeUndefined();
    expect(out.get("traceparent")).toBe(TP);
    expect(out.get("tracestate")).toBe("vendor=1");
    const none = newHeaders();
    traceDispatch(undefined, none, "t2", "noop", "normal", "sluice.demand.noop");
    expect(none.has("traceparent")).toBe(false);
  });

  it("read the trace id for log lines from a traceparent, and ignore malformed ones", () => {
    expect(traceIdOf(carrierFromHttp({ traceparent: TP }))).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(
      traceIdOf({ traceparent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01" }),
    ).toBeUndefined();
    expect(traceIdOf({ traceparent: "garbage" })).toBeUndefined();
    expect(carrierFromHttp({})).toBeUndefined();
    const h = newHeaders();
    copyTraceContext({ traceparent: TP }, h);
    expect(traceIdOf(h)).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
  });
});
