import type { z } from "zod";
import type { PayloadOf, ResultOf, TaskDefinition } from "../services/worker/sdk.ts";
import type { Priority } from "../shared/priority.ts";
import type { Backoff, TaskState, TaskStatus } from "../shared/task.ts";

/**
 * The client's public types. Task types are described by a map from type name to the very
 * `defineTask` definition the workers use (`{ "doc.chunk": typeof docChunk }`), or to a plain
 * `{ payload; result }` shape; payloads and results are inferred from it.
 */

export type { Priority, TaskStatus };

/** Type name → definition (or `{payload, result}`). The default accepts any type with unknown payloads. */
export type TaskTypes = Record<string, unknown>;

/** The payload a type takes. */
export type PayloadFor<D> =
  D extends TaskDefinition<z.ZodType, unknown> ? PayloadOf<D> : D extends { payload: infer P } ? P : unknown;

/** The result a type's handler returns. */
export type ResultFor<D> =
  D extends TaskDefinition<z.ZodType, unknown> ? ResultOf<D> : D extends { result: infer R } ? R : unknown;

/** Names of the types a client knows (any string when it knows none). */
export type TypeName<M extends TaskTypes> = string extends keyof M ? string : keyof M & string;

/** Per-task options of an enqueue (the fields of `POST /v1/tasks` besides type and payload). */
export type EnqueueOptions = {
  /** `urgent|high|normal|low|bulk` or 1–5 (1 = urgent); default normal. */
  priority?: Priority | 1 | 2 | 3 | 4 | 5;
  /** A repeat with the same key (per type) returns the original task instead of a new one. */
  idempotencyKey?: string;
  /** Timeout of one attempt, ms. */
  timeoutMs?: number;
  maxAttempts?: number;
  backoff?: Backoff;
  /** Run no earlier than this many ms from now. */
  delayMs?: number;
  /** Run no earlier than this time (Date, ISO string or epoch ms). */
  runAt?: Date | string | number;
  /** Fairness key (a tenant, a user). */
  concurrencyKey?: string;
};

/** A task just accepted: its id, status, and its type (which carries the payload/result types). */
export type TaskRef<T extends string = string> = {
  id: string;
  type: T;
  status: TaskStatus;
  duplicate?: true;
};

/** A task's state record, with its result typed. */
export type Task<R = unknown> = Omit<TaskState, "result" | "task" | "checkpoint"> & { result?: R };

/** One change of a task: `id` is the state revision (resume after it), `event` the status or `deleted`. */
export type TaskEvent = { id: number; event: TaskStatus | "deleted"; task: Task };

/** What `events()` follows: one task, or every task matching a filter. `after` resumes after an event id. */
export type EventsTarget =
  | { task: string; after?: number }
  | { type?: string | string[]; status?: TaskStatus | TaskStatus[]; after?: number };

/** One item of a batch. */
export type BatchItem<M extends TaskTypes> = {
  [T in TypeName<M>]: { type: T; payload: PayloadFor<M[T]> } & EnqueueOptions;
}[TypeName<M>];

/** What a batch answers: every item's outcome, in order (202: all stored; 207: some). */
export type BatchResult = {
  status: number;
  results: (
    | { index: number; id: string; status: TaskStatus; duplicate?: true }
    | { index: number; error: { status: number; code: string; message: string } }
  )[];
};

/** A page of `list()`. */
export type TaskPage = {
  tasks: (Task & { revision: number })[];
  cursor?: string;
  revision: number;
  scanned: number;
};

/** `list()` filters. */
export type ListQuery = {
  type?: string | string[];
  status?: TaskStatus | TaskStatus[];
  limit?: number;
  cursor?: string;
};

/** Live workers and capacity per type. */
export type Workers = {
  workers: {
    id: string;
    hostname: string;
    pid: number;
    version: string;
    state: "running" | "draining";
    live: boolean;
    heartbeatAt: number;
    heartbeatAgeMs: number;
    slots: number;
    busy: number;
    types: Record<string, { slots: number; busy: number }>;
  }[];
  types: Record<string, { workers: number; slots: number; busy: number }>;
};

/** Selects dead letters for replay and purge. */
export type DlqSelector = { ids?: string[]; type?: string; all?: boolean; limit?: number };

/** Operations a transport carries (one per API endpoint). */
export type Op =
  | "enqueue"
  | "batch"
  | "get"
  | "list"
  | "cancel"
  | "pause"
  | "resume"
  | "retry"
  | "workers"
  | "queues.list"
  | "queues.get"
  | "queues.patch"
  | "queues.pause"
  | "queues.resume"
  | "dlq.list"
  | "dlq.get"
  | "dlq.replay"
  | "dlq.purge"
  | "schedules.list"
  | "schedules.get"
  | "schedules.create"
  | "schedules.pause"
  | "schedules.resume"
  | "schedules.delete";

/** How a client talks to Sluice: HTTP or NATS. */
export type Transport = {
  request(op: Op, body: Record<string, unknown>): Promise<unknown>;
  events(target: EventsTarget, signal: AbortSignal): AsyncIterable<TaskEvent>;
  close(): Promise<void>;
};
