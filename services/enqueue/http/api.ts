import cors from "@fastify/cors";
import websocket from "@fastify/websocket";
import type { FastifyInstance } from "fastify";
import pkg from "../../../package.json" with { type: "json" };
import type { Logger } from "../../../shared/logger.ts";
import type { Names } from "../../../shared/names.ts";
import { OutcomeCounters, QueueSnapshots } from "../compat/stats.ts";
import type { Config } from "../config.ts";
import { StreamRegistry } from "../events/streams.ts";
import type { Gateway } from "../gateway.ts";
import type { NatsLink } from "../link.ts";
import { createWaiter, type TaskWaiter } from "../wait.ts";
import { appwriteRoutes } from "./appwrite-routes.ts";
import { installAuth } from "./auth.ts";
import { compatRoutes } from "./compat-routes.ts";
import { eventRoutes } from "./events-routes.ts";
import { gatewayRoutes } from "./gateway-routes.ts";
import { installOpenApi } from "./openapi.ts";

/** The version /openapi.json shows: the package's. */
export const GATEWAY_VERSION: string = pkg.version;

/** What the gateway's API surface beyond single enqueue/get is built from. */
export type ApiDeps = {
  cfg: Config;
  gateway: Gateway;
  link: Pick<NatsLink, "session" | "whenSession" | "ready">;
  names: Names;
  log: Logger;
  /** Version shown in /openapi.json. */
  version: string;
};

/** Headers a browser may send and read when CORS is on. */
const CORS_ALLOWED_HEADERS = [
  "authorization",
  "content-type",
  "x-api-key",
  "last-event-id",
  "traceparent",
  "tracestate",
];
const CORS_EXPOSED_HEADERS = ["location", "retry-after", "www-authenticate"];

/**
 * Install API keys, CORS, the OpenAPI document and every route of the gateway except `POST /v1/tasks`
 * and `GET /v1/tasks/:id` (http/routes.ts). Call right after creating the app, before any route: the
 * auth and OpenAPI hooks must see every route. Returns the waiter `POST /v1/tasks?wait=` uses.
 */
export function installApi(app: FastifyInstance, d: ApiDeps): TaskWaiter {
  const { cfg } = d;
  installOpenApi(app, { authEnabled: cfg.authEnabled, version: d.version });
  if (cfg.corsOrigins !== undefined) {
    app.register(cors, {
      origin: cfg.corsOrigins === true ? true : [...cfg.corsOrigins],
      methods: ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"],
      allowedHeaders: CORS_ALLOWED_HEADERS,
      exposedHeaders: CORS_EXPOSED_HEADERS,
      maxAge: 600,
    });
  }
  app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  // after CORS and WebSocket (auth.ts says why), before every route
  if (cfg.authEnabled) installAuth(app, { keys: cfg.apiKeys, exemptPaths: cfg.authExemptPaths, log: d.log });

  const registry = new StreamRegistry(cfg.maxEventStreams);
  const counters = new OutcomeCounters();
  void d.link.whenSession().then((s) => counters.start(s.nc, d.names));
  // open event streams would otherwise hold the server's close until every client hangs up
  app.addHook("preClose", async () => registry.closeAll("server closing"));
  app.addHook("onClose", async () => counters.stop());

  const deps = { gateway: d.gateway, link: d.link, names: d.names };
  app.register(gatewayRoutes, {
    ...deps,
    maxPayloadBytes: cfg.maxPayloadBytes,
    batchMaxBytes: cfg.batchMaxBytes,
    listScanMax: cfg.listScanMax,
  });
  app.register(eventRoutes, { ...deps, registry, heartbeatMs: cfg.eventsHeartbeatMs });
  app.register(compatRoutes, {
    ...deps,
    counters,
    snapshots: new QueueSnapshots(),
    isReady: () => d.link.ready,
  });
  app.register(appwriteRoutes, { gateway: d.gateway, webhooks: cfg.appwriteWebhooks });
  const waiter = createWaiter(d.link, cfg.waitMaxMs);
  // a waiting request would hold the server's close for up to WAIT_MAX_MS: it answers 202 now instead
  app.addHook("preClose", async () => waiter.close());
  return waiter;
}
