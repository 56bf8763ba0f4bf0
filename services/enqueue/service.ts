import type { FastifyInstance } from "fastify";
import type { Logger } from "../../shared/logger.ts";
import { names as buildNames } from "../../shared/names.ts";
import type { Config } from "./config.ts";
import { Gateway } from "./gateway.ts";
import { buildApp } from "./http/app.ts";
import { NatsLink } from "./link.ts";
import { type NatsApi, startNatsApi } from "./nats-api.ts";

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
  const gateway = new Gateway({ link, names, maxPayloadBytes: cfg.maxPayloadBytes });
  const app = buildApp({
    gateway,
    isReady: () => link.ready,
    log,
    maxPayloadBytes: cfg.maxPayloadBytes,
    requestTimeoutMs: cfg.requestTimeoutMs,
  });
  let api: NatsApi | undefined;
  let stopping: Promise<void> | undefined;
  const natsReady = link.whenSession().then((s) => {
    if (stopping) return;
    api = startNatsApi(s.nc, { gateway, names, log });
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
        await link.close();
      })();
      return stopping;
    },
  };
}
