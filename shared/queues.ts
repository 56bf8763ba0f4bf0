import type { KV, KvWatchEntry } from "@nats-io/kv";
import { z } from "zod";
import type { Logger } from "./logger.ts";
import { Backoff, MAX_ATTEMPTS, TaskType } from "./task.ts";

/**
 * Queue configuration per task type: pause, limits and fairness. Stored as JSON in the `<prefix>-queues`
 * bucket under the type, written by the gateway (`PATCH /v1/queues/:type`), and watched by every
 * dispatcher replica, gateway and worker through {@link QueueConfigs}, so a change reaches all of them
 * within one KV watch round trip. docs/architecture.md, "Limits, fairness and pausing", says what each
 * field does.
 */

const DAY_MS = 24 * 60 * 60 * 1000;

/** At most `max` dispatches in any window of `intervalMs`. */
export const RateLimit = z.strictObject({
  /** Dispatches allowed per window (1–100,000). */
  max: z.number().int().min(1).max(100_000),
  /** Window length, ms (10 ms – 24 h). */
  intervalMs: z.number().int().min(10).max(DAY_MS),
});
export type RateLimit = z.output<typeof RateLimit>;

/** Aging of waiting tasks: every `afterMs` a held task waits, it counts as one priority level higher. */
export const Aging = z.strictObject({
  /** Wait per level of promotion, ms (10 ms – 24 h). */
  afterMs: z.number().int().min(10).max(DAY_MS),
});
export type Aging = z.output<typeof Aging>;

const limits = {
  /** Most tasks of the type running at once across every worker. */
  concurrency: z.number().int().min(1).max(1_000_000),
  rateLimit: RateLimit,
  /**
   * Most tasks accepted and not finished (all priorities: waiting, held by the dispatcher or running,
   * the type's messages in the tasks stream); beyond it enqueue answers 429.
   */
  maxDepth: z.number().int().min(0).max(1_000_000_000),
  /** Most tasks of one concurrencyKey running at once. */
  keyConcurrency: z.number().int().min(1).max(1_000_000),
  aging: Aging,
  /** Type-level override of the definition's attempts (a task's own maxAttempts still wins). */
  maxAttempts: z.number().int().min(1).max(MAX_ATTEMPTS),
  /** Type-level override of the definition's backoff (a task's own backoff still wins). */
  backoff: Backoff,
};

/**
 * A stored queue config. Read leniently (unknown fields from a newer version are dropped, not fatal);
 * every limit is optional and absent means "no limit".
 */
export const QueueConfig = z.object({
  /** No dispatching while true; enqueue still accepts. */
  paused: z.boolean().default(false),
  concurrency: limits.concurrency.optional(),
  rateLimit: limits.rateLimit.optional(),
  maxDepth: limits.maxDepth.optional(),
  keyConcurrency: limits.keyConcurrency.optional(),
  aging: limits.aging.optional(),
  maxAttempts: limits.maxAttempts.optional(),
  backoff: limits.backoff.optional(),
  /** Epoch ms of the last change (0: never configured). */
  updatedAt: z.number().int().min(0).default(0),
});
export type QueueConfig = z.output<typeof QueueConfig>;

/**
 * Body of `PATCH /v1/queues/:type`, a JSON merge patch (RFC 7396): a field present sets it, `null`
 * removes the limit, an absent field stays as it is. Strict: a misspelt field is a 400, not a no-op.
 */
export const QueuePatch = z.strictObject({
  paused: z.boolean().optional(),
  concurrency: limits.concurrency.nullable().optional(),
  rateLimit: limits.rateLimit.nullable().optional(),
  maxDepth: limits.maxDepth.nullable().optional(),
  keyConcurrency: limits.keyConcurrency.nullable().optional(),
  aging: limits.aging.nullable().optional(),
  maxAttempts: limits.maxAttempts.nullable().optional(),
  backoff: limits.backoff.nullable().optional(),
});
export type QueuePatch = z.output<typeof QueuePatch>;

/** The config of a type nobody configured: not paused, no limits, strict priority. */
export const DEFAULT_QUEUE_CONFIG: Readonly<QueueConfig> = Object.freeze({ paused: false, updatedAt: 0 });

/** Apply a merge patch to a config; `now` becomes `updatedAt`. */
export function applyQueuePatch(cur: QueueConfig, patch: QueuePatch, now: number): QueueConfig {
  const next: Record<string, unknown> = { ...cur };
  for (const [k, v] of Object.entries(patch)) {
    if (v === undefined) continue;
    if (v === null) delete next[k];
    else next[k] = v;
  }
  next.updatedAt = now;
  return QueueConfig.parse(next);
}

const decoder = new TextDecoder();

/** Parse a stored value; undefined when it is not a valid config. */
export function parseQueueConfig(value: Uint8Array): QueueConfig | undefined {
  try {
    const r = QueueConfig.safeParse(JSON.parse(decoder.decode(value)));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Read-modify-write of one type's config with compare-and-set on the key's revision, retried on a
 * concurrent change, so two PATCHes of different fields both land. Returns the config written and its
 * revision (what {@link QueueConfigs.caughtUp} waits for).
 */
export async function updateQueueConfig(
  kv: KV,
  type: string,
  patch: QueuePatch,
  now: () => number = Date.now,
): Promise<{ config: QueueConfig; revision: number }> {
  TaskType.parse(type);
  for (let attempt = 0; ; attempt++) {
    const e = await kv.get(type);
    const cur =
      e?.operation === "PUT" ? (parseQueueConfig(e.value) ?? DEFAULT_QUEUE_CONFIG) : DEFAULT_QUEUE_CONFIG;
    const next = applyQueuePatch(cur, patch, now());
    try {
      const revision = e
        ? await kv.update(type, JSON.stringify(next), e.revision)
        : await kv.create(type, JSON.stringify(next));
      return { config: next, revision };
    } catch (err) {
      if (attempt >= 10 || !/wrong last sequence|key exists/i.test(String((err as Error).message))) throw err;
    }
  }
}

/** Longest wait of {@link QueueConfigs.caughtUp} for the watch to apply a write, ms. */
const CATCH_UP_TIMEOUT_MS = 2000;

/** Longest wait for the initial load of the queues bucket before a holder goes on without the rest, ms. */
const LOAD_TIMEOUT_MS = 3000;

/** Called with the type, its new config and the one before it. */
export type QueueConfigListener = (type: string, cfg: QueueConfig, prev: QueueConfig) => void;

/**
 * A live view of the queues bucket: `get(type)` answers from memory, a watch keeps it current (a PATCH
 * is seen by every holder within a round trip), and listeners hear of every change. If the watch ends
 * unexpectedly (the server lost its ordered consumer), it is opened again after a second.
 */
export class QueueConfigs {
  readonly #kv: KV;
  readonly #log: Logger | undefined;
  readonly #configs = new Map<string, QueueConfig>();
  readonly #listeners = new Set<QueueConfigListener>();
  /** Waiters for a revision of the bucket to be applied (read-your-writes after a PATCH). */
  readonly #revisionWaiters = new Set<{ revision: number; done: () => void }>();
  /** The highest bucket revision the watch has applied. */
  #revision = 0;
  #stop: (() => void) | undefined;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;

  /** Build a view over the queues bucket; nothing is read until {@link QueueConfigs.start}. */
  constructor(kv: KV, opts: { log?: Logger } = {}) {
    this.#kv = kv;
    this.#log = opts.log;
  }

  /** Start watching; resolves once every stored config is loaded. */
  async start(): Promise<void> {
    this.#stopped = false;
    await this.#watch();
  }

  /** Stop watching. Idempotent. */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    for (const w of this.#revisionWaiters) w.done();
    this.#stop?.();
  }

  /** The config of a type (the default when none is stored). */
  get(type: string): QueueConfig {
    return this.#configs.get(type) ?? DEFAULT_QUEUE_CONFIG;
  }

  /**
   * Resolve once the watch has applied bucket revision `revision` (or later), or after `timeoutMs`.
   * A holder that wrote a config waits here before answering, so a GET through it right after the
   * PATCH answer reads the new config rather than the watch's lagging copy.
   */
  caughtUp(revision: number, timeoutMs = CATCH_UP_TIMEOUT_MS): Promise<void> {
    if (this.#revision >= revision || this.#stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const w = {
        revision,
        done: () => {
          clearTimeout(timer);
          this.#revisionWaiters.delete(w);
          resolve();
        },
      };
      // a watch that lags this long is being re-opened; answer with what is stored anyway
      const timer = setTimeout(w.done, timeoutMs);
      this.#revisionWaiters.add(w);
    });
  }

  /** Types that have a stored config. */
  types(): string[] {
    return [...this.#configs.keys()];
  }

  /** Hear of every change; returns the unsubscribe function. */
  onChange(fn: QueueConfigListener): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  async #watch(): Promise<void> {
    const iter = await this.#kv.watch({ key: ">" });
    this.#stop = () => iter.stop();
    let resolveLoaded: () => void = () => undefined;
    const loaded = new Promise<void>((r) => {
      resolveLoaded = r;
    });
    void (async () => {
      try {
        for await (const e of iter) {
          this.#apply(e);
          // the last stored value: the server says nothing is pending after it, or the client has had
          // as many entries as the consumer had pending when created (on nats-server 2.9 the pending
          // count of a last-per-subject watch can stay one too high until the next write)
          if (e.delta === 0 || e.isUpdate) resolveLoaded();
        }
      } catch (err) {
        this.#log?.warn({ err }, "queue config watch failed");
      }
      resolveLoaded();
      this.#rewatchLater();
    })();
    // an empty bucket yields nothing to mark the end of the initial load
    if ((await this.#kv.status()).values === 0) resolveLoaded();
    // never hang a service's start on the watch: after a while, go on with what has arrived
    const slow = setTimeout(() => {
      this.#log?.warn("queue configs still loading; continuing with those loaded");
      resolveLoaded();
    }, LOAD_TIMEOUT_MS);
    await loaded;
    clearTimeout(slow);
  }

  #rewatchLater(): void {
    if (this.#stopped) return;
    this.#retry = setTimeout(() => {
      if (this.#stopped) return;
      this.#watch().catch((err) => {
        this.#log?.warn({ err }, "queue config watch not reopened; retrying");
        this.#rewatchLater();
      });
    }, 1000);
    this.#retry.unref();
  }

  #apply(e: KvWatchEntry): void {
    this.#applyConfig(e);
    if (e.revision > this.#revision) this.#revision = e.revision;
    for (const w of this.#revisionWaiters) if (w.revision <= this.#revision) w.done();
  }

  #applyConfig(e: KvWatchEntry): void {
    const prev = this.get(e.key);
    let next: QueueConfig = DEFAULT_QUEUE_CONFIG;
    if (e.operation === "PUT") {
      const parsed = parseQueueConfig(e.value);
      if (!parsed) {
        this.#log?.warn({ type: e.key }, "unreadable queue config ignored");
        return;
      }
      next = parsed;
      this.#configs.set(e.key, parsed);
    } else {
      this.#configs.delete(e.key);
    }
    for (const fn of this.#listeners) {
      try {
        fn(e.key, next, prev);
      } catch (err) {
        this.#log?.error({ err, type: e.key }, "queue config listener failed");
      }
    }
  }
}
