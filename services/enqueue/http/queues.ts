import type { FastifyPluginAsync } from "fastify";
import type { QueueControl } from "../queues.ts";

/**
 * Queue configuration: `GET /v1/queues`, `GET /v1/queues/:type`, `PATCH /v1/queues/:type` (a JSON merge
 * patch: `null` removes a limit), `POST /v1/queues/:type/pause` and `/resume`. Errors go to the app's
 * one error handler (400 on bad values, 503 while NATS is away).
 */
export const queueRoutes: FastifyPluginAsync<{ queues: QueueControl }> = async (app, { queues }) => {
  // RFC 7396's media type, parsed like JSON (scoped to these routes by fastify's encapsulation)
  app.addContentTypeParser(
    "application/merge-patch+json",
    { parseAs: "string" },
    app.getDefaultJsonParser("error", "error"),
  );

  app.get("/v1/queues", async () => queues.list());
  app.get<{ Params: { type: string } }>("/v1/queues/:type", async (req) => queues.get(req.params.type));
  app.patch<{ Params: { type: string } }>("/v1/queues/:type", async (req) =>
    queues.patch(req.params.type, req.body),
  );
  app.post<{ Params: { type: string } }>("/v1/queues/:type/pause", async (req) =>
    queues.pause(req.params.type),
  );
  app.post<{ Params: { type: string } }>("/v1/queues/:type/resume", async (req) =>
    queues.resume(req.params.type),
  );
};
