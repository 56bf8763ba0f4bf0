import type { FastifyPluginAsync } from "fastify";
import { ErrorCodes, SluiceError } from "../../../shared/errors.ts";
import { carrierFromHttp } from "../../../shared/telemetry/propagation.ts";
import type { Gateway } from "../gateway.ts";
import type { TaskWaiter } from "../wait.ts";

/** `POST /v1/tasks` and `GET /v1/tasks/:id`; errors go to the app's one error handler. */
export const taskRoutes: FastifyPluginAsync<{ gateway: Gateway; waiter?: TaskWaiter | undefined }> = async (
  app,
  { gateway, waiter },
) => {
  app.post("/v1/tasks", async (req, reply) => {
    // A POST without a body and without a content type never meets a parser; it is still not JSON.
    if (req.body === undefined) {
      throw new SluiceError(ErrorCodes.unsupportedMediaType, "send the body as application/json", {
        status: 415,
      });
    }
    const waitMs = waiter?.parse(req.query); // ?wait=30s: checked before anything is stored
    const r = await gateway.enqueue(req.body, { transport: "http", trace: carrierFromHttp(req.headers) });
    const done = waitMs === undefined ? undefined : await waiter?.wait(r.id, waitMs);
    if (done) return reply.code(200).header("location", `/v1/tasks/${r.id}`).send(done);
    return reply.code(202).header("location", `/v1/tasks/${r.id}`).send(r);
  });

  app.get<{ Params: { id: string } }>("/v1/tasks/:id", async (req) => gateway.get(req.params.id));
};
