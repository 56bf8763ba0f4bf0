import { type MsgHdrs, headers as newHeaders } from "@nats-io/transport-node";
import { Cron } from "croner";
import { z } from "zod";
import { ErrorCodes, ValidationError } from "./errors.ts";
import type { Names } from "./names.ts";
import type { AckedPublisher, PubAck } from "./nats/publisher.ts";
import { MAX_DELAY_MS, TaskInput, type TaskMessage } from "./task.ts";

/**
 * Delays and recurring schedules: the contract between whoever schedules (the gateway for delayed
 * tasks and schedule records, workers for retry waits) and the dispatcher leader's scheduler that fires
 * them (services/dispatcher/scheduler). docs/architecture.md, "Delays and schedules", has the design.
 */

/** Header carrying a delayed message's due time, epoch ms. */
export const DUE_AT_HEADER = "Sluice-Due-At";

/** The epoch minute a time falls in: delayed messages are bucketed by it. */
export function epochMinute(ms: number): number {
  return Math.floor(ms / 60_000);
}

/** Subject of the minute bucket a due time falls in: `<prefix>.delayed.<epoch minute>`. */
export function delayedSubject(names: Names, dueAt: number): string {
  return names.delayedSubject(epochMinute(dueAt));
}

/** The msg id of a scheduling: `<id>:d<attempt>`; one attempt is scheduled once per duplicate window. */
export function delayedMsgId(msg: TaskMessage): string {
  return `${msg.id}:d${msg.attempt ?? 1}`;
}

/**
 * Hand a task to the scheduler to be published to its priority subject at `dueAt`: delayed tasks from
 * the gateway and retry backoffs from workers. The caller writes the task's record first (`scheduled`
 * or `retrying`, with `runAt` equal to `dueAt`): the scheduler fires a message only while the record
 * still says so, and drops one that has no record. The msg id makes a repeated call for the same attempt
 * harmless inside the duplicate window; it is also the msg id of the eventual tasks publish.
 */
export async function scheduleTask(
  pub: AckedPublisher,
  names: Names,
  msg: TaskMessage,
  dueAt: number,
  /**
   * `msgId` overrides the default `<id>:d<attempt>` (a rate-limited attempt is scheduled again under its
   * own number); `headers` (trace context) travel with the message and on to the tasks publish.
   */
  opts: { msgId?: string; headers?: MsgHdrs | undefined } = {},
): Promise<PubAck> {
  const h = newHeaders();
  for (const [k, v] of opts.headers ?? []) for (const x of v) h.append(k, x);
  h.set(DUE_AT_HEADER, String(dueAt));
  return pub.publish(delayedSubject(names, dueAt), JSON.stringify({ ...msg, runAt: dueAt }), {
    msgId: opts.msgId ?? delayedMsgId(msg),
    headers: h,
  });
}

/** Throw a 400 for a task due more than {@link MAX_DELAY_MS} after it was accepted. */
export function assertDelayWithinLimit(msg: TaskMessage): void {
  if (msg.runAt !== undefined && msg.runAt - msg.enqueuedAt > MAX_DELAY_MS) {
    const message = "runAt must be at most 30 days ahead";
    throw new ValidationError(ErrorCodes.invalidRequest, `runAt: ${message}`, [{ path: "runAt", message }]);
  }
}

/** The due time of a delayed message: its header, else the start of its minute bucket. */
export function dueAtOf(h: MsgHdrs | undefined, minute: number): number {
  const v = Number(h?.get(DUE_AT_HEADER));
  return Number.isFinite(v) && v > 0 ? v : minute * 60_000;
}

// ---- recurring schedules --------------------------------------------------------------------------

/** Fewest ms between two ticks of an `every` schedule. */
export const MIN_EVERY_MS = 1_000;
/** Most missed ticks one catch-up fires under the `all` policy (default of `maxCatchUp`). */
export const DEFAULT_MAX_CATCH_UP = 100;
/** Under `skip`, a tick this late still fires: ordinary timer jitter does not count as missed. */
export const SKIP_GRACE_MS = 1_000;

/** `[A-Za-z0-9_-]`, 1–128: a KV key and a URL segment as is. */
export const ScheduleName = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,128}$/, { message: "name must be 1-128 characters of A-Z a-z 0-9 _ -" });

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `every` as ms, or a duration string like `500ms`, `30s`, `5m`, `1h`, `1d` (at least 1 s). */
export const Every = z
  .union([
    z.number().int(),
    z
      .string()
      .regex(/^\d+(ms|s|m|h|d)$/, { message: "every must be ms or a duration like 30s, 5m, 1h" })
      .transform((s) => {
        const [, n, u] = /^(\d+)(ms|s|m|h|d)$/.exec(s)!;
        return Number(n) * UNITS[u!]!;
      }),
  ])
  .pipe(
    z
      .number()
      .int()
      .min(MIN_EVERY_MS)
      .max(366 * 86_400_000),
  );

/** What happens to ticks that fell into a time without a leader (see docs/architecture.md). */
export const MissedPolicy = z.enum(["skip", "once", "all"]);
export type MissedPolicy = z.output<typeof MissedPolicy>;

/** The task a schedule enqueues on every tick: an enqueue body without delay or idempotency key. */
export const ScheduleTask = TaskInput.omit({ idempotencyKey: true, delayMs: true, runAt: true });

/** Body of `POST /v1/schedules` and of a `<prefix>.api.schedules.create` request. */
export const ScheduleInput = z
  .strictObject({
    name: ScheduleName,
    /** 5 or 6 fields (seconds first when 6), evaluated in `timezone`. */
    cron: z.string().min(1).max(256).optional(),
    every: Every.optional(),
    /** IANA time zone of a cron schedule (default UTC). */
    timezone: z
      .string()
      .max(64)
      .refine(isTimeZone, { message: "timezone must be an IANA time zone such as Europe/Berlin" })
      .optional(),
    task: ScheduleTask,
    paused: z.boolean().optional(),
    missedPolicy: MissedPolicy.optional(),
    maxCatchUp: z.number().int().min(1).max(10_000).optional(),
  })
  .refine((s) => (s.cron === undefined) !== (s.every === undefined), {
    message: "set exactly one of cron and every",
    path: ["cron"],
  })
  .refine((s) => s.timezone === undefined || s.cron !== undefined, {
    message: "timezone applies to cron schedules only",
    path: ["timezone"],
  });
export type ScheduleInput = z.input<typeof ScheduleInput>;

/** A schedule as stored in the schedules bucket under its name. */
export type ScheduleRecord = {
  name: string;
  cron?: string;
  /** ms between ticks. */
  every?: number;
  timezone?: string;
  task: z.output<typeof ScheduleTask>;
  paused: boolean;
  missedPolicy: MissedPolicy;
  maxCatchUp: number;
  /** Next tick not yet fired, epoch ms. */
  nextRunAt: number;
  /** Latest tick fired, epoch ms. */
  lastRunAt?: number;
  /** Id of the task the latest tick enqueued. */
  lastTaskId?: string;
  createdAt: number;
  updatedAt: number;
};

/** The cron of a schedule; throws on a pattern croner refuses. */
export function cronOf(expr: string, timezone: string | undefined): Cron {
  return new Cron(expr, { paused: true, mode: "5-or-6-parts", timezone: timezone ?? "UTC" });
}

/** The first tick strictly after `t`, or undefined when the pattern never fires again. */
export function tickAfter(
  r: Pick<ScheduleRecord, "cron" | "every" | "timezone">,
  t: number,
): number | undefined {
  if (r.every !== undefined) return t + r.every;
  return cronOf(r.cron!, r.timezone).nextRun(new Date(t))?.getTime();
}

/** A new record for validated input; the first tick is the first one after `now`. */
export function newScheduleRecord(input: z.output<typeof ScheduleInput>, now: number): ScheduleRecord {
  const base = { cron: input.cron, every: input.every, timezone: input.timezone };
  const next = tickAfter(base, now);
  if (next === undefined) throw new Error("the cron pattern never fires");
  const r: ScheduleRecord = {
    name: input.name,
    task: input.task,
    paused: input.paused ?? false,
    missedPolicy: input.missedPolicy ?? "once",
    maxCatchUp: input.maxCatchUp ?? DEFAULT_MAX_CATCH_UP,
    nextRunAt: next,
    createdAt: now,
    updatedAt: now,
  };
  if (input.cron !== undefined) r.cron = input.cron;
  if (input.every !== undefined) r.every = input.every;
  if (input.timezone !== undefined) r.timezone = input.timezone;
  return r;
}

/** The ticks to fire now and the next tick after them. `fire` is ascending and may be empty. */
export type DueTicks = { fire: number[]; next: number | undefined };

/**
 * Which ticks in `[nextRunAt, now]` to fire, by the missed policy: `once` fires the latest of them
 * (one run stands for all missed ones; in normal operation it is the only one), `all` fires each up to
 * `maxCatchUp` (the latest ones), `skip` fires the latest only if it is at most {@link SKIP_GRACE_MS} late.
 */
export function dueTicks(r: ScheduleRecord, now: number): DueTicks {
  if (r.nextRunAt > now) return { fire: [], next: r.nextRunAt };
  const latest = latestTick(r, now);
  // `every` keeps its phase (ticks stay nextRunAt + k·every); a cron asks its pattern
  const next = r.every !== undefined ? latest + r.every : tickAfter(r, now);
  switch (r.missedPolicy) {
    case "skip":
      return { fire: now - latest <= SKIP_GRACE_MS ? [latest] : [], next };
    case "all":
      return { fire: ticksUpTo(r, now, r.maxCatchUp), next };
    default:
      return { fire: [latest], next };
  }
}

/** The latest tick at or before `now` (given `nextRunAt <= now`). */
function latestTick(r: ScheduleRecord, now: number): number {
  if (r.every !== undefined) return r.nextRunAt + Math.floor((now - r.nextRunAt) / r.every) * r.every;
  const prev = cronOf(r.cron!, r.timezone)
    .previousRuns(1, new Date(now + 1))[0]
    ?.getTime();
  return prev !== undefined && prev >= r.nextRunAt ? prev : r.nextRunAt;
}

/** Up to `cap` latest ticks in `[nextRunAt, now]`, ascending. */
function ticksUpTo(r: ScheduleRecord, now: number, cap: number): number[] {
  if (r.every !== undefined) {
    const count = Math.floor((now - r.nextRunAt) / r.every) + 1;
    const first = Math.max(0, count - cap);
    return Array.from({ length: count - first }, (_, i) => r.nextRunAt + (first + i) * r.every!);
  }
  return cronOf(r.cron!, r.timezone)
    .previousRuns(cap, new Date(now + 1))
    .map((d) => d.getTime())
    .filter((t) => t >= r.nextRunAt)
    .reverse();
}

function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}
