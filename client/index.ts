/**
 * The Sluice client library: enqueue, read, wait for and follow tasks, and control queues, dead
 * letters and schedules, over HTTP or NATS, with payload and result types inferred from the workers'
 * `defineTask` definitions. docs/api.md ("Client library") shows it in use.
 */
export {
  type ClientOptions,
  type ControlResult,
  createClient,
  type SluiceClient,
  type WaitOptions,
} from "./client.ts";
export { isClientError, SluiceClientError, TaskFailedError, WaitTimeoutError } from "./errors.ts";
export type { HttpOptions } from "./http.ts";
export type { NatsOptions } from "./nats.ts";
export type {
  BatchItem,
  BatchResult,
  DlqSelector,
  EnqueueOptions,
  EventsTarget,
  ListQuery,
  PayloadFor,
  Priority,
  ResultFor,
  Task,
  TaskEvent,
  TaskPage,
  TaskRef,
  TaskStatus,
  TaskTypes,
  Workers,
} from "./types.ts";
