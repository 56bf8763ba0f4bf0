import { z } from "zod";
import { PRIORITIES } from "../../../shared/priority.ts";
import { TASK_STATUSES, TaskInput } from "../../../shared/task.ts";
import { SCOPES } from "../auth/keys.ts";
import { BATCH_MAX } from "../batch.ts";
import { LegacyEnqueue } from "../compat/legacy.ts";
import { LIST_LIMIT_MAX } from "../list.ts";

/**
 * zod schemas of the gateway's responses (requests reuse the schemas that validate them, e.g.
 * `TaskInput`). They describe the API in /openapi.json; the code that builds the responses is typed
 * by the TypeScript types in shared/ and services/enqueue/, which these mirror.
 */

const ms = (d: string) => z.number().int().describe(`${d}, epoch ms`);

export const Problem = z
  .object({
    type: z.string().describe("urn:sluice:problem:<code>"),
    title: z.string(),
    status: z.number().int(),
    code: z.string().describe("stable machine-readable error code"),
    detail: z.string(),
    errors: z.unknown().optional().describe("per-field or per-item problems"),
  })
  .describe("RFC 9457 problem (application/problem+json)");

export const Status = z.enum(TASK_STATUSES);

export const EnqueueResult = z.object({
  id: z.string(),
  status: Status,
  duplicate: z.literal(true).optional().describe("an idempotency key matched an earlier task"),
});

export const TaskState = z
  .looseObject({
    id: z.string(),
    type: z.string(),
    priority: z.enum(PRIORITIES),
    status: Status,
    attempts: z.number().int(),
    maxAttempts: z.number().int().optional(),
    timeoutMs: z.number().int().optional(),
    idempotencyKey: z.string().optional(),
    enqueuedAt: ms("accepted"),
    dispatchedAt: ms("dispatched").optional(),
    startedAt: ms("started").optional(),
    finishedAt: ms("finished").optional(),
    updatedAt: ms("last change"),
    workerId: z.string().optional(),
    progress: z.object({ percent: z.number(), message: z.string().optional() }).optional(),
    result: z.unknown().optional(),
    error: z.object({ code: z.string(), message: z.string() }).optional(),
    concurrencyKey: z.string().optional(),
    runAt: ms("due").optional(),
    replayOf: z.string().optional(),
    replayedBy: z.string().optional(),
  })
  .describe("a task's state record");

export const TaskEvent = TaskState.describe(
  "SSE: `id:` the revision, `event:` the status (or `deleted`), `data:` the record without internal fields (and without `result` on /v1/events)",
);

export const BatchBody = z.strictObject({ tasks: z.array(TaskInput).min(1).max(BATCH_MAX) });

export const BatchResult = z.object({
  results: z.array(
    z.union([
      EnqueueResult.extend({ index: z.number().int() }),
      z.object({
        index: z.number().int(),
        error: z.object({ status: z.number().int(), code: z.string(), message: z.string() }),
      }),
    ]),
  ),
});

export const ListQuery = z.object({
  type: z.string().optional().describe("task type(s), comma-separated"),
  status: z.string().optional().describe("status(es), comma-separated"),
  limit: z.coerce.number().int().min(1).max(LIST_LIMIT_MAX).optional().describe("default 50"),
  cursor: z.string().optional().describe("from the previous page"),
});

export const TaskPage = z.object({
  tasks: z.array(TaskState.extend({ revision: z.number().int() })),
  cursor: z.string().optional().describe("present when older records remain"),
  revision: z.number().int().describe("the bucket's last revision when read: resume /v1/events from it"),
  scanned: z.number().int(),
});

export const RetryResult = z.object({
  id: z.string(),
  status: Status,
  replayOf: z.string(),
  duplicate: z.literal(true).optional().describe("this task was retried before; this is that retry"),
});

export const Workers = z.object({
  workers: z.array(
    z.looseObject({
      id: z.string(),
      hostname: z.string(),
      pid: z.number().int(),
      version: z.string(),
      state: z.enum(["running", "draining"]),
      startedAt: ms("started"),
      heartbeatAt: ms("last heartbeat"),
      heartbeatAgeMs: z.number().int(),
      live: z.boolean(),
      slots: z.number().int(),
      busy: z.number().int(),
      types: z.record(z.string(), z.object({ slots: z.number().int(), busy: z.number().int() })),
    }),
  ),
  types: z.record(
    z.string(),
    z.object({ workers: z.number().int(), slots: z.number().int(), busy: z.number().int() }),
  ),
});

export const EventsQuery = z.object({
  type: z.string().optional().describe("task type(s), comma-separated"),
  status: z.string().optional().describe("status(es), comma-separated"),
  access_token: z.string().optional().describe("API key, for clients that cannot send headers"),
});

export const WsQuery = EventsQuery.extend({
  task: z.string().optional().describe("follow one task (else the filtered firehose)"),
  lastEventId: z.string().optional().describe("resume after this event id"),
});

export const AppwriteResult = z.object({
  tasks: z.array(EnqueueResult.extend({ type: z.string() })),
  detail: z.string().optional(),
});

export const LegacyEnqueueBody = LegacyEnqueue;

export const LegacyEnqueueResult = z.object({
  task_id: z.string(),
  status: z.enum(["pending", "processing", "completed", "failed"]),
  message: z.string(),
});

export const LegacyTask = z.object({
  task_id: z.string(),
  task_type: z.string(),
  status: z.enum(["pending", "processing", "completed", "failed"]),
  enqueued_at: z.string().nullable(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  result: z.unknown(),
  error: z.string().nullable(),
});

export const LegacyQueueStats = z.object({
  total: z.number().int(),
  pending: z.number().int(),
  processing: z.number().int(),
  completed: z.number().int(),
  failed: z.number().int(),
});

export const LegacyWorkerTypes = z.object({
  worker_types: z.array(z.string()),
  concurrency: z.number().int(),
});

export const LegacyPoolStats = z.object({
  total_processed: z.number().int(),
  total_success: z.number().int(),
  total_failed: z.number().int(),
  total_timeout: z.number().int(),
  current_processing: z.number().int(),
  queue_size: z.number().int(),
  max_workers: z.number().int(),
  max_queue_size: z.number().int().describe("-1: unbounded"),
  is_running: z.boolean(),
});

export const Scope = z.enum(SCOPES);
