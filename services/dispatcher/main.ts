import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { connectedProbe, connectNats } from "../../shared/nats/connection.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { startProbeServer } from "../../shared/probe-server.ts";
import { initProcessMetrics } from "../../shared/telemetry/metrics.ts";
import { startTracing } from "../../shared/telemetry/tracing.ts";
import { loadConfig } from "./config.ts";
import { Dispatcher } from "./dispatcher.ts";
import { recordDispatch, recordLeftoversRemoved, recordStrandedEnded, recordThrottled } from "./metrics.ts";
import { DispatcherMetricsSampler } from "./metrics-sampler.ts";

/** The dispatcher process: config, connection, topology, one replica, and the one signal handler. */
const config = loadConfig(process.env);
const log = createLogger({ service: "dispatcher", level: config.logLevel, format: config.logFormat });
initProcessMetrics("dispatcher");
const tracing = await startTracing(config.tracing, {
  log,
  resourceAttributes: { "service.instance.id": config.dispatcherId },
});

try {
  const nc = await connectNats(config, {
    name: `sluice-dispatcher-${config.dispatcherId}`,
    log,
    waitOnFirstConnect: true,
  });
  // readiness follows the connection: 503 while NATS is away
  const connected = connectedProbe(nc);
  const n = names(config.prefix);
  const topo = await ensureTopology(nc, n, {
    replicas: config.replicas,
    storage: config.storage,
    leaseTtlMs: config.leaseTtlMs,
  });
  const dispatcher = new Dispatcher({
    nc,
    jsm: topo.jsm,
    workers: topo.workers,
    leases: topo.leases,
    signals: topo.signals,
    names: n,
    config,
    log,
    onDispatch: recordDispatch,
    onThrottle: (type, reason) => recordThrottled(type, reason),
    onLeftoversRemoved: recordLeftoversRemoved,
    onStrandedEnded: recordStrandedEnded,
  });
  const sampler = new DispatcherMetricsSampler({
    dispatcher,
    jsm: topo.jsm,
    names: n,
    log,
    taskTypes: config.taskTypes,
    intervalMs: config.metricsSampleMs,
  });
  const probe =
    config.metricsPort > 0
      ? await startProbeServer({
          host: config.metricsHost,
          port: config.metricsPort,
          ready: () => dispatcher.state !== "stopped" && connected(),
        })
      : undefined;
  await dispatcher.start();
  sampler.start();
  log.info({ dispatcherId: config.dispatcherId, metricsPort: probe?.port }, "ready");

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    sampler.stop();
    await dispatcher.stop();
    // let naks and the lease release reach the server before closing
    await nc.drain().catch(() => undefined);
    await probe?.close();
    await tracing.shutdown();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
} catch (err) {
  log.fatal({ err }, "dispatcher failed to start");
  process.exit(1);
}
