import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { connectedProbe, connectNats } from "../../shared/nats/connection.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { startProbeServer } from "../../shared/probe-server.ts";
import { QueueConfigs } from "../../shared/queues.ts";
import { initProcessMetrics } from "../../shared/telemetry/metrics.ts";
import { startTracing } from "../../shared/telemetry/tracing.ts";
import { loadConfig } from "./config.ts";
import { observeSlots, recordHeartbeat } from "./metrics.ts";
import { createExecutionObserver } from "./observer.ts";
import { loadDefinitions } from "./tasks-module.ts";
import { Worker } from "./worker.ts";

/** The worker process: config, connection, topology, the worker engine, and the one signal handler. */
const config = loadConfig(process.env);
const log = createLogger({ service: "worker", level: config.logLevel, format: config.logFormat });
initProcessMetrics("worker");
const tracing = await startTracing(config.tracing, {
  log,
  resourceAttributes: { "service.instance.id": config.workerId },
});

try {
  const definitions = await loadDefinitions({
    modulePath: config.tasksModule,
    types: config.types,
    webhookSigningSecret: config.webhookSigningSecret,
  });
  const nc = await connectNats(config, {
    name: `sluice-worker-${config.workerId}`,
    log,
    waitOnFirstConnect: true,
  });
  // readiness follows the connection: 503 while NATS is away
  const connected = connectedProbe(nc);
  const n = names(config.prefix);
  const topo = await ensureTopology(nc, n, { replicas: config.replicas, storage: config.storage });
  const queues = new QueueConfigs(topo.queues, { log });
  await queues.start();
  const worker = new Worker({
    nc,
    jsm: topo.jsm,
    state: topo.state,
    workers: topo.workers,
    signals: topo.signals,
    // a type's queue config may override its definition's attempts and backoff
    queuePolicy: (type) => {
      const q = queues.get(type);
      return {
        ...(q.maxAttempts !== undefined ? { maxAttempts: q.maxAttempts } : {}),
        ...(q.backoff ? { backoff: q.backoff } : {}),
      };
    },
    names: n,
    config,
    definitions,
    log,
    observer: createExecutionObserver(definitions.map((d) => d.type)),
    onHeartbeat: recordHeartbeat,
  });
  observeSlots(worker);
  const probe =
    config.metricsPort > 0
      ? await startProbeServer({
          host: config.metricsHost,
          port: config.metricsPort,
          ready: () => worker.state === "running" && connected(),
        })
      : undefined;
  await worker.start();
  log.info(
    { workerId: config.workerId, types: definitions.map((d) => d.type), metricsPort: probe?.port },
    "ready",
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    await worker.shutdown();
    queues.stop();
    await nc.drain().catch(() => undefined);
    await probe?.close();
    await tracing.shutdown();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
} catch (err) {
  log.fatal({ err }, "worker failed to start");
  process.exit(1);
}
