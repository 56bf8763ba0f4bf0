import type { FastifyPluginAsync } from "fastify";
import { ErrorCodes, SluiceError } from "../../../shared/errors.ts";
import type { ScheduleControl } from "../schedules.ts";

/**
 * Recurring schedules: `POST /v1/schedules` (201, 409 when the name is taken), `GET /v1/schedules`,
 * `GET /v1/schedules/:name`, `POST /v1/schedules/:name/pause` and `/resume`, `DELETE
 * /v1/schedules/:name` (204). Errors go to the app's one error handler as problem+json.
 */
export const scheduleRoutes: FastifyPluginAsync<{ schedules: ScheduleControl }> = async (
  app,
  { schedules },
) => {
  app.post("/v1/schedules", async (req, reply) => {
    if (req.body === undefined) {
      throw new SluiceError(ErrorCodes.unsupportedMediaType, "send the body as application/json", {
        status: 415,
      });
    }
    const r = await schedules.create(req.body);
    return reply.code(201).header("location", `/v1/schedules/${r.name}`).send(r);
  });
  app.get("/v1/schedules", async () => schedules.list());
  app.get<{ Params: { name: string } }>("/v1/schedules/:name", async (req) => schedules.get(req.params.name));
  app.post<{ Params: { name: string } }>("/v1/schedules/:name/pause", async (req) =>
    schedules.pause(req.params.name),
  );
  app.post<{ Params: { name: string } }>("/v1/schedules/:name/resume", async (req) =>
    schedules.resume(req.params.name),
  );
  app.delete<{ Params: { name: string } }>("/v1/schedules/:name", async (req, reply) => {
    await schedules.delete(req.params.name);
    return reply.code(204).send();
  });
};
