import { createLogger } from "../../shared/logger.ts";
import { names } from "../../shared/names.ts";
import { connectNats } from "../../shared/nats/connection.ts";
import { ensureTopology } from "../../shared/nats/topology.ts";
import { startProbeServer } from "../../shared/probe-server.ts";
import { loadConfig } from "./config.ts";
import { Dispatcher } from "./dispatcher.ts";

/** The dispatcher process: config, connection, topology, one replica, and the one signal handler. */
const config = loadConfig(process.env);
const log = createLogger({ service: "dispatcher", level: config.logLevel, format: config.logFormat });

try {
  const nc = await connectNats(config, {
    name: `sluice-dispatcher-${config.dispatcherId}`,
    log,
    waitOnFirstConnect: true,
  });
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
    names: n,
    config,
    log,
  });
  const probe =
    config.metricsPort > 0
      ? await startProbeServer({
          host: config.metricsHost,
          port: config.metricsPort,
          ready: () => dispatcher.state !== "stopped" && !nc.isClosed(),
        })
      : undefined;
  await dispatcher.start();
  log.info({ dispatcherId: config.dispatcherId, metricsPort: probe?.port }, "ready");

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down");
    await dispatcher.stop();
    // let naks and the lease release reach the server before closing
    await nc.drain().catch(() => undefined);
    await probe?.close();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
} catch (err) {
  log.fatal({ err }, "dispatcher failed to start");
  process.exit(1);
}
