import { isFinal } from "../shared/task.ts";
import { SluiceClientError, TaskFailedError, WaitTimeoutError } from "./errors.ts";
import { type HttpOptions, httpTransport } from "./http.ts";
import { type NatsOptions, natsTransport } from "./nats.ts";
import type {
  BatchItem,
  BatchResult,
  DlqSelector,
  EnqueueOptions,
  EventsTarget,
  ListQuery,
  PayloadFor,
  ResultFor,
  Task,
  TaskEvent,
  TaskPage,
  TaskRef,
  TaskStatus,
  TaskTypes,
  Transport,
  TypeName,
  Workers,
} from "./types.ts";

/** Options of {@link createClient}: a gateway URL (HTTP) or a NATS connection. */
export type ClientOptions = HttpOptions | NatsOptions;

/** What a single-task control call answers. */
export type ControlResult = { id: string; status: TaskStatus; cancelRequested?: true; pauseRequested?: true };

/** The Sluice client. `M` maps task types to their definitions, typing payloads and results. */
export type SluiceClient<M extends TaskTypes = TaskTypes> = {
  /** Enqueue one task; resolves once it is stored. */
  enqueue<T extends TypeName<M>>(
    type: T,
    payload: PayloadFor<M[T]>,
    opts?: EnqueueOptions,
  ): Promise<TaskRef<T>>;
  /** Enqueue up to 1,000 tasks: all validated first (one invalid refuses all), then each stored. */
  enqueueBatch(items: BatchItem<M>[]): Promise<BatchResult>;
  /** A task's current record. */
  get<T extends TypeName<M>>(task: string | TaskRef<T>): Promise<Task<ResultFor<M[T]>>>;
  /** Wait until a task reaches a final status (completed, failed, …) and return its record. */
  wait<T extends TypeName<M>>(task: string | TaskRef<T>, opts?: WaitOptions): Promise<Task<ResultFor<M[T]>>>;
  /** Enqueue, wait, and return the result; throws TaskFailedError if the task did not complete. */
  run<T extends TypeName<M>>(
    type: T,
    payload: PayloadFor<M[T]>,
    opts?: EnqueueOptions & WaitOptions,
  ): Promise<ResultFor<M[T]>>;
  /**
   * Live changes of one task (ends after its final status) or of every task matching a filter (runs
   * until `signal` aborts). Resumes by itself after an interruption, from the last event seen.
   */
  events(target: string | TaskRef | EventsTarget, opts?: { signal?: AbortSignal }): AsyncIterable<TaskEvent>;
  /** Recent tasks, newest change first. */
  list(query?: ListQuery): Promise<TaskPage>;
  /** Cancel a task (a running one is aborted; 409 once finished). */
  cancel(id: string): Promise<ControlResult>;
  /** Pause a running task at its next checkpoint, and resume it later. */
  pause(id: string): Promise<ControlResult>;
  resume(id: string): Promise<ControlResult>;
  /** Run a failed, dead, cancelled or timed-out task again, as a new task linked to it. */
  retry(id: string): Promise<{ id: string; status: TaskStatus; replayOf: string; duplicate?: true }>;
  /** Live workers (or every registered one with `all`). */
  workers(opts?: { all?: boolean }): Promise<Workers>;
  /** Queues per type: depth, running, limits; change limits, pause and resume types. */
  queues: {
    list(): Promise<unknown>;
    get(type: string): Promise<unknown>;
    patch(type: string, patch: Record<string, unknown>): Promise<unknown>;
    pause(type: string): Promise<unknown>;
    resume(type: string): Promise<unknown>;
  };
  /** The dead-letter queue. */
  dlq: {
    list(query?: { type?: string; limit?: number; cursor?: number }): Promise<unknown>;
    get(id: string): Promise<unknown>;
    replay(selector: DlqSelector): Promise<unknown>;
    purge(selector: DlqSelector): Promise<unknown>;
  };
  /** Recurring schedules. */
  schedules: {
    list(): Promise<unknown>;
    get(name: string): Promise<unknown>;
    create(schedule: Record<string, unknown>): Promise<unknown>;
    pause(name: string): Promise<unknown>;
    resume(name: string): Promise<unknown>;
    delete(name: string): Promise<unknown>;
  };
  /** Release the client's resources (not a NATS connection the caller passed in). */
  close(): Promise<void>;
};

/** Options of `wait` and `run`. */
export type WaitOptions = { timeoutMs?: number; signal?: AbortSignal };

/** Reconnects of one event stream before `events()` gives up. */
const MAX_RESUMES = 20;

/**
 * A client over HTTP (`{url, apiKey}`) or NATS (`{nats, prefix}`):
 *
 * ```ts
 * import type { docChunk } from "./tasks.ts";
 * const sluice = createClient<{ "doc.chunk": typeof docChunk }>({ url: "http://127.0.0.1:8080", apiKey });
 * const ref = await sluice.enqueue("doc.chunk", { text, chunkSize: 500 }, { priority: "high" });
 * const done = await sluice.wait(ref); // done.result is typed as the handler's result
 * ```
 */
export function createClient<M extends TaskTypes = TaskTypes>(o: ClientOptions): SluiceClient<M> {
  const t: Transport = "nats" in o ? natsTransport(o) : httpTransport(o);
  const idOf = (task: string | { id: string }) => (typeof task === "string" ? task : task.id);

  async function* events(target: EventsTarget, signal: AbortSignal): AsyncGenerator<TaskEvent> {
    let after = target.after;
    for (let resumes = 0; ; resumes++) {
      try {
        for await (const e of t.events({ ...target, after }, signal)) {
          after = e.id;
          resumes = 0;
          yield e;
        }
        return;
      } catch (err) {
        if (signal.aborted) return;
        const retryable =
          err instanceof SluiceClientError &&
          (err.code === "stream_interrupted" || err.status === 0 || err.status === 503);
        const midStream = !(err instanceof SluiceClientError) && after !== undefined;
        if ((!retryable && !midStream) || resumes >= MAX_RESUMES) throw err;
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** resumes, 5_000)));
      }
    }
  }

  const client: SluiceClient<M> = {
    async enqueue(type, payload, opts = {}) {
      const body = {
        type,
        payload,
        ...opts,
        ...(opts.runAt instanceof Date ? { runAt: opts.runAt.toISOString() } : {}),
      };
      const r = (await t.request("enqueue", body)) as Omit<TaskRef, "type">;
      return { ...r, type };
    },
    async enqueueBatch(items) {
      const tasks = items.map((i) => (i.runAt instanceof Date ? { ...i, runAt: i.runAt.toISOString() } : i));
      return (await t.request("batch", { tasks })) as BatchResult;
    },
    async get(task) {
      return (await t.request("get", { id: idOf(task) })) as Task<never>;
    },
    async wait(task, opts = {}) {
      const id = idOf(task);
      const ctrl = new AbortController();
      const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => ctrl.abort(), opts.timeoutMs);
      const onAbort = () => ctrl.abort();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const e of events({ task: id }, ctrl.signal)) {
          if (e.event !== "deleted" && isFinal(e.event)) return e.task as Task<never>;
          if (e.event === "deleted")
            throw new SluiceClientError(404, "task_not_found", `task ${id} was removed`);
        }
        if (opts.signal?.aborted) throw opts.signal.reason;
        throw new WaitTimeoutError(id, opts.timeoutMs ?? 0);
      } finally {
        clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
      }
    },
    async run(type, payload, opts = {}) {
      const { timeoutMs, signal, ...enqueueOpts } = opts;
      const ref = await client.enqueue(type, payload, enqueueOpts);
      const done = await client.wait(ref, {
        ...(timeoutMs !== undefined ? { timeoutMs } : {}),
        ...(signal ? { signal } : {}),
      });
      if (done.status !== "completed") throw new TaskFailedError(done.id, done.status, done.error);
      return done.result as ResultFor<M[typeof type]>;
    },
    events(target, opts = {}) {
      const tgt: EventsTarget =
        typeof target === "string" ? { task: target } : "id" in target ? { task: target.id } : target;
      return events(tgt, opts.signal ?? new AbortController().signal);
    },
    async list(query = {}) {
      return (await t.request("list", { ...query })) as TaskPage;
    },
    cancel: async (id) => (await t.request("cancel", { id })) as ControlResult,
    pause: async (id) => (await t.request("pause", { id })) as ControlResult,
    resume: async (id) => (await t.request("resume", { id })) as ControlResult,
    retry: async (id) => (await t.request("retry", { id })) as Awaited<ReturnType<SluiceClient["retry"]>>,
    workers: async (opts = {}) => (await t.request("workers", opts.all ? { all: true } : {})) as Workers,
    queues: {
      list: () => t.request("queues.list", {}),
      get: (type) => t.request("queues.get", { type }),
      patch: (type, patch) => t.request("queues.patch", { ...patch, type }),
      pause: (type) => t.request("queues.pause", { type }),
      resume: (type) => t.request("queues.resume", { type }),
    },
    dlq: {
      list: (query = {}) => t.request("dlq.list", { ...query }),
      get: (id) => t.request("dlq.get", { id }),
      replay: (selector) => t.request("dlq.replay", { ...selector }),
      purge: (selector) => t.request("dlq.purge", { ...selector }),
    },
    schedules: {
      list: () => t.request("schedules.list", {}),
      get: (name) => t.request("schedules.get", { name }),
      create: (schedule) => t.request("schedules.create", schedule),
      pause: (name) => t.request("schedules.pause", { name }),
      resume: (name) => t.request("schedules.resume", { name }),
      delete: (name) => t.request("schedules.delete", { name }),
    },
    close: () => t.close(),
  };
  return client;
}
