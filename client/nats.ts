import { type KV, Kvm } from "@nats-io/kv";
import { type NatsConnection, NoRespondersError, TimeoutError } from "@nats-io/transport-node";
import {
  type Feed,
  type TaskEvent as FeedEvent,
  watchAll,
  watchTask,
} from "../services/enqueue/events/feed.ts";
import { names as buildNames } from "../shared/names.ts";
import type { TaskStatus } from "../shared/task.ts";
import { SluiceClientError } from "./errors.ts";
import type { Op, Task, TaskEvent, Transport } from "./types.ts";

/** Options of the NATS transport. */
export type NatsOptions = {
  /** A connection the caller owns (the client never closes it). */
  nats: NatsConnection;
  /** The deployment's prefix (SLUICE_PREFIX, default `sluice`). */
  prefix?: string;
  /** How long a request waits for a gateway's reply, ms (default 10000). */
  timeoutMs?: number;
};

/**
 * The NATS transport: requests go to the gateways' request/reply API (`<prefix>.enqueue`,
 * `<prefix>.api.<resource>.<action>`), answered by any gateway replica; events are read straight from
 * the state bucket with a KV watch, the same source the gateways' SSE uses.
 */
export function natsTransport(o: NatsOptions): Transport {
  const n = buildNames(o.prefix ?? "sluice");
  const api = n.apiSubject;
  const subjects: Record<Op, string> = {
    enqueue: n.enqueueSubject,
    batch: api("tasks", "batch"),
    get: api("tasks", "get"),
    list: api("tasks", "list"),
    cancel: api("tasks", "cancel"),
    pause: api("tasks", "pause"),
    resume: api("tasks", "resume"),
    retry: api("tasks", "retry"),
    workers: api("workers", "list"),
    "queues.list": api("queues", "list"),
    "queues.get": api("queues", "get"),
    "queues.patch": api("queues", "patch"),
    "queues.pause": api("queues", "pause"),
    "queues.resume": api("queues", "resume"),
    "dlq.list": api("dlq", "list"),
    "dlq.get": api("dlq", "get"),
    "dlq.replay": api("dlq", "replay"),
    "dlq.purge": api("dlq", "purge"),
    "schedules.list": api("schedules", "list"),
    "schedules.get": api("schedules", "get"),
    "schedules.create": api("schedules", "create"),
    "schedules.pause": api("schedules", "pause"),
    "schedules.resume": api("schedules", "resume"),
    "schedules.delete": api("schedules", "delete"),
  };
  const timeout = o.timeoutMs ?? 10_000;
  let kv: Promise<KV> | undefined;
  const stateKv = () => {
    kv ??= new Kvm(o.nats).open(n.stateBucket).catch((err) => {
      kv = undefined;
      throw err;
    });
    return kv;
  };

  return {
    async request(op, body) {
      const subject = subjects[op];
      let data: unknown;
      try {
        const m = await o.nats.request(subject, JSON.stringify(body), { timeout });
        data = m.data.length === 0 ? {} : m.json();
      } catch (err) {
        if (err instanceof NoRespondersError || (err as Error)?.cause instanceof NoRespondersError) {
          throw new SluiceClientError(503, "unavailable", `no gateway answers on ${subject}`, { cause: err });
        }
        if (err instanceof TimeoutError || (err as Error)?.cause instanceof TimeoutError) {
          throw new SluiceClientError(503, "unavailable", `no reply on ${subject} within ${timeout} ms`, {
            cause: err,
          });
        }
        throw new SluiceClientError(0, "unreachable", `NATS request failed: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const e = (data as { error?: { status: number; code: string; message: string; errors?: unknown } })
        .error;
      if (e) throw new SluiceClientError(e.status, e.code, e.message, { errors: e.errors });
      return data;
    },

    async *events(target, signal) {
      const ch = channel<TaskEvent>();
      const push = (e: FeedEvent) =>
        ch.push(
          e.kind === "state"
            ? { id: e.revision, event: e.state.status, task: strip(e.state) }
            : { id: e.revision, event: "deleted", task: { id: e.id } as Task },
        );
      const store = await stateKv();
      let feed: Feed;
      if ("task" in target) {
        // like the HTTP endpoint: an unknown task is a 404, not an endless wait
        const cur = await store.get(target.task).catch(() => null);
        if (!cur || cur.operation !== "PUT") {
          throw new SluiceClientError(404, "task_not_found", `no task with id ${target.task.slice(0, 64)}`);
        }
        feed = await watchTask(store, target.task, { afterRevision: target.after }, push);
      } else {
        const types = new Set(arr(target.type));
        const statuses = new Set(arr(target.status) as TaskStatus[]);
        feed = await watchAll(
          store,
          {
            afterRevision: target.after,
            accept: (s) =>
              (types.size === 0 || types.has(s.type)) && (statuses.size === 0 || statuses.has(s.status)),
          },
          push,
        );
      }
      const onAbort = () => feed.stop();
      signal.addEventListener("abort", onAbort, { once: true });
      void feed.ended.then((end) =>
        ch.end(
          end === "failed"
            ? new SluiceClientError(503, "stream_interrupted", "event stream interrupted")
            : undefined,
        ),
      );
      try {
        yield* ch.iterate();
      } finally {
        signal.removeEventListener("abort", onAbort);
        feed.stop();
      }
    },

    async close() {
      // the connection belongs to the caller
    },
  };
}

function arr<T extends string>(v: T | T[] | undefined): T[] {
  return v === undefined ? [] : Array.isArray(v) ? v : [v];
}

function strip(s: Task & { task?: unknown; checkpoint?: unknown }): Task {
  const { task: _t, checkpoint: _c, ...rest } = s;
  return rest;
}

/** A push-to-pull queue: the feed pushes, the async iterator pulls. */
function channel<T>() {
  const items: T[] = [];
  let wake: (() => void) | undefined;
  let done = false;
  let failure: unknown;
  return {
    push(v: T) {
      items.push(v);
      wake?.();
    },
    end(err?: unknown) {
      done = true;
      failure = err;
      wake?.();
    },
    async *iterate(): AsyncGenerator<T> {
      for (;;) {
        if (items.length > 0) {
          yield items.shift()!;
          continue;
        }
        if (done) {
          if (failure) throw failure;
          return;
        }
        await new Promise<void>((r) => {
          wake = r;
        });
        wake = undefined;
      }
    },
  };
}
