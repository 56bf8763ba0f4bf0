import { z } from "zod";
import { TaskInput } from "../../../shared/task.ts";
import type { OperationDoc } from "./openapi.ts";
import * as S from "./schemas.ts";

/**
 * OpenAPI descriptions of the gateway's routes, by `METHOD fastify-url`. Routes added elsewhere may
 * carry their own in `config.openapi` instead.
 */

/** Schemas that get a readable component name: [schema, name, request or response side]. */
export const NAMED_SCHEMAS: [z.ZodType, string, "input" | "output"][] = [
  [TaskInput, "TaskInput", "input"],
  [S.BatchBody, "BatchBody", "input"],
  [S.LegacyEnqueueBody, "LegacyEnqueueBody", "input"],
  [S.Problem, "Problem", "output"],
  [S.EnqueueResult, "EnqueueResult", "output"],
  [S.TaskState, "TaskState", "output"],
  [S.BatchResult, "BatchResult", "output"],
  [S.TaskPage, "TaskPage", "output"],
  [S.RetryResult, "RetryResult", "output"],
  [S.Workers, "Workers", "output"],
  [S.AppwriteResult, "AppwriteResult", "output"],
  [S.LegacyEnqueueResult, "LegacyEnqueueResult", "output"],
  [S.LegacyTask, "LegacyTask", "output"],
  [S.LegacyQueueStats, "LegacyQueueStats", "output"],
  [S.LegacyWorkerTypes, "LegacyWorkerTypes", "output"],
  [S.LegacyPoolStats, "LegacyPoolStats", "output"],
];

const id = { id: "task id" };
const sse = "text/event-stream";
const WaitQuery = z.object({
  wait: z
    .string()
    .optional()
    .describe("wait up to this long for the result (e.g. 30s, 500ms); capped at WAIT_MAX_MS"),
});

export const KNOWN_OPERATIONS: Record<string, OperationDoc> = {
  "POST /v1/tasks": {
    tag: "tasks",
    summary: "Enqueue a task",
    description:
      "Stores the task and answers 202 with its id. With `?wait=30s` the request waits for the task to finish and " +
      "answers 200 with its final record, or 202 as usual when it is not done in time.",
    query: WaitQuery,
    body: TaskInput,
    responses: {
      200: { description: "finished within ?wait (final record)", schema: S.TaskState },
      202: { description: "stored (Location: /v1/tasks/{id})", schema: S.EnqueueResult },
    },
    errors: [400, 413, 415, 429, 503],
  },
  "POST /v1/tasks::batch": {
    tag: "tasks",
    summary: "Enqueue up to 1,000 tasks",
    description:
      "All-or-nothing validation: one invalid task refuses the batch (400/413, per-item errors, nothing stored). " +
      "Then every task is stored: 202 when all were, 207 with per-item results when only some were; when none " +
      "could be, the first item's error (503, 429).",
    body: S.BatchBody,
    responses: {
      202: { description: "every task stored", schema: S.BatchResult },
      207: { description: "some tasks stored", schema: S.BatchResult },
    },
    errors: [400, 413, 415, 429, 503],
  },
  "GET /v1/tasks": {
    tag: "tasks",
    summary: "Recent tasks, newest change first",
    description:
      "Reads backwards from the newest state records, at most LIST_SCAN_MAX records per page; answers a cursor " +
      "when older records remain (a page may hold fewer than `limit` tasks when the filter is selective).",
    query: S.ListQuery,
    responses: { 200: { description: "a page", schema: S.TaskPage } },
    errors: [400, 503],
  },
  "GET /v1/tasks/:id": {
    tag: "tasks",
    summary: "A task's state record",
    params: id,
    responses: { 200: { description: "the record", schema: S.TaskState } },
    errors: [404, 503],
  },
  "POST /v1/tasks/:id/retry": {
    tag: "tasks",
    summary: "Retry a finished task as a new one",
    description:
      "For failed, dead, cancelled and timed_out tasks whose record keeps the task message: enqueues a copy " +
      "(new id, `replayOf` = this id). Repeating the call answers the same retry (`duplicate: true`).",
    params: id,
    responses: { 202: { description: "the new task (Location)", schema: S.RetryResult } },
    errors: [404, 409, 503],
  },
  "GET /v1/tasks/:id/events": {
    tag: "events",
    summary: "Follow one task (Server-Sent Events)",
    description:
      "The current record first, then every change (progress included), ending after a final status. " +
      "Event id = state revision; reconnect with Last-Event-ID to resume.",
    params: id,
    query: S.EventsQuery.pick({ access_token: true }),
    responses: { 200: { description: "event stream", type: sse, schema: S.TaskEvent } },
    errors: [400, 404, 429, 503],
  },
  "GET /v1/events": {
    tag: "events",
    summary: "Every task's changes, filtered (Server-Sent Events)",
    description: "New changes only, or everything after Last-Event-ID. Records carry no `result`.",
    query: S.EventsQuery,
    responses: { 200: { description: "event stream", type: sse, schema: S.TaskEvent } },
    errors: [400, 429, 503],
  },
  "GET /v1/ws": {
    tag: "events",
    summary: "The same events over a WebSocket",
    description:
      "Messages are JSON `{id, event, data}` as in the SSE streams. `?task=<id>` follows one task, else " +
      "`type`/`status` filter the firehose; `lastEventId` resumes.",
    query: S.WsQuery,
    responses: { 101: { description: "switching protocols" } },
    errors: [400, 404, 426, 429, 503],
  },
  "GET /v1/workers": {
    tag: "workers",
    summary: "Live workers, their types, slots and heartbeats",
    query: z.object({
      all: z.enum(["true", "false"]).optional().describe("include stale and draining workers"),
    }),
    responses: { 200: { description: "workers", schema: S.Workers } },
    errors: [503],
  },
  "POST /v1/appwrite/webhooks/:name": {
    tag: "appwrite",
    summary: "Receive an Appwrite webhook",
    description:
      "Verifies X-Appwrite-Webhook-Signature over the raw body, maps the events to tasks by the webhook's " +
      "rules and answers 202 once they are stored (200 when no rule matches). No API key.",
    params: { name: "webhook name (APPWRITE_WEBHOOKS)" },
    body: z.unknown(),
    responses: {
      200: { description: "no rule matched", schema: S.AppwriteResult },
      202: { description: "tasks stored", schema: S.AppwriteResult },
    },
    errors: [400, 401, 404, 413, 503],
  },
  "POST /tasks/enqueue": {
    tag: "compatibility",
    summary: "Legacy enqueue (priority 1-10, smaller is more urgent)",
    body: S.LegacyEnqueueBody,
    responses: { 202: { description: "stored", schema: S.LegacyEnqueueResult } },
    errors: [400, 413, 415, 429, 503],
  },
  "GET /tasks/:task_id": {
    tag: "compatibility",
    summary: "Legacy task status",
    params: { task_id: "task id" },
    responses: { 200: { description: "the task", schema: S.LegacyTask } },
    errors: [404, 503],
  },
  "GET /queue/stats": {
    tag: "compatibility",
    summary: "Legacy queue stats (finished counts since this gateway started)",
    responses: { 200: { description: "stats", schema: S.LegacyQueueStats } },
    errors: [503],
  },
  "GET /workers/types": {
    tag: "compatibility",
    summary: "Legacy worker types and total concurrency",
    responses: { 200: { description: "types", schema: S.LegacyWorkerTypes } },
    errors: [503],
  },
  "GET /api/queue/stats": {
    tag: "compatibility",
    summary: "Legacy worker-pool stats",
    responses: { 200: { description: "stats", schema: S.LegacyPoolStats } },
    errors: [503],
  },
  "GET /healthz": {
    tag: "operations",
    summary: "Liveness",
    responses: { 200: { description: "the process is alive" } },
  },
  "GET /readyz": {
    tag: "operations",
    summary: "Readiness: NATS connected and the streams present",
    responses: { 200: { description: "ready" } },
    errors: [503],
  },
  "GET /metrics": {
    tag: "operations",
    summary: "Prometheus metrics",
    responses: { 200: { description: "text exposition format", type: "text/plain" } },
  },
  "GET /openapi.json": {
    tag: "operations",
    summary: "This document",
    responses: { 200: { description: "OpenAPI 3.1" } },
  },
  "GET /docs": {
    tag: "operations",
    summary: "Interactive API page",
    responses: { 200: { description: "HTML", type: "text/html" } },
  },
};
