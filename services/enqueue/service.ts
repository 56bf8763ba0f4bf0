import type { FastifyInstance } from "fastify";
import type { Logger } from "../../shared/logger.ts";
import { names as buildNames } from "../../shared/names.ts";
import type { Config } from "./config.ts";
import { TaskControl } from "./control.ts";
import { startControlApi } from "./control-api.ts";
import { DeadLetters } from "./dead-letters.ts";
import { Gateway } from "./gateway.ts";
import { startGatewayApi } from "./gateway-api.ts";
import { GATEWAY_VERSION } from "./http/api.ts";
import { buildApp } from "./http/app.ts";
import { queueRoutes } from "./http/queues.ts";
import { scheduleRoutes } from "./http/schedules.ts";
import { NatsLink } from "./link.ts";
import { type NatsApi, startNatsApi } from "./nats-api.ts";
import { QueueControl } from "./queues.ts";
import { startQueuesApi } from "./queues-api.ts";
import { ScheduleControl } from "./schedules.ts";
import { startSchedulesApi } from "./schedules-api.ts";

/** The enqueue service wired together: main.ts runs it, tests run it in-process. */
export type EnqueueService = {
  readonly app: FastifyInstance;
  readonly link: NatsLink;
  readonly gateway: Gateway;
  /** Listen on HTTP and connect NATS in the background; resolves with the HTTP port. */
  start(): Promise<number>;
  /** Resolves once NATS is connected, the topology exists and the NATS API is subscribed. */
  whenNatsReady(): Promise<void>;
  /** Stop taking HTTP and NATS requests, let the ones taken finish, then drain NATS. Idempotent. */
  stop(): Promise<void>;
};

/** Build the service from its config; nothing runs until `start()`. */
export function createEnqueueService(
  cfg: Config,
  log: Logger,
  opts: { checkIntervalMs?: number } = {},
): EnqueueService {
  const names = buildNames(cfg.prefix);
  const link = new NatsLink({
    cfg,
    names,
    log,
    publishTimeoutMs: cfg.publishTimeoutMs,
    checkIntervalMs: opts.checkIntervalMs,
  });
  const queues = new QueueControl({ link, names, log });
  const gateway = new Gateway({ link, names, maxPayloadBytes: cfg.maxPayloadBytes, admission: queues });
  const control = new TaskControl({ link, names });
  const deadLetters = new DeadLetters({ link, names });
  const app = buildApp({
    gateway,
    control,
    deadLetters,
    isReady: () => link.ready,
    log,
    maxPayloadBytes: cfg.maxPayloadBytes,
    requestTimeoutMs: cfg.requestTimeoutMs,
    metrics: cfg.metricsEnabled,
    api: { cfg, gateway, link, names, log, version: GATEWAY_VERSION },
  });
  app.register(queueRoutes, { queues });
  const schedules = new ScheduleControl({ link, names, maxPayloadBytes: cfg.maxPayloadBytes });
  app.register(scheduleRoutes, { schedules });
  let schedulesApi: { stop(): void } | undefined;
  let gatewayApi: { stop(): void } | undefined;
  let queuesApi: { stop(): void } | undefined;
  let api: NatsApi | undefined;
  let controlApi: { stop(): void } | undefined;
  let stopping: Promise<void> | undefined;
  const natsReady = link.whenSession().then((s) => {
    if (stopping) return;
    api = startNatsApi(s.nc, { gateway, names, log });
    controlApi = startControlApi(s.nc, { names, control, deadLetters, log });
    queuesApi = startQueuesApi(s.nc, { names, queues, log });
    schedulesApi = startSchedulesApi(s.nc, { names, schedules, log });
    const { maxPayloadBytes, listScanMax } = cfg;
    gatewayApi = startGatewayApi(s.nc, { gateway, link, names, log, maxPayloadBytes, listScanMax });
    queues.start().catch((err) => log.warn({ err }, "queue configs not loaded yet; retried on use"));
    const max = s.nc.info?.max_payload;
    if (max !== undefined && max < cfg.maxPayloadBytes + 1024) {
      log.warn(
        { serverMaxPayloadBytes: max, maxPayloadBytes: cfg.maxPayloadBytes },
        "the NATS server's max_payload is below MAX_PAYLOAD_BYTES plus envelope: the largest payloads will get 413",
      );
    }
  });

  return {
    app,
    link,
    gateway,
    async start() {
      await app.listen({ host: cfg.httpHost, port: cfg.httpPort });
      link.start();
      const addr = app.server.address();
      return typeof addr === "object" && addr ? addr.port : cfg.httpPort;
    },
    whenNatsReady: () => natsReady,
    stop() {
      stopping ??= (async () => {
        await app.close();
        await api?.stop();
        controlApi?.stop();
        queuesApi?.stop();
        schedulesApi?.stop();
        gatewayApi?.stop();
        queues.stop();
        await link.close();
      })();
      return stopping;
    },
  };
}
