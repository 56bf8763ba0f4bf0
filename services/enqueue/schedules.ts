import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { z } from "zod";
import {
  type ErrorCode,
  ErrorCodes,
  isSluiceError,
  NotFoundError,
  PayloadTooLargeError,
  SluiceError,
  UnavailableError,
  ValidationError,
} from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import {
  cronOf,
  newScheduleRecord,
  ScheduleInput,
  ScheduleName,
  type ScheduleRecord,
  tickAfter,
} from "../../shared/schedule.ts";
import { depthExceeds, MAX_DEPTH } from "../../shared/task.ts";
import type { SessionSource } from "./link.ts";

const CAS_TRIES = 5;
const MAX_ISSUES = 20;

/**
 * Recurring schedules on the gateway: create, list, get, pause, resume and delete records in the
 * schedules bucket for `/v1/schedules` and `<prefix>.api.schedules.*`. The dispatcher leader watches
 * the bucket and fires the ticks (services/dispatcher/scheduler/recurring.ts); every change here is a
 * compare-and-set, so it never overwrites the leader's advance of `nextRunAt` (or the other way round).
 */
export class ScheduleControl {
  readonly #link: SessionSource;
  readonly #names: Names;
  readonly #maxPayloadBytes: number;
  readonly #now: () => number;
  #kv: { nc: NatsConnection; kv: Promise<KV> } | undefined;

  constructor(o: { link: SessionSource; names: Names; maxPayloadBytes: number; now?: () => number }) {
    this.#link = o.link;
    this.#names = o.names;
    this.#maxPayloadBytes = o.maxPayloadBytes;
    this.#now = o.now ?? Date.now;
  }

  /** Create a schedule; 409 `schedule_exists` when the name is taken. */
  async create(body: unknown): Promise<ScheduleRecord> {
    const input = this.#parse(body);
    let rec: ScheduleRecord;
    try {
      if (input.cron !== undefined) cronOf(input.cron, input.timezone);
      rec = newScheduleRecord(input, this.#now());
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new ValidationError(ErrorCodes.invalidSchedule, `cron: ${message}`, [{ path: "cron", message }]);
    }
    const kv = await this.#bucket();
    try {
      await nats(() => kv.create(rec.name, JSON.stringify(rec)));
    } catch (err) {
      if (/wrong last sequence|key exists/i.test(String((err as Error)?.message)))
        throw new SluiceError(ErrorCodes.scheduleExists, `a schedule named ${rec.name} exists`, {
          status: 409,
        });
      throw err;
    }
    return rec;
  }

  /** Every schedule, by name. */
  async list(): Promise<{ schedules: ScheduleRecord[] }> {
    const kv = await this.#bucket();
    const names = await nats(async () => {
      const out: string[] = [];
      for await (const k of await kv.keys()) out.push(k);
      return out;
    });
    const found = await Promise.all(names.map((n) => this.#read(kv, n)));
    const schedules = found.flatMap((f) => (f ? [f.rec] : []));
    schedules.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { schedules };
  }

  /** One schedule; 404 `schedule_not_found`. */
  async get(name: string): Promise<ScheduleRecord> {
    return (await this.#require(name)).rec;
  }

  /** Stop firing ticks (idempotent). */
  pause(name: string): Promise<ScheduleRecord> {
    return this.#change(name, (r) => (r.paused ? undefined : { ...r, paused: true }));
  }

  /** Fire again from the next tick after now; ticks that fell into the pause are not fired. */
  resume(name: string): Promise<ScheduleRecord> {
    return this.#change(name, (r) => {
      if (!r.paused) return undefined;
      const next = tickAfter(r, this.#now());
      return next === undefined ? undefined : { ...r, paused: false, nextRunAt: next };
    });
  }

  /** Delete a schedule; tasks it enqueued already are not touched. */
  async delete(name: string): Promise<{ name: string; deleted: true }> {
    const { kv } = await this.#require(name);
    await nats(() => kv.delete(name));
    return { name, deleted: true };
  }

  async #change(
    name: string,
    fn: (r: ScheduleRecord) => ScheduleRecord | undefined,
  ): Promise<ScheduleRecord> {
    for (let i = 0; i < CAS_TRIES; i++) {
      const { kv, rec, revision } = await this.#require(name);
      const next = fn(rec);
      if (!next) return rec;
      next.updatedAt = this.#now();
      try {
        await nats(() => kv.update(name, JSON.stringify(next), revision));
        return next;
      } catch (err) {
        // the leader advanced it in between: apply the change to the new version
        if (!/wrong last sequence/i.test(String((err as Error)?.message))) throw err;
      }
    }
    throw new UnavailableError("the schedule kept changing; retry");
  }

  async #require(name: string): Promise<{ kv: KV; rec: ScheduleRecord; revision: number }> {
    if (!ScheduleName.safeParse(name).success) throw notFound(name);
    const kv = await this.#bucket();
    const found = await this.#read(kv, name);
    if (!found) throw notFound(name);
    return { kv, ...found };
  }

  async #read(kv: KV, name: string): Promise<{ rec: ScheduleRecord; revision: number } | undefined> {
    const e = await nats(() => kv.get(name));
    if (!e || e.operation !== "PUT") return undefined;
    return { rec: e.json<ScheduleRecord>(), revision: e.revision };
  }

  /** The schedules bucket of the current connection (opened once per connection). */
  async #bucket(): Promise<KV> {
    const s = this.#link.session();
    if (this.#kv?.nc !== s.nc) {
      const kv = new Kvm(s.nc).open(this.#names.schedulesBucket);
      this.#kv = { nc: s.nc, kv };
      kv.catch(() => {
        if (this.#kv?.kv === kv) this.#kv = undefined;
      });
    }
    return nats(() => this.#kv!.kv);
  }

  #parse(body: unknown): z.output<typeof ScheduleInput> {
    if (depthExceeds(body, MAX_DEPTH))
      throw new ValidationError(ErrorCodes.invalidRequest, `body nests deeper than ${MAX_DEPTH} levels`);
    const r = ScheduleInput.safeParse(body);
    if (!r.success) {
      const issues = r.error.issues.slice(0, MAX_ISSUES).map((i) => ({
        path: i.path.map(String).join("."),
        message: i.message,
      }));
      throw new ValidationError(
        codeFor(issues),
        issues.map((i) => `${i.path}: ${i.message}`).join("; "),
        issues,
      );
    }
    const bytes = Buffer.byteLength(JSON.stringify(r.data.task.payload ?? null));
    if (bytes > this.#maxPayloadBytes)
      throw new PayloadTooLargeError(`payload is ${bytes} bytes; the limit is ${this.#maxPayloadBytes}`);
    return r.data;
  }
}

/** `invalid_task_type`/`invalid_priority`/`invalid_request` for problems in `task`, else `invalid_schedule`. */
function codeFor(issues: { path: string }[]): ErrorCode {
  if (!issues.every((i) => i.path === "task" || i.path.startsWith("task.")))
    return ErrorCodes.invalidSchedule;
  const fields = new Set(issues.map((i) => i.path));
  if (fields.size === 1 && fields.has("task.type")) return ErrorCodes.invalidTaskType;
  if (fields.size === 1 && fields.has("task.priority")) return ErrorCodes.invalidPriority;
  return ErrorCodes.invalidRequest;
}

function notFound(name: string): NotFoundError {
  return new NotFoundError(
    ErrorCodes.scheduleNotFound,
    `no schedule named ${JSON.stringify(name.slice(0, 128))}`,
  );
}

/** Run a NATS call; transport failures become 503 (our own errors pass through). */
async function nats<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isSluiceError(err) || /wrong last sequence|key exists/i.test(String((err as Error)?.message)))
      throw err;
    throw new UnavailableError(`NATS did not answer: ${(err as Error)?.message ?? String(err)}`, {
      cause: err,
    });
  }
}
