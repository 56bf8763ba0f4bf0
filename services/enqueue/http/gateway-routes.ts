import type { FastifyPluginAsync } from "fastify";
import type { Names } from "../../../shared/names.ts";
import { carrierFromHttp } from "../../../shared/telemetry/propagation.ts";
import { enqueueBatch } from "../batch.ts";
import type { Gateway } from "../gateway.ts";
import type { SessionSource } from "../link.ts";
import { listTasks, parseListQuery } from "../list.ts";
import { retryTask } from "../retry.ts";
import { readWorkers } from "../workers.ts";

/** What these routes need. */
export type GatewayRoutesDeps = {
  gateway: Gateway;
  link: SessionSource;
  names: Names;
  maxPayloadBytes: number;
  batchMaxBytes: number;
  listScanMax: number;
};

/**
 * The v1 task API beyond single enqueue and get: `POST /v1/tasks:batch`, `GET /v1/tasks` (recent,
 * bounded), `POST /v1/tasks/:id/retry`, and `GET /v1/workers`.
 */
export const gatewayRoutes: FastifyPluginAsync<GatewayRoutesDeps> = async (app, deps) => {
  // `::` is find-my-way's escaped colon: the path is the literal `/v1/tasks:batch`
  app.post(
    "/v1/tasks::batch",
    { bodyLimit: deps.batchMaxBytes, config: { scope: "enqueue" } },
    async (req, reply) => {
      const r = await enqueueBatch(deps.gateway, req.body ?? null, deps.maxPayloadBytes, {
        transport: "http",
        trace: carrierFromHttp(req.headers),
      });
      return reply.code(r.status).send({ results: r.results });
    },
  );

  app.get("/v1/tasks", async (req) =>
    listTasks(deps.link, deps.names, parseListQuery(req.query as Record<string, unknown>), deps.listScanMax),
  );

  app.post<{ Params: { id: string } }>(
    "/v1/tasks/:id/retry",
    // a retry stores a copy of a task the caller could have enqueued itself: the enqueue scope suffices
    { config: { scope: "enqueue" } },
    async (req, reply) => {
      // 404 (not a 500) for ids that cannot be keys, exactly as GET answers them; retries are rare
      await deps.gateway.get(req.params.id);
      const r = await retryTask(deps.link, deps.names, req.params.id);
      return reply.code(202).header("location", `/v1/tasks/${r.id}`).send(r);
    },
  );

  app.get("/v1/workers", async (req) => {
    const all = (req.query as Record<string, unknown>).all;
    return readWorkers(deps.link.session().workers, { all: all === "true" || all === "1" });
  });
};
