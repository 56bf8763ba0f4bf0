import { z } from "zod";
import { ErrorCodes, ValidationError } from "../../../shared/errors.ts";
import { priorityFromLegacy } from "../../../shared/priority.ts";
import {
  depthExceeds,
  MAX_DEPTH,
  type TaskInput,
  type TaskState,
  type TaskStatus,
  TaskType,
} from "../../../shared/task.ts";

/**
 * The API the predecessor (a FastAPI worker) offered, which existing callers still use:
 * `POST /tasks/enqueue`, `GET /tasks/:task_id`. Shapes are field-for-field those of its README
 * (docs/api.md, "Compatibility"); only the mapping lives here.
 */

/** The legacy enqueue body. Unknown fields are ignored, as pydantic did. */
export const LegacyEnqueue = z.object({
  task_type: TaskType,
  task_data: z.json().optional(),
  /** 1–10, smaller is more urgent (default 5); numeric strings are accepted, as pydantic coerced them. */
  priority: z.coerce.number().int().min(1).max(10).default(5),
});

/** The legacy status vocabulary. */
export type LegacyStatus = "pending" | "processing" | "completed" | "failed";

/** What `GET /tasks/:task_id` answers. */
export type LegacyTask = {
  task_id: string;
  task_type: string;
  status: LegacyStatus;
  enqueued_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  result: unknown;
  error: string | null;
};

/** The message of the legacy enqueue reply, verbatim ("task queued"): callers may show or compare it. */
export const LEGACY_ENQUEUED_MESSAGE = "任务已入队";

/** Validate a legacy body into a v1 task input. 400 with the failing fields. */
export function legacyToInput(body: unknown): TaskInput {
  // before zod: its z.json() recurses, and thousands of levels overflow the stack (a 500, and it leaks)
  if (depthExceeds(body, MAX_DEPTH)) {
    throw new ValidationError(ErrorCodes.invalidRequest, `body nests deeper than ${MAX_DEPTH} levels`);
  }
  const r = LegacyEnqueue.safeParse(body);
  if (!r.success) {
    const errors = r.error.issues
      .slice(0, 20)
      .map((i) => ({ path: i.path.map(String).join("."), message: i.message }));
    const only = new Set(errors.map((e) => e.path.split(".")[0]));
    const code =
      only.size === 1 && only.has("priority")
        ? ErrorCodes.invalidPriority
        : only.size === 1 && only.has("task_type")
          ? ErrorCodes.invalidTaskType
          : ErrorCodes.invalidRequest;
    throw new ValidationError(code, errors.map((e) => `${e.path}: ${e.message}`).join("; "), errors);
  }
  return {
    type: r.data.task_type,
    payload: r.data.task_data ?? {},
    priority: priorityFromLegacy(r.data.priority)!,
  };
}

/** Our statuses folded onto the legacy four: waiting in any form is pending, every unsuccessful end is failed. */
export function legacyStatus(s: TaskStatus): LegacyStatus {
  switch (s) {
    case "running":
    case "dispatched":
      return "processing";
    case "completed":
      return "completed";
    case "failed":
    case "timed_out":
    case "cancelled":
    case "dead":
      return "failed";
    default:
      return "pending";
  }
}

const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString());

/** A state record in the legacy shape. */
export function legacyTask(s: TaskState): LegacyTask {
  const status = legacyStatus(s.status);
  return {
    task_id: s.id,
    task_type: s.type,
    status,
    enqueued_at: iso(s.enqueuedAt),
    started_at: iso(s.startedAt),
    completed_at: status === "completed" || status === "failed" ? iso(s.finishedAt ?? s.updatedAt) : null,
    result: s.result ?? null,
    error: s.error ? s.error.message : null,
  };
}
