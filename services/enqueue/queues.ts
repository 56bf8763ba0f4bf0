import { type KV, Kvm } from "@nats-io/kv";
import { ErrorCodes, QueueFullError, ValidationError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import { type QueueConfig, QueueConfigs, QueuePatch, updateQueueConfig } from "../../shared/queues.ts";
import { TaskType } from "../../shared/task.ts";
import type { Session, SessionSource } from "./link.ts";
import { listQueueViews, type QueueView, queueView, typeDepth } from "./queue-views.ts";

export type { QueueView } from "./queue-views.ts";

/** Where the queue control gets NATS: a request's session, and the first one (NatsLink is both). */
export type QueueLink = SessionSource & { whenSession(): Promise<Session> };

/** How long a depth reading serves admission checks, ms (the issue's bound: never per enqueue). */
export const DEPTH_CACHE_MS = 500;
/** Retry-After of a 429, s: about one cache period plus a dispatch round, rounded up. */
const QUEUE_FULL_RETRY_AFTER_S = 1;

type DepthReading = { at: number; depth: number; acceptedSince: number };

/**
 * Queue configuration on the gateway: views and changes for `/v1/queues` and `<prefix>.api.queues.*`,
 * and the max-depth admission check on enqueue. Configs come from a watch on the queues bucket (a
 * PATCH through any replica reaches every replica within a round trip); depths from stream info,
 * cached per type for {@link DEPTH_CACHE_MS}.
 */
export class QueueControl {
  readonly #link: QueueLink;
  readonly #names: Names;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #depths = new Map<string, DepthReading>();
  readonly #reading = new Map<string, Promise<DepthReading>>();
  #kv: KV | undefined;
  #configs: QueueConfigs | undefined;
  #loading: Promise<void> | undefined;
  #stopped = false;

  constructor(o: { link: QueueLink; names: Names; log: Logger; now?: () => number }) {
    this.#link = o.link;
    this.#names = o.names;
    this.#log = o.log;
    this.#now = o.now ?? Date.now;
  }

  /** Open the queues bucket once NATS is there and keep the configs current; resolves when loaded. */
  start(): Promise<void> {
    this.#loading ??= this.#link.whenSession().then(async (s: Session) => {
      const kv = await new Kvm(s.nc).open(this.#names.queuesBucket);
      const configs = new QueueConfigs(kv, { log: this.#log });
      await configs.start();
      if (this.#stopped) {
        configs.stop();
        return;
      }
      this.#kv = kv;
      this.#configs = configs;
    });
    const loading = this.#loading;
    // a failed open (bucket missing while the topology is being re-created) is tried again next time
    loading.catch(() => {
      if (this.#loading === loading) this.#loading = undefined;
    });
    return loading;
  }

  /** Stop watching. */
  stop(): void {
    this.#stopped = true;
    this.#configs?.stop();
  }

  /** The config in force for a type (waits for the first load). */
  async config(type: string): Promise<QueueConfig> {
    return (await this.#loaded()).get(type);
  }

  /**
   * Refuse an enqueue of `type` with QueueFullError (429) when its queue holds `maxDepth` tasks.
   * Depth is the last reading (≤ 500 ms old) plus what this replica accepted since, so one replica
   * never admits past the limit; several replicas may each admit up to one reading's worth more.
   */
  async admit(type: string): Promise<void> {
    let configs = this.#configs;
    if (!configs) {
      this.#link.session(); // 503 while NATS is away, as the publish would
      try {
        configs = await this.#loaded();
      } catch (err) {
        this.#log.warn(
          { err: String(err) },
          "queue configs not loaded; enqueue admitted without a depth check",
        );
        return;
      }
    }
    const max = configs.get(type).maxDepth;
    if (max === undefined) return;
    let r: DepthReading;
    try {
      r = await this.#depthReading(type);
    } catch (err) {
      // no reading (NATS trouble): the publish that follows fails on its own if NATS is really gone
      this.#log.warn({ err: String(err), type }, "queue depth unknown; enqueue admitted");
      return;
    }
    const depth = r.depth + r.acceptedSince;
    if (depth >= max) {
      throw new QueueFullError(`queue ${type} holds ${depth} tasks (maxDepth ${max}); retry later`, {
        retryAfterS: QUEUE_FULL_RETRY_AFTER_S,
      });
    }
    r.acceptedSince++;
  }

  /** Every known queue: configured, served by a worker (has consumers), or holding tasks. */
  async list(): Promise<{ queues: QueueView[] }> {
    const configs = await this.#loaded();
    return { queues: await listQueueViews(this.#link.session().jsm, this.#names, configs) };
  }

  /** One type's queue (any valid type name has one; unconfigured and empty it shows the defaults). */
  async get(type: string): Promise<QueueView> {
    checkType(type);
    const configs = await this.#loaded();
    return queueView(this.#link.session().jsm, this.#names, type, configs.get(type));
  }

  /**
   * Apply a merge patch (`null` removes a limit); 400 on unknown fields or bad values. Answers once
   * this replica's watch holds the write, so a GET after the answer reads it.
   */
  async patch(type: string, body: unknown): Promise<{ type: string; config: QueueConfig }> {
    checkType(type);
    const patch = parsePatch(body);
    const configs = await this.#loaded();
    const { config, revision } = await updateQueueConfig(this.#kv!, type, patch, this.#now);
    await configs.caughtUp(revision);
    return { type, config };
  }

  /** Stop dispatching the type; enqueue still accepts, running tasks finish. */
  pause(type: string): Promise<{ type: string; config: QueueConfig }> {
    return this.patch(type, { paused: true });
  }

  /** Dispatch the type again, highest priority first. */
  resume(type: string): Promise<{ type: string; config: QueueConfig }> {
    return this.patch(type, { paused: false });
  }

  async #loaded(): Promise<QueueConfigs> {
    if (this.#configs) return this.#configs;
    this.#link.session(); // 503 now rather than waiting while NATS is away
    await this.start();
    return this.#configs!;
  }

  #depthReading(type: string): Promise<DepthReading> {
    const r = this.#depths.get(type);
    if (r && this.#now() - r.at < DEPTH_CACHE_MS) return Promise.resolve(r);
    let p = this.#reading.get(type);
    if (!p) {
      p = typeDepth(this.#link.session().jsm, this.#names, type)
        .then((depth) => {
          const fresh = { at: this.#now(), depth, acceptedSince: 0 };
          this.#depths.set(type, fresh);
          return fresh;
        })
        .finally(() => this.#reading.delete(type));
      this.#reading.set(type, p);
    }
    return p;
  }
}

function checkType(type: string): void {
  const r = TaskType.safeParse(type);
  if (!r.success)
    throw new ValidationError(ErrorCodes.invalidTaskType, r.error.issues[0]?.message ?? "bad type");
}

function parsePatch(body: unknown): QueuePatch {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new ValidationError(ErrorCodes.invalidRequest, "send a JSON object of the fields to change");
  }
  const r = QueuePatch.safeParse(body);
  if (!r.success) {
    const issues = r.error.issues.slice(0, 20).map((i) => ({ path: i.path.join("."), message: i.message }));
    const detail = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
    throw new ValidationError(ErrorCodes.invalidRequest, detail, issues);
  }
  return r.data;
}
