import {
  ClosedConnectionError,
  DrainingConnectionError,
  InvalidArgumentError,
  type MsgHdrs,
  NoRespondersError,
  headers as newHeaders,
  RequestError,
  TimeoutError,
} from "@nats-io/transport-node";
import {
  ErrorCodes,
  NotFoundError,
  PayloadTooLargeError,
  SluiceError,
  UnavailableError,
} from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { isWrongLastSequence, type PubAck, PublishError } from "../../shared/nats/publisher.ts";
import { DUPLICATE_WINDOW_MS } from "../../shared/nats/topology.ts";
import { assertDelayWithinLimit } from "../../shared/schedule.ts";
import {
  initialState,
  isAsEnqueued,
  type TaskMessage,
  type TaskState,
  type TaskStatus,
  toTaskMessage,
} from "../../shared/task.ts";
import { copyTraceContext, type TraceSource, traceparentOf } from "../../shared/telemetry/propagation.ts";
import { SpanKind, startTaskSpan, type TaskSpan } from "../../shared/telemetry/spans.ts";
import { enqueueDelayed, ensureScheduled } from "./delayed.ts";
import { parseTaskInput } from "./input.ts";
import type { Session, SessionSource } from "./link.ts";
import { recordAccepted, recordDeduplicated } from "./metrics.ts";

/** What an accepted enqueue answers. `duplicate` is set when an idempotency key matched an earlier task. */
export type EnqueueResult = { id: string; status: TaskStatus; duplicate?: true };

/** Where an enqueue request came from: its API, and the caller's trace context if it sent one. */
export type EnqueueOrigin = {
  transport: "http" | "nats";
  /** The request's `traceparent`/`tracestate`: the enqueue span's parent (or, untraced, copied on). */
  trace?: TraceSource | undefined;
};

/** Options of {@link Gateway}. */
export type GatewayOptions = {
  link: SessionSource;
  names: Names;
  /** Largest payload accepted, bytes of its JSON serialization. */
  maxPayloadBytes: number;
  /** Clock for `enqueuedAt`, epoch ms (default Date.now). */
  now?: () => number;
  /** Queue limits checked before anything is written: a full queue throws QueueFullError (429). */
  admission?: { admit(type: string): Promise<void> };
};

/** JetStream `err_code` for a message over the stream's `max_msg_size`. */
const MESSAGE_SIZE_EXCEEDED = 10054;

/** KV keys the state bucket accepts; anything else cannot name a task. */
const KEY_RE = /^[-/=\w]+(\.[-/=\w]+)*$/;
const KEY_MAX = 256;

const decoder = new TextDecoder();

/**
 * The enqueue logic behind both the HTTP API and the NATS request API: validate, store the task
 * message, create its state record, answer. Each call awaits only its own writes, so any number of
 * requests are in flight at once over the link's one publisher.
 */
export class Gateway {
  readonly #o: GatewayOptions;
  readonly #now: () => number;

  /** Build a gateway over a NATS link. */
  constructor(o: GatewayOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
  }

  /**
   * Accept one task. Throws ValidationError (400), PayloadTooLargeError (413) or UnavailableError
   * (503); a rejected request writes nothing. The task message carries the trace context: the enqueue
   * span's when tracing is on, the caller's own otherwise.
   */
  async enqueue(body: unknown, origin: EnqueueOrigin = { transport: "nats" }): Promise<EnqueueResult> {
    const span = startTaskSpan("sluice.enqueue", {
      kind: SpanKind.SERVER,
      parent: origin.trace,
      attributes: { "sluice.transport": origin.transport },
    });
    try {
      const r = await this.#enqueue(body, origin, span);
      span?.setAttributes({ "sluice.task.status": r.status, "sluice.task.duplicate": r.duplicate === true });
      span?.end();
      return r;
    } catch (err) {
      if (span) endRejected(span, err);
      throw err;
    }
  }

  async #enqueue(body: unknown, origin: EnqueueOrigin, span: TaskSpan | undefined): Promise<EnqueueResult> {
    const input = parseTaskInput(body, this.#o.maxPayloadBytes);
    const s = this.#o.link.session();
    const msg = toTaskMessage(input, this.#now());
    assertDelayWithinLimit(msg);
    span?.setAttributes({
      "sluice.task.id": msg.id,
      "sluice.task.type": msg.type,
      "sluice.task.priority": msg.priority,
    });
    const { names } = this.#o;
    return withNatsErrors(async () => {
      if (input.idempotencyKey !== undefined) {
        const prior = await readState(s, msg.id);
        if (prior) {
          if (prior.status === "scheduled") await ensureScheduled(s, names, msg, prior);
          else if (mayLackItsMessage(prior, Date.now())) await ensureQueued(s, names, msg, prior);
          recordDeduplicated(msg.type);
          return { id: msg.id, status: prior.status, duplicate: true };
        }
      }
      const data = JSON.stringify(msg);
      const max = s.nc.info?.max_payload;
      if (max !== undefined && Buffer.byteLength(data) > max) {
        throw new PayloadTooLargeError(`task message exceeds the NATS server's max_payload (${max} bytes)`);
      }
      await this.#o.admission?.admit(msg.type);
      // No header block at all for an untraced request from an untraced caller: the common case.
      let headers: MsgHdrs | undefined;
      if (span || traceparentOf(origin.trace)) {
        headers = newHeaders();
        if (span) span.inject(headers);
        else copyTraceContext(origin.trace, headers);
      }
      // a delayed task goes to the scheduler instead (state record first there: ./delayed.ts)
      if (msg.runAt !== undefined) return enqueueDelayed(s, names, msg, headers);
      // The task message and its state record go out together, in one socket write (the task message
      // first: one server stores them in that order), and the request waits for both acks at once:
      // half the latency and one write fewer per request than waiting for the first before sending the
      // second. If the task message is refused, the record we created is taken back (compare-and-set:
      // never a record the pipeline has moved on since).
      const stored = s.pub.publish(names.tasksSubject(msg.priority, msg.type), data, {
        msgId: msg.id,
        headers,
      });
      const created = createState(s, names, initialState(msg));
      // Its refusal can come first (no KV leader during a failover answers 503 at once while the task
      // message waits for its stream's new leader): observed here, before anything awaits it, or
      // Node takes it for an unhandled rejection and the process dies. Awaited below as usual.
      created.catch(() => undefined);
      let ack: PubAck;
      try {
        ack = await stored;
      } catch (err) {
        void created.then(
          (c) => {
            if (c.createdSeq !== undefined) withdrawState(s, names, msg.id, c.createdSeq);
          },
          () => undefined,
        );
        throw err;
      }
      // The stream dropped our publish as a repeat of this id: an earlier request with the same
      // idempotency key stored the task, so this one is the duplicate (exactly one caller is not).
      const duplicate = ack.duplicate && input.idempotencyKey !== undefined;
      const { status } = await created;
      if (duplicate) recordDeduplicated(msg.type);
      else recordAccepted(msg.type, msg.priority);
      return duplicate ? { id: msg.id, status, duplicate: true } : { id: msg.id, status };
    });
  }

  /** The state record of a task; NotFoundError (404) when there is none. */
  async get(id: string): Promise<TaskState> {
    if (id.length > KEY_MAX || !KEY_RE.test(id)) throw taskNotFound(id);
    const s = this.#o.link.session();
    const state = await withNatsErrors(() => readState(s, id));
    if (!state) throw taskNotFound(id);
    return state;
  }
}

/** A refused request's span: the error code always, failed status only for the server's own faults. */
function endRejected(span: TaskSpan, err: unknown): void {
  const status = err instanceof SluiceError ? err.status : 500;
  if (err instanceof SluiceError) span.setAttributes({ "sluice.error.code": err.code });
  span.end(status >= 500 ? err : undefined);
}

/**
 * True for a record that may be all a crashed request left: `queued` as the gateway created it (never
 * dispatched, run or moved since) and young enough that the tasks stream still remembers its msg id.
 * The task message and the record go out together and are stored by different streams; a gateway that
 * died in between (or whose refused publish was followed by a lost withdraw) leaves the record alone,
 * and without {@link ensureQueued} a retry with the same idempotency key would be told `queued` for a
 * task that never runs. Older records are answered from as they are: a second message stored after the
 * window would run the task twice if the first is still waiting in a backlog. 10 s of the window are
 * kept as a margin for the gateway's clock against the server's.
 */
function mayLackItsMessage(prior: TaskState, now: number): boolean {
  return isAsEnqueued(prior) && now - prior.updatedAt < DUPLICATE_WINDOW_MS - 10_000;
}

/**
 * A repeated request for a task that may lack its message: store the task message again under the same
 * msg id. When the first request stored it, the stream drops this one as a duplicate (no second run).
 */
async function ensureQueued(s: Session, names: Names, msg: TaskMessage, prior: TaskState): Promise<void> {
  const task: TaskMessage = { ...msg, enqueuedAt: prior.enqueuedAt, priority: prior.priority };
  await s.pub.publish(names.tasksSubject(task.priority, task.type), JSON.stringify(task), { msgId: task.id });
}

/**
 * Insert-if-absent of the state record; when one exists already, its status wins. `createdSeq` is the
 * record's revision when this call created it.
 */
async function createState(
  s: Session,
  names: Names,
  state: TaskState,
): Promise<{ status: TaskStatus; createdSeq?: number }> {
  const subject = `$KV.${names.stateBucket}.${state.id}`;
  const data = JSON.stringify(state);
  try {
    const ack = await s.pub.publish(subject, data, { expectLastSubjectSeq: 0 });
    return { status: state.status, createdSeq: ack.seq };
  } catch (err) {
    if (!isWrongLastSequence(err)) throw err;
  }
  // A duplicate created it, or the pipeline already moved the task on (dispatcher or worker wrote
  // first): never overwrite, report what is there.
  const entry = await s.state.get(state.id);
  if (entry && entry.operation === "PUT") return { status: parseState(entry.value).status };
  if (entry) {
    // only a delete marker: replace it, as KV create does, compare-and-set on the marker's revision
    try {
      const ack = await s.pub.publish(subject, data, { expectLastSubjectSeq: entry.revision });
      return { status: state.status, createdSeq: ack.seq };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw err;
      const again = await readState(s, state.id);
      if (again) return { status: again.status };
    }
  }
  throw new UnavailableError("task state changed while it was being created; retry");
}

/**
 * Take back a record created for a task message the stream refused: a delete marker, only if the
 * record is still the one created (a task stored after all and already moved on keeps its record).
 * Not acked: if it is lost, the record says `queued` for a task that is not there — what a crash
 * between the two writes would leave too.
 */
function withdrawState(s: Session, names: Names, id: string, createdSeq: number): void {
  const h = newHeaders();
  h.set("KV-Operation", "DEL");
  try {
    s.pub.send(`$KV.${names.stateBucket}.${id}`, new Uint8Array(0), {
      headers: h,
      expectLastSubjectSeq: createdSeq,
    });
  } catch {
    // disconnected: nothing more to do
  }
}

async function readState(s: Session, id: string): Promise<TaskState | undefined> {
  const entry = await s.state.get(id);
  if (!entry || entry.operation !== "PUT") return undefined;
  return parseState(entry.value);
}

function parseState(value: Uint8Array): TaskState {
  return JSON.parse(decoder.decode(value)) as TaskState;
}

function taskNotFound(id: string): NotFoundError {
  return new NotFoundError(ErrorCodes.taskNotFound, `no task with id ${JSON.stringify(id.slice(0, 64))}`);
}

/** Run NATS work, turning transport failures into UnavailableError (503) and size refusals into 413. */
async function withNatsErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw classify(err);
  }
}

function classify(err: unknown): unknown {
  if (err instanceof SluiceError) return err;
  if (err instanceof PublishError) {
    if (err.apiCode === MESSAGE_SIZE_EXCEEDED) {
      return new PayloadTooLargeError("task message exceeds the stream's maximum message size");
    }
    // 503: no stream answered (JetStream down or recovering); 408: no ack in time
    if (err.status === 503 || err.status === 408) {
      return new UnavailableError(`NATS did not store the task: ${err.message}`, { cause: err });
    }
    return err;
  }
  if (err instanceof InvalidArgumentError && /max_payload/.test(err.message)) {
    return new PayloadTooLargeError("task message exceeds the NATS server's max_payload");
  }
  if (
    err instanceof TimeoutError ||
    err instanceof NoRespondersError ||
    err instanceof RequestError ||
    err instanceof ClosedConnectionError ||
    err instanceof DrainingConnectionError
  ) {
    return new UnavailableError(`NATS did not answer: ${err.message}`, { cause: err });
  }
  return err;
}
