import type { KV } from "@nats-io/kv";
import { ErrorCodes, isNonRetryable } from "../../shared/errors.ts";
import { Headers } from "../../shared/headers.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import {
  isFinal,
  type TaskError,
  type TaskState,
  type TaskStatus,
  type WorkMessage,
} from "../../shared/task.ts";
import type { AbortReason, TaskContext, TaskDefinition } from "./sdk.ts";

/** What an execution needs from its worker. */
export type ExecutionDeps = {
  workerId: string;
  stateBucket: string;
  state: KV;
  publisher: AckedPublisher;
  log: Logger;
  runningWriteAfterMs: number;
  maxResultBytes: number;
  /** How long a handler that ignores its aborted signal keeps its slot, ms. */
  abortGraceMs: number;
};

/** Called once per execution when its slot may take the next task (the handler is done; the final write may not be). */
export type SlotRelease = () => void;

/** How an execution ended, for the worker's accounting. */
export type Outcome = TaskStatus | "redelivered" | "skipped";

const decoder = new TextDecoder();
const encoder = new TextEncoder();
const PROGRESS_WRITE_MS = 500;
const MAX_ERROR_MESSAGE = 2048;

/**
 * One attempt of one task on this worker: parse, check, run the handler under its timeout and signal,
 * record the outcome in the state bucket, and only then ack the work message.
 */
export class Execution {
  readonly delivery: Delivery;
  readonly startedAt = Date.now();
  readonly #deps: ExecutionDeps;
  readonly #def: TaskDefinition;
  readonly #controller = new AbortController();
  #msg: WorkMessage | undefined;
  #base: TaskState | undefined;
  #progress: TaskState["progress"];
  #runningWritten = false;
  #progressTimer: NodeJS.Timeout | undefined;
  #done = false;
  #release: SlotRelease | undefined;

  constructor(deps: ExecutionDeps, def: TaskDefinition, delivery: Delivery, release: SlotRelease) {
    this.#deps = deps;
    this.#def = def;
    this.delivery = delivery;
    this.#release = release;
  }

  /** Free the slot (once). The final write and ack may still be under way: they do not need a slot. */
  #freeSlot(): void {
    const r = this.#release;
    this.#release = undefined;
    r?.();
  }

  /** Task id once parsed. */
  get id(): string | undefined {
    return this.#msg?.id;
  }

  /** Abort the handler (shutdown, cancellation). */
  abort(reason: AbortReason): void {
    this.#controller.abort(reason);
  }

  /** Run to the end (final state stored and acked, or handed back). Never rejects. */
  async run(): Promise<Outcome> {
    try {
      return await this.#run();
    } finally {
      this.#freeSlot();
    }
  }

  async #run(): Promise<Outcome> {
    const d = this.delivery;
    let msg: WorkMessage;
    try {
      msg = JSON.parse(decoder.decode(d.data)) as WorkMessage;
      if (typeof msg.id !== "string" || typeof msg.type !== "string") throw new Error("not a task message");
    } catch (err) {
      // nothing to record a state under: drop it loudly rather than redeliver it forever
      this.#deps.log.error(
        { err, subject: d.subject, seq: d.streamSeq },
        "unreadable work message, terminated",
      );
      d.term();
      return "skipped";
    }
    this.#msg = msg;
    const log = this.#deps.log.child({ taskId: msg.id, type: msg.type });
    if (d.deliveryCount > 1) {
      // a redelivery: the previous attempt may have finished and died before its ack landed
      const prior = await this.#readState(msg.id);
      if (prior && isFinal(prior.status)) {
        d.ack();
        return "skipped";
      }
    }
    const dispatchedAt = Number(d.headers?.get(Headers.dispatchedAt)) || d.storedAtMs;
    this.#base = {
      id: msg.id,
      type: msg.type,
      priority: msg.priority,
      status: "running",
      attempts: d.deliveryCount,
      enqueuedAt: msg.enqueuedAt,
      dispatchedAt,
      startedAt: this.startedAt,
      updatedAt: this.startedAt,
      workerId: this.#deps.workerId,
    };
    if (msg.maxAttempts !== undefined) this.#base.maxAttempts = msg.maxAttempts;
    if (msg.timeoutMs !== undefined) this.#base.timeoutMs = msg.timeoutMs;
    if (msg.idempotencyKey !== undefined) this.#base.idempotencyKey = msg.idempotencyKey;

    const parsed = this.#def.payload.safeParse(msg.payload);
    if (!parsed.success) {
      const detail = parsed.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join(".") || "payload"}: ${i.message}`)
        .join("; ");
      return this.#finish("failed", { error: { code: ErrorCodes.invalidPayload, message: detail } });
    }

    const runningTimer =
      this.#deps.runningWriteAfterMs > 0
        ? setTimeout(() => this.#writeRunning(), this.#deps.runningWriteAfterMs)
        : (this.#writeRunning(), undefined);
    const timeoutMs = msg.timeoutMs ?? this.#def.timeoutMs;
    const timeout = setTimeout(() => this.#controller.abort("timeout" satisfies AbortReason), timeoutMs);
    const signal = this.#controller.signal;
    const aborted = new Promise<{ aborted: AbortReason }>((resolve) =>
      signal.addEventListener("abort", () => resolve({ aborted: signal.reason as AbortReason }), {
        once: true,
      }),
    );
    const handler = Promise.resolve()
      .then(() => this.#def.handler(parsed.data, this.#context(log, d.deliveryCount)))
      .then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      );
    const first = await Promise.race([handler, aborted]);
    clearTimeout(timeout);
    if (runningTimer) clearTimeout(runningTimer);

    let outcome: Outcome;
    if ("aborted" in first) {
      outcome = await this.#onAbort(first.aborted, timeoutMs);
      // keep the slot until the handler lets go, or the grace runs out
      const grace = new Promise((r) => setTimeout(r, this.#deps.abortGraceMs).unref());
      if ((await Promise.race([handler.then(() => true), grace.then(() => false)])) === false)
        log.error(
          { graceMs: this.#deps.abortGraceMs },
          "handler ignored its aborted signal; slot released anyway",
        );
      return outcome;
    }
    if ("error" in first) return this.#finish("failed", { error: toTaskError(first.error) });
    let encoded: string | undefined;
    try {
      encoded = JSON.stringify(first.result ?? null);
    } catch {
      return this.#finish("failed", {
        error: { code: "invalid_result", message: "result is not JSON-serialisable" },
      });
    }
    if (encoded !== undefined && Buffer.byteLength(encoded) > this.#deps.maxResultBytes) {
      return this.#finish("failed", {
        error: { code: "result_too_large", message: `result over ${this.#deps.maxResultBytes} bytes` },
      });
    }
    return this.#finish("completed", { result: first.result ?? null });
  }

  async #onAbort(reason: AbortReason, timeoutMs: number): Promise<Outcome> {
    if (reason === "timeout")
      return this.#finish("timed_out", {
        error: { code: ErrorCodes.timedOut, message: `timed out after ${timeoutMs} ms` },
      });
    // shutdown: hand the task back for another worker; the record goes back to queued
    this.#done = true;
    clearTimeout(this.#progressTimer);
    const base = this.#base!;
    const back: TaskState = { ...base, status: "queued", updatedAt: Date.now() };
    delete back.startedAt;
    delete back.workerId;
    await this.#put(back).catch(() => undefined);
    this.delivery.nak();
    return "redelivered";
  }

  #context(log: Logger, attempt: number): TaskContext {
    const m = this.#msg!;
    return {
      id: m.id,
      type: m.type,
      priority: m.priority,
      attempt,
      signal: this.#controller.signal,
      log,
      working: () => this.delivery.working(),
      progress: (percent, message) => {
        const p = Math.max(0, Math.min(100, Number(percent) || 0));
        this.#progress = message === undefined ? { percent: p } : { percent: p, message: String(message) };
        if (!this.#progressTimer && !this.#done) {
          this.#progressTimer = setTimeout(
            () => {
              this.#progressTimer = undefined;
              this.#writeRunning(true);
            },
            this.#runningWritten ? PROGRESS_WRITE_MS : 0,
          );
        }
      },
    };
  }

  #writeRunning(force = false): void {
    if (this.#done || (this.#runningWritten && !force)) return;
    this.#runningWritten = true;
    const s: TaskState = { ...this.#base!, updatedAt: Date.now() };
    if (this.#progress) s.progress = this.#progress;
    // not awaited: the final write follows on the same connection and so lands after it
    this.#put(s).catch((err) => this.#deps.log.warn({ err, taskId: s.id }, "running state not written"));
  }

  async #finish(status: TaskStatus, extra: { result?: unknown; error?: TaskError }): Promise<Outcome> {
    this.#done = true;
    clearTimeout(this.#progressTimer);
    const now = Date.now();
    const s: TaskState = { ...this.#base!, status, finishedAt: now, updatedAt: now };
    if (this.#progress) s.progress = this.#progress;
    if (extra.result !== undefined) s.result = extra.result;
    if (extra.error) s.error = extra.error;
    // The ack must follow a stored final state: keep trying (NATS may be reconnecting) while telling the
    // server the task is alive, and give it back only if that fails for good.
    for (let i = 0; ; i++) {
      try {
        await this.#put(s);
        break;
      } catch (err) {
        if (i >= 12) {
          this.#deps.log.error(
            { err, taskId: s.id },
            "final state not stored; task handed back for redelivery",
          );
          this.delivery.nak(1000);
          return "redelivered";
        }
        this.delivery.working();
        await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** i, 2000)));
      }
    }
    this.delivery.ack();
    return status;
  }

  #put(s: TaskState): Promise<unknown> {
    return this.#deps.publisher.publish(
      `$KV.${this.#deps.stateBucket}.${s.id}`,
      encoder.encode(JSON.stringify(s)),
    );
  }

  async #readState(id: string): Promise<TaskState | undefined> {
    try {
      const e = await this.#deps.state.get(id);
      if (!e || e.operation !== "PUT") return undefined;
      return e.json<TaskState>();
    } catch {
      return undefined;
    }
  }
}

function toTaskError(err: unknown): TaskError {
  if (isNonRetryable(err)) return { code: err.code, message: truncate(err.message) };
  if (err instanceof Error)
    return { code: ErrorCodes.handlerFailed, message: truncate(err.message || err.name) };
  return { code: ErrorCodes.handlerFailed, message: truncate(String(err)) };
}

function truncate(s: string): string {
  return s.length > MAX_ERROR_MESSAGE ? `${s.slice(0, MAX_ERROR_MESSAGE)}…` : s;
}
