import type { FastifyPluginAsync } from "fastify";
import type { TaskControl } from "../control.ts";
import { DeadLetterListQuery, DeadLetterSelectorInput, parseOr400 } from "../control-schemas.ts";
import type { DeadLetters } from "../dead-letters.ts";

/**
 * Single-task control and the dead-letter queue:
 * `POST /v1/tasks/:id/cancel|pause|resume`, `GET /v1/dlq`, `GET /v1/dlq/:id`, `POST /v1/dlq/replay`,
 * `DELETE /v1/dlq/:id`, `DELETE /v1/dlq?type=…|all=true`.
 */
export const controlRoutes: FastifyPluginAsync<{ control: TaskControl; deadLetters: DeadLetters }> = async (
  app,
  { control, deadLetters },
) => {
  // producers may cancel what they enqueued; pausing, resuming and the dead-letter queue are operations
  app.post<{ Params: { id: string } }>(
    "/v1/tasks/:id/cancel",
    { config: { scope: "enqueue" } },
    async (req, reply) => {
      const r = await control.cancel(req.params.id);
      return reply.code(r.cancelRequested ? 202 : 200).send(r);
    },
  );
  app.post<{ Params: { id: string } }>(
    "/v1/tasks/:id/pause",
    { config: { scope: "admin" } },
    async (req, reply) => {
      const r = await control.pause(req.params.id);
      return reply.code(r.pauseRequested ? 202 : 200).send(r);
    },
  );
  app.post<{ Params: { id: string } }>("/v1/tasks/:id/resume", { config: { scope: "admin" } }, async (req) =>
    control.resume(req.params.id),
  );

  app.get("/v1/dlq", { config: { scope: "read" } }, async (req) =>
    deadLetters.list(parseOr400(DeadLetterListQuery, req.query)),
  );
  app.get<{ Params: { id: string } }>("/v1/dlq/:id", { config: { scope: "read" } }, async (req) =>
    deadLetters.get(req.params.id),
  );
  app.post("/v1/dlq/replay", { config: { scope: "admin" } }, async (req) =>
    deadLetters.replay(parseOr400(DeadLetterSelectorInput, req.body)),
  );
  app.delete<{ Params: { id: string } }>("/v1/dlq/:id", { config: { scope: "admin" } }, async (req) =>
    deadLetters.purge({ ids: [req.params.id] }),
  );
  app.delete<{ Querystring: { type?: string; all?: string } }>(
    "/v1/dlq",
    { config: { scope: "admin" } },
    async (req) =>
      deadLetters.purge(
        parseOr400(DeadLetterSelectorInput, {
          ...(req.query.type !== undefined ? { type: req.query.type } : {}),
          ...(req.query.all === "true" ? { all: true } : {}),
        }),
      ),
  );
};
