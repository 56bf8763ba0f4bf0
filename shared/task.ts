import { createHash, randomUUID } from "node:crypto";
import { z } from "zod";
import { DEFAULT_PRIORITY, PRIORITIES, type Priority, priorityFromNumber } from "./priority.ts";

/**
 * The task model: what a producer sends, what travels on the streams, and the state record in KV.
 * Wire shapes here are the contract between the three services; change them compatibly.
 */

/** `doc.chunk`, `webhook.deliver`, `noop`: lowercase segments separated by dots, ≤ 64 chars. */
export const TASK_TYPE_RE = /^[a-z0-9][a-z0-9_-]*(\.[a-z0-9_-]+)*$/;
export const TASK_TYPE_MAX = 64;

export const TaskType = z
  .string()
  .max(TASK_TYPE_MAX, { message: `type must be at most ${TASK_TYPE_MAX} characters` })
  .regex(TASK_TYPE_RE, { message: "type must match [a-z0-9][a-z0-9_-]*(.[a-z0-9_-]+)*" });

/** `urgent|high|normal|low|bulk`, or 1–5 with 1 = urgent. */
export const PriorityInput = z.union([
  z.enum(PRIORITIES),
  z
    .number()
    .int()
    .min(1)
    .max(5)
    .transform((n) => priorityFromNumber(n) as Priority),
]);

/** Statuses of the task state machine; see docs/architecture.md for the transitions. */
export const TASK_STATUSES = [
  "queued",
  "scheduled",
  "dispatched",
  "running",
  "retrying",
  "paused",
  "completed",
  "failed",
  "timed_out",
  "cancelled",
  "dead",
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

/** Statuses after which nothing more happens to a task. */
export const FINAL_STATUSES: ReadonlySet<TaskStatus> = new Set([
  "completed",
  "failed",
  "timed_out",
  "cancelled",
  "dead",
]);

/** True when `s` is final. */
export function isFinal(s: TaskStatus): boolean {
  return FINAL_STATUSES.has(s);
}

/** Limits on what a caller may set per task. */
export const MAX_TIMEOUT_MS = 24 * 60 * 60 * 1000;
export const MAX_ATTEMPTS = 100;
export const IDEMPOTENCY_KEY_MAX = 256;

/** Longest delay a task may be scheduled ahead: 30 days. */
export const MAX_DELAY_MS = 30 * 24 * 60 * 60 * 1000;
export const CONCURRENCY_KEY_MAX = 128;

/** Retry backoff: `fixed` waits `delayMs` every time; `exponential` doubles it per attempt up to `maxDelayMs`, with jitter. */
export const Backoff = z.strictObject({
  type: z.enum(["fixed", "exponential"]),
  /** First (or every, for fixed) wait, ms. */
  delayMs: z.number().int().min(0).max(MAX_DELAY_MS),
  /** Cap of an exponential wait, ms (default 1 h). */
  maxDelayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional(),
  /** Random spread, 0–1, applied as ±jitter/2 of the wait (default 0.2 for exponential, 0 for fixed). */
  jitter: z.number().min(0).max(1).optional(),
});
export type Backoff = z.output<typeof Backoff>;

/** Body of `POST /v1/tasks` and of a `<prefix>.enqueue` request. */
export const TaskInput = z.strictObject({
  type: TaskType,
  payload: z.json().optional(),
  priority: PriorityInput.optional(),
  idempotencyKey: z.string().min(1).max(IDEMPOTENCY_KEY_MAX).optional(),
  timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).optional(),
  maxAttempts: z.number().int().min(1).max(MAX_ATTEMPTS).optional(),
  backoff: Backoff.optional(),
  /** Run no earlier than this many ms from now (status `scheduled`; at most 30 days). */
  delayMs: z.number().int().min(0).max(MAX_DELAY_MS).optional(),
  /** Run no earlier than this time (ISO 8601 or epoch ms; at most 30 days ahead). */
  runAt: z.union([z.iso.datetime({ offset: true }), z.number().int().positive()]).optional(),
  /** Fairness key (a tenant, a user): tasks with the same key share a per-key concurrency limit. */
  concurrencyKey: z.string().min(1).max(CONCURRENCY_KEY_MAX).optional(),
});
export type TaskInput = z.input<typeof TaskInput>;

const COMMON_INPUT_KEYS = new Set([
  "type",
  "payload",
  "priority",
  "idempotencyKey",
  "timeoutMs",
  "maxAttempts",
  "concurrencyKey",
]);
const PRIORITY_NAMES: ReadonlySet<string> = new Set(PRIORITIES);

/**
 * {@link TaskInput} for the common shape of a body that came out of `JSON.parse` (no schedule, no
 * backoff), without zod: the same rules and the same output, or undefined when any rule fails or a
 * field outside the common set is present (run the schema then, for its full rules and messages).
 * zod was ~12% of the gateway's CPU at full HTTP rate, most of it walking payloads that `JSON.parse`
 * had just produced and that therefore are JSON.
 */
export function readCommonTaskInput(body: unknown): z.output<typeof TaskInput> | undefined {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return undefined;
  const b = body as Record<string, unknown>;
  for (const k in b) if (!COMMON_INPUT_KEYS.has(k)) return undefined;
  const { type, priority, idempotencyKey, timeoutMs, maxAttempts, concurrencyKey } = b;
  if (typeof type !== "string" || type.length > TASK_TYPE_MAX || !TASK_TYPE_RE.test(type)) return undefined;
  let p: Priority | undefined;
  if (typeof priority === "string") {
    if (!PRIORITY_NAMES.has(priority)) return undefined;
    p = priority as Priority;
  } else if (typeof priority === "number") {
    p = priorityFromNumber(priority);
    if (!p) return undefined;
  } else if (priority !== undefined) return undefined;
  if (!isStringIn(idempotencyKey, IDEMPOTENCY_KEY_MAX)) return undefined;
  if (!isStringIn(concurrencyKey, CONCURRENCY_KEY_MAX)) return undefined;
  if (timeoutMs !== undefined && !isIntIn(timeoutMs, 1, MAX_TIMEOUT_MS)) return undefined;
  if (maxAttempts !== undefined && !isIntIn(maxAttempts, 1, MAX_ATTEMPTS)) return undefined;
  const out: z.output<typeof TaskInput> = { type };
  if ("payload" in b) out.payload = b.payload as z.output<typeof TaskInput>["payload"];
  if (p !== undefined) out.priority = p;
  if (idempotencyKey !== undefined) out.idempotencyKey = idempotencyKey as string;
  if (timeoutMs !== undefined) out.timeoutMs = timeoutMs as number;
  if (maxAttempts !== undefined) out.maxAttempts = maxAttempts as number;
  if (concurrencyKey !== undefined) out.concurrencyKey = concurrencyKey as string;
  return out;
}

/** Absent, or a string of 1 to `max` UTF-16 units (zod's `.min(1).max(max)`). */
function isStringIn(v: unknown, max: number): boolean {
  return v === undefined || (typeof v === "string" && v.length >= 1 && v.length <= max);
}

/**
 * Body of a message published straight to `<prefix>.tasks.<priority>.<type>` by a high-rate producer.
 * Type and priority come from the subject; `id` is optional (derived from the stream sequence).
 */
export const DirectTaskBody = z.strictObject({
  id: z.string().min(1).max(128).optional(),
  payload: z.json().optional(),
  idempotencyKey: z.string().min(1).max(IDEMPOTENCY_KEY_MAX).optional(),
  timeoutMs: z.number().int().min(1).max(MAX_TIMEOUT_MS).optional(),
  maxAttempts: z.number().int().min(1).max(MAX_ATTEMPTS).optional(),
  enqueuedAt: z.number().int().optional(),
});

/** A direct publish's body once checked. */
export type DirectTaskBody = z.infer<typeof DirectTaskBody>;

const DIRECT_KEYS = new Set(["id", "payload", "idempotencyKey", "timeoutMs", "maxAttempts", "enqueuedAt"]);

/**
 * The same rules as {@link DirectTaskBody} for a body that came out of `JSON.parse`, without zod, or
 * undefined when any rule fails (run the schema then, for its messages). The dispatcher reads every
 * direct publish on its hot path, where zod's walk of the payload was ~6% of its CPU and proved
 * nothing: whatever `JSON.parse` returns is JSON.
 */
export function readDirectTaskBody(body: Record<string, unknown>): DirectTaskBody | undefined {
  for (const k in body) if (!DIRECT_KEYS.has(k)) return undefined;
  const { id, idempotencyKey, timeoutMs, maxAttempts, enqueuedAt } = body;
  if (id !== undefined && !(typeof id === "string" && id.length >= 1 && id.length <= 128)) return undefined;
  if (
    idempotencyKey !== undefined &&
    !(
      typeof idempotencyKey === "string" &&
      idempotencyKey.length >= 1 &&
      idempotencyKey.length <= IDEMPOTENCY_KEY_MAX
    )
  )
    return undefined;
  if (timeoutMs !== undefined && !isIntIn(timeoutMs, 1, MAX_TIMEOUT_MS)) return undefined;
  if (maxAttempts !== undefined && !isIntIn(maxAttempts, 1, MAX_ATTEMPTS)) return undefined;
  if (enqueuedAt !== undefined && !Number.isSafeInteger(enqueuedAt)) return undefined;
  return body as DirectTaskBody;
}

const textEncoder = new TextEncoder();
const OPEN_BRACE = 0x7b;

/**
 * The task message of a direct publish, as bytes, built around the bytes it came in: what the stream
 * message lacks (`type` and `priority` always; `id`, `enqueuedAt` and `payload` when absent) goes in
 * front, and the rest is the original JSON, unchanged. Equal, once parsed, to the {@link TaskMessage}
 * of `body` with those fields; the dispatcher hands on every directly published task, and
 * serialising the payload again was a visible share of its CPU. `raw` is the JSON text `body` was
 * parsed from (an object, so its first non-blank byte is `{`), `body` what
 * {@link readDirectTaskBody} accepted of it.
 */
export function directTaskMessageBytes(
  raw: Uint8Array,
  body: DirectTaskBody,
  fill: { id: string; type: string; priority: Priority; enqueuedAt: number },
): Uint8Array {
  let head = `{"type":${JSON.stringify(fill.type)},"priority":"${fill.priority}"`;
  if (body.id === undefined) head += `,"id":${JSON.stringify(fill.id)}`;
  if (body.enqueuedAt === undefined) head += `,"enqueuedAt":${fill.enqueuedAt}`;
  if (body.payload === undefined) head += ',"payload":null';
  let open = 0;
  while (raw[open] !== OPEN_BRACE) open++;
  let empty = true;
  for (const _ in body) {
    empty = false;
    break;
  }
  const prefix = textEncoder.encode(empty ? `${head}}` : `${head},`);
  if (empty) return prefix;
  const rest = raw.subarray(open + 1);
  const out = new Uint8Array(prefix.length + rest.length);
  out.set(prefix);
  out.set(rest, prefix.length);
  return out;
}

function isIntIn(v: unknown, min: number, max: number): boolean {
  return Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
}

/** A task as it travels on the tasks and work streams. */
export type TaskMessage = {
  id: string;
  type: string;
  priority: Priority;
  payload: unknown;
  /** Epoch ms when the gateway accepted it (or the dispatcher first saw a direct publish). */
  enqueuedAt: number;
  idempotencyKey?: string;
  timeoutMs?: number;
  maxAttempts?: number;
  backoff?: Backoff;
  concurrencyKey?: string;
  /** Number of the attempt this message starts: 1 for a new task, n+1 for the retry after attempt n. */
  attempt?: number;
  /** Epoch ms before which it must not run (delayed tasks and retries). */
  runAt?: number;
  /** Id of the dead task this one replays (DLQ replay keeps the history link). */
  replayOf?: string;
  /** Set on a paused task put back by resume: the worker loads its checkpoint. */
  resumed?: boolean;
};

/** A dispatched task on the work stream: the task plus when and by whom it was dispatched. */
export type WorkMessage = TaskMessage & {
  dispatchedAt: number;
};

/** `{code, message}` recorded for a failed task. */
export type TaskError = { code: string; message: string };

/** Progress reported by a handler. */
export type TaskProgress = { percent: number; message?: string };

/** The state record kept in the state bucket under the task id. */
export type TaskState = {
  id: string;
  type: string;
  priority: Priority;
  status: TaskStatus;
  /** Attempts started so far (1 once the first attempt runs). */
  attempts: number;
  maxAttempts?: number;
  timeoutMs?: number;
  idempotencyKey?: string;
  enqueuedAt: number;
  dispatchedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  updatedAt: number;
  workerId?: string;
  progress?: TaskProgress;
  result?: unknown;
  error?: TaskError;
  concurrencyKey?: string;
  /** When a `scheduled` or `retrying` task is due, epoch ms. */
  runAt?: number;
  /** Last checkpoint a handler saved (`ctx.checkpoint`), handed back on resume and retry. */
  checkpoint?: unknown;
  /** The task message, kept while the task is `paused` or `dead` so it can be resumed or replayed. */
  task?: TaskMessage;
  /** Id of the dead task this one replays. */
  replayOf?: string;
  /** Id of the task that replayed this dead one. */
  replayedBy?: string;
  /** Sequence of this task's entry in the dead-letter stream. */
  dlqSeq?: number;
};

/** A new task id: random, URL-safe, sortable enough for humans to tell apart. */
export function newTaskId(): string {
  return randomUUID();
}

/**
 * The task id for an idempotency key: deterministic, so a duplicate enqueue lands on the same state
 * record and `create` (insert-if-absent) settles concurrent duplicates in the server.
 */
export function idForIdempotencyKey(type: string, key: string): string {
  return `k-${createHash("sha256").update(type).update("\0").update(key).digest("base64url").slice(0, 32)}`;
}

/** The task message for validated input. */
export function toTaskMessage(input: z.output<typeof TaskInput>, now: number): TaskMessage {
  const msg: TaskMessage = {
    id: input.idempotencyKey ? idForIdempotencyKey(input.type, input.idempotencyKey) : newTaskId(),
    type: input.type,
    priority: input.priority ?? DEFAULT_PRIORITY,
    payload: input.payload ?? null,
    enqueuedAt: now,
  };
  if (input.idempotencyKey !== undefined) msg.idempotencyKey = input.idempotencyKey;
  if (input.timeoutMs !== undefined) msg.timeoutMs = input.timeoutMs;
  if (input.maxAttempts !== undefined) msg.maxAttempts = input.maxAttempts;
  if (input.backoff !== undefined) msg.backoff = input.backoff;
  if (input.concurrencyKey !== undefined) msg.concurrencyKey = input.concurrencyKey;
  const runAt =
    input.runAt !== undefined
      ? typeof input.runAt === "number"
        ? input.runAt
        : Date.parse(input.runAt)
      : input.delayMs !== undefined
        ? now + input.delayMs
        : undefined;
  if (runAt !== undefined && runAt > now) msg.runAt = runAt;
  return msg;
}

/**
 * True for a `queued` record still exactly as the gateway created it together with its task message:
 * never dispatched, run or retried, and written within a second of `enqueuedAt` (a resumed or handed-back
 * task is written later, under other msg ids). Such a record may be all an interrupted request left:
 * the two go out together and different streams store them.
 */
export function isAsEnqueued(s: TaskState): boolean {
  return (
    s.status === "queued" &&
    s.attempts === 0 &&
    s.startedAt === undefined &&
    s.dispatchedAt === undefined &&
    s.runAt === undefined &&
    s.updatedAt - s.enqueuedAt < 1_000
  );
}

/** The first state record of a task, as the gateway (or the dispatcher, for direct publishes) writes it. */
export function initialState(msg: TaskMessage, status: TaskStatus = "queued"): TaskState {
  const s: TaskState = {
    id: msg.id,
    type: msg.type,
    priority: msg.priority,
    status,
    attempts: 0,
    enqueuedAt: msg.enqueuedAt,
    updatedAt: Date.now(),
  };
  if (msg.maxAttempts !== undefined) s.maxAttempts = msg.maxAttempts;
  if (msg.timeoutMs !== undefined) s.timeoutMs = msg.timeoutMs;
  if (msg.idempotencyKey !== undefined) s.idempotencyKey = msg.idempotencyKey;
  if (msg.concurrencyKey !== undefined) s.concurrencyKey = msg.concurrencyKey;
  if (msg.runAt !== undefined) s.runAt = msg.runAt;
  if (msg.replayOf !== undefined) s.replayOf = msg.replayOf;
  return s;
}

/**
 * Deepest nesting accepted in a request body. Validation, serialization and every worker's parser
 * recurse; a body of a million `[` would otherwise overflow a stack instead of getting a 400.
 */
export const MAX_DEPTH = 256;

/** True when `v` nests arrays/objects deeper than `max`; iterative so it cannot overflow itself. */
export function depthExceeds(v: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length > 0) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== "object") continue;
    if (d >= max) return true;
    for (const c of Array.isArray(x) ? x : Object.values(x)) {
      if (c !== null && typeof c === "object") stack.push([c, d + 1]);
    }
  }
  return false;
}
