import { createLogger } from "../../shared/logger.ts";
import { startProbeServer } from "../../shared/probe-server.ts";
import { initProcessMetrics } from "../../shared/telemetry/metrics.ts";
import { startTracing } from "../../shared/telemetry/tracing.ts";
import { type Config, loadConfig } from "./config.ts";
import { createEnqueueService } from "./service.ts";

/**
 * The enqueue gateway process: HTTP API and `<prefix>.enqueue` request API in front of the tasks
 * stream. The HTTP server comes up even while NATS is unreachable (readyz says 503 until it appears);
 * "ready" is logged once both APIs serve.
 */

let cfg: Config;
try {
  cfg = loadConfig(process.env);
} catch (err) {
  // no configured logger yet: say what is wrong in the same JSON shape, then give up
  createLogger({ service: "enqueue", level: "info", format: "json" }).fatal(
    { detail: (err as Error).message },
    "invalid configuration",
  );
  process.exit(1);
}
const log = createLogger({ service: "enqueue", level: cfg.logLevel, format: cfg.logFormat });
initProcessMetrics("enqueue");
const tracing = await startTracing(cfg.tracing, { log });
const service = createEnqueueService(cfg, log);
let probe: Awaited<ReturnType<typeof startProbeServer>> | undefined;

let shuttingDown = false;
async function shutdown(signal: string): Promise<void> {
  if (shuttingDown) return;
  shuttingDown = true;
  log.info({ signal }, "shutting down");
  try {
    await service.stop();
    await probe?.close();
    await tracing.shutdown();
    log.info("stopped");
    process.exit(0);
  } catch (err) {
    log.error({ err }, "shutdown failed");
    process.exit(1);
  }
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

try {
  const port = await service.start();
  log.info({ port, host: cfg.httpHost }, "listening");
  // The HTTP API serves /metrics itself; METRICS_PORT adds the same listener the other services have,
  // for scrapers configured per port (the Kubernetes PodMonitor scrapes `metrics` on every pod).
  if (cfg.metricsPort > 0) {
    probe = await startProbeServer({
      host: cfg.metricsHost,
      port: cfg.metricsPort,
      ready: () => service.link.ready,
    });
  }
  await service.whenNatsReady();
  if (!shuttingDown) log.info({ port }, "ready");
} catch (err) {
  log.fatal({ err }, "enqueue failed to start");
  process.exit(1);
}
