import type { FastifyPluginAsync } from "fastify";
import { ErrorCodes, SluiceError } from "../../../shared/errors.ts";
import type { Gateway } from "../gateway.ts";

/** `POST /v1/tasks` and `GET /v1/tasks/:id`; errors go to the app's one error handler. */
export const taskRoutes: FastifyPluginAsync<{ gateway: Gateway }> = async (app, { gateway }) => {
  app.post("/v1/tasks", async (req, reply) => {
    // A POST without a body and without a content type never meets a parser; it is still not JSON.
    if (req.body === undefined) {
      throw new SluiceError(ErrorCodes.unsupportedMediaType, "send the body as application/json", {
        status: 415,
      });
    }
    const r = await gateway.enqueue(req.body);
    return reply.code(202).header("location", `/v1/tasks/${r.id}`).send(r);
  });

  app.get<{ Params: { id: string } }>("/v1/tasks/:id", async (req) => gateway.get(req.params.id));
};
