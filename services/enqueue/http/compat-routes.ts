import type { FastifyPluginAsync } from "fastify";
import type { Names } from "../../../shared/names.ts";
import { LEGACY_ENQUEUED_MESSAGE, legacyStatus, legacyTask, legacyToInput } from "../compat/legacy.ts";
import type { OutcomeCounters, QueueSnapshots } from "../compat/stats.ts";
import type { Gateway } from "../gateway.ts";
import type { SessionSource } from "../link.ts";

/** What the compatibility routes need. */
export type CompatDeps = {
  gateway: Gateway;
  link: SessionSource;
  names: Names;
  counters: OutcomeCounters;
  snapshots: QueueSnapshots;
  isReady: () => boolean;
};

/**
 * The predecessors' routes, answered in their shapes (docs/api.md, "Compatibility"): the SureUp
 * worker's `/tasks/enqueue`, `/tasks/:task_id`, `/queue/stats`, `/workers/types`, and the worker pool's
 * `/api/queue/stats`. Errors are problem+json like the rest of the API; the legacy servers'
 * `{"detail": …}` reads the same way, since a problem has a `detail` string too.
 */
export const compatRoutes: FastifyPluginAsync<CompatDeps> = async (app, deps) => {
  const { gateway } = deps;

  app.post("/tasks/enqueue", { config: { scope: "enqueue" } }, async (req, reply) => {
    const r = await gateway.enqueue(legacyToInput(req.body ?? {}), { transport: "http" });
    return reply
      .code(202)
      .header("location", `/tasks/${r.id}`)
      .send({
        task_id: r.id,
        status: legacyStatus(r.status),
        message: LEGACY_ENQUEUED_MESSAGE,
      });
  });

  app.get<{ Params: { task_id: string } }>("/tasks/:task_id", async (req) =>
    legacyTask(await gateway.get(req.params.task_id)),
  );

  app.get("/queue/stats", async () => {
    const snap = await deps.snapshots.read(deps.link.session(), deps.names);
    const c = deps.counters.counts;
    const pending = snap.queued + Math.max(0, snap.inWork - snap.busy);
    const failed = c.failed + c.timedOut + c.cancelled + c.dead;
    return {
      total: pending + snap.busy + c.completed + failed,
      pending,
      processing: snap.busy,
      completed: c.completed,
      failed,
    };
  });

  app.get("/workers/types", async () => {
    const snap = await deps.snapshots.read(deps.link.session(), deps.names);
    return { worker_types: snap.types, concurrency: snap.slots };
  });

  app.get("/api/queue/stats", async () => {
    const snap = await deps.snapshots.read(deps.link.session(), deps.names);
    const c = deps.counters.counts;
    const failed = c.failed + c.cancelled + c.dead;
    return {
      total_processed: c.completed + failed + c.timedOut,
      total_success: c.completed,
      total_failed: failed,
      total_timeout: c.timedOut,
      current_processing: snap.busy,
      queue_size: snap.queued + Math.max(0, snap.inWork - snap.busy),
      max_workers: snap.slots,
      max_queue_size: snap.maxQueued,
      is_running: deps.isReady() && snap.liveWorkers > 0,
    };
  });
};
