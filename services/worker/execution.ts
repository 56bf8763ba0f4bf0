import type { KV } from "@nats-io/kv";
import { ErrorCodes, isNonRetryable, isRateLimited } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { Names } from "../../shared/names.ts";
import type { Delivery } from "../../shared/nats/delivery.ts";
import type { AckedPublisher } from "../../shared/nats/publisher.ts";
import type { SignalWatcher } from "../../shared/signals.ts";
import {
  isFinal,
  type TaskError,
  type TaskMessage,
  type TaskState,
  type TaskStatus,
} from "../../shared/task.ts";
import { traceIdOf } from "../../shared/telemetry/propagation.ts";
import { type AttemptScope, type ExecutionObserver, inScope } from "./observer.ts";
import { givenUpStatus, isRefused, Recorder, type Refused, type Settled } from "./recorder.ts";
import { decideRetry, type RetryPolicy } from "./retry-policy.ts";
import type { AbortReason, TaskContext, TaskDefinition } from "./sdk.ts";
import { classifyWriteError } from "./write-errors.ts";

/** What an execution needs from its worker. */
export type ExecutionDeps = {
  workerId: string;
  names: Names;
  state: KV;
  publisher: AckedPublisher;
  log: Logger;
  signals: SignalWatcher;
  runningWriteAfterMs: number;
  maxResultBytes: number;
  /** How long a handler gets to return after its signal was aborted (cancel, pause, shutdown), ms. */
  abortGraceMs: number;
  /** The retry policy of a task: its own settings, else its queue's, else its definition's. */
  policy: (def: TaskDefinition, msg: TaskMessage) => RetryPolicy;
  /** A handler reported a rate limit: hold the type back. */
  onRateLimited: (type: string, retryAfterMs: number) => void;
  /**
   * True while first deliveries may repeat finished work: for a while after the connection to NATS
   * came back, since a server that crashed can lose acks and deliver acked messages again as first
   * deliveries (docs/reliability.md, Known issues 1). Their records are read then, as redeliveries' are.
   */
  replaySuspected: () => boolean;
  /** Sees the attempt begin and end (metrics, tracing). */
  observer?: ExecutionObserver | undefined;
};

/** Called once per execution when its slot may take the next task (the handler is done; the final write may not be). */
export type SlotRelease = () => void;

/** How an execution ended, for the worker's accounting. */
export type Outcome = TaskStatus | "redelivered" | "skipped";

type HandlerResult = { result: unknown } | { error: unknown };

const decoder = new TextDecoder();
/** Task message fields every record of the task carries, when set. */
const CARRIED = ["maxAttempts", "timeoutMs", "idempotencyKey", "concurrencyKey", "replayOf"] as const;
const PROGRESS_WRITE_MS = 500;
const MAX_ERROR_MESSAGE = 2048;

/**
 * One attempt of one task on this worker: parse, check signals and history, run the handler under its
 * timeout and signal, then record the outcome (completed, retrying, dead, cancelled, paused) and only
 * then ack the tasks message.
 *
 * Attempts: a message carries the attempt it starts (`attempt`, 1 for a new task). A redelivery of the
 * same message is one more attempt only when the record shows that attempt ran (`running`) — a tasks
 * message also comes back when a dispatcher died holding it or a worker turned it away, and neither
 * ran it. A redelivery records `running` before its handler starts, so a task that kills its worker
 * each time runs out of attempts and ends dead instead of looping.
 */
export class Execution {
  readonly delivery: Delivery;
  readonly startedAt = Date.now();
  readonly #deps: ExecutionDeps;
  readonly #def: TaskDefinition;
  readonly #controller = new AbortController();
  #rec: Recorder;
  #msg: TaskMessage | undefined;
  #base: TaskState | undefined;
  #progress: TaskState["progress"];
  #checkpoint: unknown;
  #runningWritten = false;
  #progressTimer: NodeJS.Timeout | undefined;
  /** While the handler runs: when it times out, and when its `running` record is due (epoch ms). */
  #deadline: number | undefined;
  #runningDueAt: number | undefined;
  /** Wakes the run when the handler is aborted (a plain callback: no listener on the signal per task). */
  #onAbort: ((r: { aborted: AbortReason }) => void) | undefined;
  #done = false;
  #release: SlotRelease | undefined;
  #scope: AttemptScope | undefined;
  /** What the handler threw, if it did (the observer tells rate limits apart from failures). */
  #handlerError: unknown;

  constructor(deps: ExecutionDeps, def: TaskDefinition, delivery: Delivery, release: SlotRelease) {
    this.#deps = deps;
    this.#def = def;
    this.delivery = delivery;
    this.#release = release;
    this.#rec = new Recorder(deps, delivery);
  }

  /** Task id once parsed. */
  get id(): string | undefined {
    return this.#msg?.id;
  }

  /** The task's fairness key, if it has one. */
  get concurrencyKey(): string | undefined {
    return this.#msg?.concurrencyKey;
  }

  /**
   * Called by the worker's sweep every few ms (SWEEP_MS in worker.ts): times the handler out at its
   * deadline, and writes `running` for a task that outlived RUNNING_WRITE_AFTER_MS.
   */
  tick(now: number): void {
    if (this.#runningDueAt !== undefined && now >= this.#runningDueAt) {
      this.#runningDueAt = undefined;
      this.#writeRunning();
    }
    if (this.#deadline !== undefined && now >= this.#deadline) {
      this.#deadline = undefined;
      this.abort("timeout");
    }
  }

  /** Abort the handler (shutdown, cancellation, pause, timeout). */
  abort(reason: AbortReason): void {
    if (this.#controller.signal.aborted) return;
    this.#controller.abort(reason);
    this.#onAbort?.({ aborted: reason });
  }

  /** Run to the end (outcome stored and acked, or handed back). Never rejects. */
  async run(): Promise<Outcome> {
    let outcome: Outcome = "redelivered";
    try {
      outcome = await this.#run();
      return outcome;
    } catch (err) {
      this.#deps.log.error({ err, taskId: this.#msg?.id }, "execution failed unexpectedly; task handed back");
      this.delivery.nak(1000);
      return "redelivered";
    } finally {
      this.#freeSlot();
      this.#scope?.end(outcome, this.#handlerError);
    }
  }

  #freeSlot(): void {
    const r = this.#release;
    this.#release = undefined;
    r?.();
  }

  async #run(): Promise<Outcome> {
    const d = this.delivery;
    let msg: TaskMessage;
    try {
      msg = JSON.parse(decoder.decode(d.data)) as TaskMessage;
      if (typeof msg.id !== "string" || typeof msg.type !== "string") throw new Error("not a task message");
    } catch (err) {
      // nothing to record a state under: drop it loudly rather than redeliver it forever
      this.#deps.log.error(
        { err, subject: d.subject, seq: d.streamSeq },
        "unreadable tasks message, terminated",
      );
      d.term();
      return "skipped";
    }
    this.#msg = msg;
    // a child logger costs a serialisation of its bindings: made only when something logs
    let child: Logger | undefined;
    const log = () =>
      (child ??= this.#deps.log.child({ taskId: msg.id, type: msg.type, traceId: traceIdOf(d.headers) }));
    let attempt = msg.attempt ?? 1;
    const dispatchedAt = d.dispatchedAtMs ?? d.storedAtMs;
    this.#base = {
      id: msg.id,
      type: msg.type,
      priority: msg.priority,
      status: "running",
      attempts: attempt,
      enqueuedAt: msg.enqueuedAt,
      dispatchedAt,
      startedAt: this.startedAt,
      updatedAt: this.startedAt,
      workerId: this.#deps.workerId,
    };
    for (const k of CARRIED) if (msg[k] !== undefined) (this.#base as Record<string, unknown>)[k] = msg[k];

    // a signal sent before the task got here
    let signal = this.#deps.signals.get(msg.id);
    if (signal?.action === "cancel") return this.#cancelled();
    // a redelivery, a retry or a resumed task: its record has history (a checkpoint, or a finished attempt
    // whose ack was lost); a first delivery of a new task has none worth a read on the hot path, except
    // just after a reconnect, when a crashed server may hand out acked work again as first deliveries
    const redelivered = d.deliveryCount > 1;
    if (redelivered || attempt > 1 || msg.resumed || this.#deps.replaySuspected()) {
      const prior = await this.#readState(msg.id);
      if (prior && isFinal(prior.status)) {
        this.#rec.ack();
        this.#deps.observer?.skipped(msg.type, "already_final");
        return "skipped";
      }
      if (prior?.status === "retrying" && prior.attempts >= attempt) {
        // this attempt already failed and was handed to the scheduler before its ack was lost
        this.#rec.ack();
        this.#deps.observer?.skipped(msg.type, "already_retried");
        return "skipped";
      }
      // this attempt (or a later one, which redeliveries record) ran, and its worker died in it
      if (redelivered && prior?.status === "running" && prior.attempts >= attempt) {
        attempt = prior.attempts + 1;
        this.#base.attempts = attempt;
      }
      if (prior?.checkpoint !== undefined) this.#checkpoint = prior.checkpoint;
      // the pause that stopped it before its resume (the watch may not have seen the delete yet)
      if (signal?.action === "pause" && prior && prior.updatedAt >= signal.at) signal = undefined;
    }
    this.#scope = this.#deps.observer?.begin({
      id: msg.id,
      type: msg.type,
      attempt,
      enqueuedAt: msg.enqueuedAt,
      runAt: msg.runAt,
      headers: d.headers,
      signal: this.#controller.signal,
    });
    const policy = this.#deps.policy(this.#def, msg);
    if (attempt > policy.maxAttempts) {
      return this.#giveUp(policy, {
        code: ErrorCodes.workerLost,
        message: `attempt ${attempt} of ${policy.maxAttempts}: every attempt ended without an outcome (its worker died, or it failed unexpectedly)`,
      });
    }
    if (signal?.action === "pause") return this.#paused();
    if (redelivered) {
      // stored before anything of the task runs (its payload's validation included): if this attempt
      // kills its worker or fails unexpectedly too, the next delivery counts it, however fast it
      // ended (a first delivery writes `running` only once it has lasted)
      this.#runningWritten = true;
      try {
        await this.#rec.put(this.#snapshot("running"));
      } catch (err) {
        log().warn({ err }, "running state not written");
      }
    }

    const parsed = this.#def.payload.safeParse(msg.payload);
    if (!parsed.success) {
      const detail = parsed.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join(".") || "payload"}: ${i.message}`)
        .join("; ");
      return this.#giveUp(policy, { code: ErrorCodes.invalidPayload, message: detail });
    }

    // The deadline and the delayed `running` write are checked by the worker's one sweep (tick), not
    // by two timers per task: arming and clearing them was a visible share of a no-op task's cost.
    const handlerStart = Date.now();
    if (this.#deps.runningWriteAfterMs > 0)
      this.#runningDueAt = handlerStart + this.#deps.runningWriteAfterMs;
    else this.#writeRunning();
    const timeoutMs = msg.timeoutMs ?? this.#def.timeoutMs;
    this.#deadline = handlerStart + timeoutMs;
    const ctrl = this.#controller.signal;
    const handler: Promise<HandlerResult> = Promise.resolve()
      .then(() => inScope(this.#scope, () => this.#def.handler(parsed.data, this.#context(log, attempt))))
      .then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      );
    // whichever comes first: the handler's end or its abort (one promise, not a Promise.race of two)
    const first = await new Promise<HandlerResult | { aborted: AbortReason }>((resolve) => {
      if (ctrl.aborted) resolve({ aborted: ctrl.reason as AbortReason });
      else this.#onAbort = resolve;
      void handler.then(resolve);
    });
    this.#deadline = undefined;
    this.#runningDueAt = undefined;

    if ("aborted" in first) {
      const settled = this.#afterAbort(handler, log);
      switch (first.aborted) {
        case "timeout":
          // recorded at once, whatever the handler does with its signal
          return this.#failed(
            policy,
            attempt,
            { code: ErrorCodes.timedOut, message: `timed out after ${timeoutMs} ms` },
            true,
          );
        case "cancelled":
          await settled;
          return this.#cancelled();
        case "paused":
          await settled;
          return this.#paused();
        default:
          await settled;
          return this.#handBack();
      }
    }
    this.#freeSlot();
    if ("error" in first) {
      const err = first.error;
      this.#handlerError = err;
      if (isRateLimited(err)) return this.#rateLimited(policy, err.retryAfterMs);
      return this.#failed(policy, attempt, toTaskError(err), !isNonRetryable(err));
    }
    let encoded: string | undefined;
    try {
      encoded = JSON.stringify(first.result ?? null);
    } catch {
      return this.#giveUp(policy, {
        code: ErrorCodes.invalidResult,
        message: "result is not JSON-serialisable",
      });
    }
    if (encoded !== undefined && Buffer.byteLength(encoded) > this.#deps.maxResultBytes) {
      return this.#giveUp(policy, {
        code: ErrorCodes.resultTooLarge,
        message: `result over ${this.#deps.maxResultBytes} bytes`,
      });
    }
    return this.#completed(policy, first.result ?? null);
  }

  /** Free the slot once the handler lets go of it, or after the grace time. */
  #afterAbort(handler: Promise<HandlerResult>, log: () => Logger): Promise<void> {
    const grace = new Promise<false>((r) => setTimeout(() => r(false), this.#deps.abortGraceMs).unref());
    return Promise.race([handler.then(() => true), grace]).then((returned) => {
      if (!returned)
        log().error(
          { graceMs: this.#deps.abortGraceMs },
          "handler ignored its aborted signal; slot released anyway",
        );
      this.#freeSlot();
    });
  }

  #context(log: () => Logger, attempt: number): TaskContext {
    const m = this.#msg!;
    return {
      id: m.id,
      type: m.type,
      priority: m.priority,
      attempt,
      signal: this.#controller.signal,
      get log() {
        return log();
      },
      lastCheckpoint: this.#checkpoint,
      working: () => this.delivery.working(),
      checkpoint: async (state) => {
        if (this.#done) return;
        const prev = this.#checkpoint;
        const next = state === undefined ? null : JSON.parse(JSON.stringify(state));
        this.#checkpoint = next;
        this.#runningWritten = true;
        try {
          await this.#rec.put(this.#snapshot("running"));
        } catch (err) {
          // a checkpoint NATS will never store (too large) must not ride along in every later record
          if (this.#checkpoint === next && classifyWriteError(err) !== "transient") this.#checkpoint = prev;
          throw err;
        }
      },
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

  #snapshot(status: TaskStatus, extra: Partial<TaskState> = {}): TaskState {
    const s: TaskState = { ...this.#base!, status, updatedAt: Date.now(), ...extra };
    if (this.#progress) s.progress = this.#progress;
    if (this.#checkpoint !== undefined) s.checkpoint = this.#checkpoint;
    return s;
  }

  #writeRunning(force = false): void {
    if (this.#done || (this.#runningWritten && !force)) return;
    this.#runningWritten = true;
    // not awaited: the final write follows on the same connection and so lands after it
    this.#rec
      .put(this.#snapshot("running"))
      .catch((err) => this.#deps.log.warn({ err }, "running state not written"));
  }

  #stop(): void {
    this.#done = true;
    clearTimeout(this.#progressTimer);
  }

  /** The handler returned: store `completed` with the result, or give up if NATS will never take it. */
  async #completed(policy: RetryPolicy, result: unknown): Promise<Outcome> {
    this.#stop();
    const r = await this.#store(this.#snapshot("completed", { finishedAt: Date.now(), result }), (s) =>
      this.#rec.final(s),
    );
    if (!isRefused(r)) return this.#settled("completed", r);
    // Refused even without checkpoint and progress: the result is what cannot be stored (over the
    // server's max_payload or the state bucket's value size). Redelivering would run the handler again
    // to the same end, forever; give up as for a result over MAX_RESULT_BYTES, with the reason.
    this.#logRefused(r, "completed", "giving the task up");
    const why = errorMessage(r.err);
    return this.#giveUp(
      policy,
      r.refused === "too_large"
        ? { code: ErrorCodes.resultTooLarge, message: `result too large to store: ${why}` }
        : { code: ErrorCodes.resultNotStorable, message: `result not storable: ${why}` },
    );
  }

  /** A failed attempt: retry after the backoff, or give up. */
  async #failed(
    policy: RetryPolicy,
    attempt: number,
    error: TaskError,
    retryable: boolean,
  ): Promise<Outcome> {
    const decision = decideRetry(policy, attempt, retryable);
    if (!decision.retry) return this.#giveUp(policy, error);
    this.#stop();
    const dueAt = Date.now() + decision.delayMs;
    const next: TaskMessage = { ...this.#msg!, attempt: attempt + 1 };
    delete next.resumed;
    const s = this.#snapshot("retrying", { error, runAt: dueAt });
    delete s.workerId;
    const r = await this.#store(s, (x) => this.#rec.retry(x, next, dueAt));
    if (isRefused(r)) return this.#retryRefused(policy, error, r);
    return r === "stored" ? "retrying" : "redelivered";
  }

  /** No more attempts: a dead letter (default), or `failed`/`timed_out` for types that keep none. */
  async #giveUp(policy: RetryPolicy, error: TaskError): Promise<Outcome> {
    this.#stop();
    const now = Date.now();
    const task = this.#msg!;
    // the task message stays with the record so `POST /v1/tasks/:id/retry` can run it again
    if (!policy.deadLetter) {
      const status = givenUpStatus(error);
      const s = this.#snapshot(status, { finishedAt: now, error, task });
      return this.#settled(status, await this.#store(s, (x) => this.#rec.final(x), true));
    }
    const s = this.#snapshot("dead", { finishedAt: now, error });
    let r = await this.#store(s, (x) => this.#rec.dead(x, task, error));
    if (isRefused(r)) {
      // not even the dead letter and its record (both hold the task message) can be stored: record
      // `dead` without them, so the task still ends, visibly, instead of coming back forever
      this.#logRefused(r, "dead", "recording it without the task message");
      const bare = { ...s };
      delete bare.checkpoint;
      delete bare.progress;
      r = await this.#rec.final(bare);
    }
    return this.#settled("dead", r);
  }

  /** Rescheduled after the service's retry-after, without counting an attempt. */
  async #rateLimited(policy: RetryPolicy, retryAfterMs: number): Promise<Outcome> {
    this.#stop();
    this.#deps.onRateLimited(this.#msg!.type, retryAfterMs);
    const dueAt = Date.now() + retryAfterMs;
    const next: TaskMessage = { ...this.#msg!, attempt: this.#base!.attempts };
    const error: TaskError = {
      code: "rate_limited",
      message: `rate limited; retry after ${retryAfterMs} ms`,
    };
    const s = this.#snapshot("retrying", { runAt: dueAt, attempts: this.#base!.attempts - 1, error });
    delete s.workerId;
    // same attempt number again: the scheduler's msg id must differ from the first scheduling of it
    const r = await this.#store(s, (x) =>
      this.#rec.retry(x, next, dueAt, `${next.id}:rl${this.delivery.streamSeq}`),
    );
    if (isRefused(r)) return this.#retryRefused(policy, error, r);
    return r === "stored" ? "retrying" : "redelivered";
  }

  /** The next attempt cannot be stored (nor its `retrying` record): give the task up, saying why. */
  #retryRefused(policy: RetryPolicy, error: TaskError, r: Refused): Promise<Outcome> {
    this.#logRefused(r, "retrying", "giving the task up");
    const message = `${error.message} (its retry could not be stored: ${errorMessage(r.err)})`;
    return this.#giveUp(policy, { code: error.code, message: truncate(message) });
  }

  async #cancelled(): Promise<Outcome> {
    this.#stop();
    const s = this.#snapshot("cancelled", {
      finishedAt: Date.now(),
      error: { code: ErrorCodes.cancelled, message: "cancelled on request" },
      task: this.#msg!,
    });
    return this.#settled("cancelled", await this.#store(s, (x) => this.#rec.final(x), true));
  }

  async #paused(): Promise<Outcome> {
    this.#stop();
    const s = this.#snapshot("paused", { task: this.#msg! });
    delete s.workerId;
    // the task message stays: resume publishes it again
    return this.#settled("paused", await this.#store(s, (x) => this.#rec.final(x)));
  }

  async #handBack(): Promise<Outcome> {
    this.#stop();
    const s = this.#snapshot("queued");
    delete s.startedAt;
    delete s.workerId;
    const task: TaskMessage = { ...this.#msg!, attempt: this.#base!.attempts };
    if (this.#checkpoint !== undefined) task.resumed = true;
    const r = await this.#store(s, (x) => this.#rec.handBack(x, task));
    if (isRefused(r)) {
      // shutting down: let the server redeliver it to a worker that runs it to its own outcome
      this.#logRefused(r, "queued", "leaving it to a redelivery");
      this.delivery.nak(1000);
    }
    return "redelivered";
  }

  /**
   * Store `s` with `write`. When NATS refuses it for good, store it again without what the task can
   * do without — progress and checkpoint, then (with `dropTask`) the copy of its task message — and
   * return how the last try ended.
   */
  async #store(s: TaskState, write: (s: TaskState) => Promise<Settled>, dropTask = false): Promise<Settled> {
    let r = await write(s);
    for (const lighter of lighterRecords(s, dropTask)) {
      if (!isRefused(r)) return r;
      this.#logRefused(r, s.status, "storing a lighter record");
      r = await write(lighter);
    }
    return r;
  }

  /**
   * What a settled write means for the worker: `status` when stored. A write still refused after
   * every lighter version ends the task here: its message is terminated, not redelivered, since a
   * redelivery would fail the same way, forever.
   */
  #settled(status: Outcome, r: Settled): Outcome {
    if (r === "stored") return status;
    if (r === "redelivered") return "redelivered";
    this.#logRefused(r, status, "no state can be stored for this task; tasks message terminated");
    this.#rec.term();
    return "skipped";
  }

  #logRefused(r: Refused, status: string, next: string): void {
    this.#deps.log.error(
      { err: r.err, failure: r.refused, taskId: this.#msg?.id, type: this.#msg?.type, status },
      `NATS refused the ${status} record for good; ${next}`,
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

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Lighter versions of a record NATS refused, each dropping more: progress and checkpoint (a final
 * record has no use for them; a paused or retried task starts over), then its copy of the task
 * message (`dropTask`; a failed or cancelled task can then not be retried by hand).
 */
function lighterRecords(s: TaskState, dropTask: boolean): TaskState[] {
  const out: TaskState[] = [];
  let x = s;
  if (x.checkpoint !== undefined || x.progress !== undefined) {
    x = { ...x };
    delete x.checkpoint;
    delete x.progress;
    out.push(x);
  }
  if (dropTask && x.task !== undefined) {
    x = { ...x };
    delete x.task;
    out.push(x);
  }
  return out;
}

function truncate(s: string): string {
  return s.length > MAX_ERROR_MESSAGE ? `${s.slice(0, MAX_ERROR_MESSAGE)}…` : s;
}
