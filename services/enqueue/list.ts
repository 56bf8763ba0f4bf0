import { DeliverPolicy, type JsMsg } from "@nats-io/jetstream";
import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { Names } from "../../shared/names.ts";
import { TASK_STATUSES, type TaskState, type TaskStatus, TaskType } from "../../shared/task.ts";
import type { SessionSource } from "./link.ts";

/**
 * `GET /v1/tasks`: recent tasks, newest change first, without an index. The state bucket's stream keeps
 * one message per task (its latest record, history 1), in write order, so its tail *is* the list of
 * recently changed tasks. A page reads backwards from the tail (or from the cursor) in growing windows
 * of stream sequences, filters by type and status, and stops at `limit` matches or after `scanMax`
 * sequences — whichever comes first — answering a cursor to go on from there.
 *
 * Bounded: one page costs at most `scanMax` stored records (LIST_SCAN_MAX) whatever the filter, and no
 * memory between requests. Any replica answers any cursor. A task that changes between two pages moves
 * to the tail, so it may appear twice or be missed by a paging client; the list is a view, not a
 * snapshot (GET /v1/tasks/:id is the truth).
 */

/** One listed task: its record without result, checkpoint and stored message, plus its revision. */
export type TaskSummary = Omit<TaskState, "result" | "checkpoint" | "task"> & { revision: number };

/** A page of the list. `cursor` is set when older records remain; `revision` is the stream's last sequence when the page was read (an event stream resumed from it misses nothing). */
export type TaskPage = { tasks: TaskSummary[]; cursor?: string; revision: number; scanned: number };

/** The list's query, validated. */
export type ListQuery = {
  types?: ReadonlySet<string>;
  statuses?: ReadonlySet<TaskStatus>;
  limit: number;
  before?: number;
};

/** Most tasks one page returns. */
export const LIST_LIMIT_MAX = 500;
const LIST_LIMIT_DEFAULT = 50;
/** The first window: a few times the limit, so an unfiltered page usually takes one read. */
const FIRST_WINDOW = 256;

/** Validate `?type=&status=&limit=&cursor=` (type and status may be comma lists). */
export function parseListQuery(q: Record<string, unknown>): ListQuery {
  const bad = (path: string, message: string) =>
    new ValidationError(ErrorCodes.invalidRequest, `${path}: ${message}`, [{ path, message }]);
  const listOf = (v: unknown, name: string): string[] | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw bad(name, "give it once, comma-separated");
    const items = v
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    return items.length > 0 ? items : undefined;
  };
  const types = listOf(q.type, "type");
  for (const t of types ?? [])
    if (!TaskType.safeParse(t).success) throw bad("type", `not a task type: ${t.slice(0, 64)}`);
  const statuses = listOf(q.status, "status");
  for (const s of statuses ?? [])
    if (!(TASK_STATUSES as readonly string[]).includes(s))
      throw bad("status", `must be one of ${TASK_STATUSES.join(", ")}`);
  let limit = LIST_LIMIT_DEFAULT;
  if (q.limit !== undefined) {
    limit = Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > LIST_LIMIT_MAX)
      throw bad("limit", `an integer 1-${LIST_LIMIT_MAX}`);
  }
  let before: number | undefined;
  if (q.cursor !== undefined) {
    before = typeof q.cursor === "string" && /^\d{1,15}$/.test(q.cursor) ? Number(q.cursor) : Number.NaN;
    if (!Number.isSafeInteger(before) || before < 1) throw bad("cursor", "not a cursor from a previous page");
  }
  return {
    ...(types ? { types: new Set(types) } : {}),
    ...(statuses ? { statuses: new Set(statuses as TaskStatus[]) } : {}),
    limit,
    ...(before !== undefined ? { before } : {}),
  };
}

const decoder = new TextDecoder();

/** Read one page (see the module comment). `scanMax` is LIST_SCAN_MAX. */
export async function listTasks(
  link: SessionSource,
  names: Names,
  q: ListQuery,
  scanMax: number,
): Promise<TaskPage> {
  const s = link.session();
  const stream = `KV_${names.stateBucket}`;
  const info = await s.jsm.streams.info(stream);
  const first = info.state.first_seq;
  const last = info.state.last_seq;
  const tasks: TaskSummary[] = [];
  let end = Math.min(last, (q.before ?? last + 1) - 1);
  let window = Math.max(FIRST_WINDOW, q.limit * 4);
  let scanned = 0;
  let cursor: number | undefined;
  const js = s.jsm.jetstream();
  while (info.state.messages > 0 && end >= first && scanned < scanMax) {
    const start = Math.max(first, end - Math.min(window, scanMax - scanned) + 1);
    const msgs = await readRange(js, stream, start, end);
    scanned += end - start + 1;
    for (let i = msgs.length - 1; i >= 0; i--) {
      const m = msgs[i]!;
      const st = parse(m.data);
      if (!st || (q.types && !q.types.has(st.type)) || (q.statuses && !q.statuses.has(st.status))) continue;
      tasks.push(summary(st, m.seq));
      if (tasks.length >= q.limit) {
        cursor = m.seq;
        break;
      }
    }
    if (cursor !== undefined) break;
    end = start - 1;
    window *= 2;
  }
  if (cursor === undefined && end >= first && info.state.messages > 0) cursor = end + 1;
  // a cursor at the very start of the stream has nothing older to go on to
  if (cursor !== undefined && cursor <= first) cursor = undefined;
  return { tasks, ...(cursor !== undefined ? { cursor: String(cursor) } : {}), revision: last, scanned };
}

type Js = ReturnType<import("@nats-io/jetstream").JetStreamManager["jetstream"]>;

/** Live messages with sequences in [start, end], oldest first, through a short-lived ordered consumer. */
async function readRange(
  js: Js,
  stream: string,
  start: number,
  end: number,
): Promise<{ seq: number; data: Uint8Array }[]> {
  const c = await js.consumers.get(stream, {
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: start,
  });
  const out: { seq: number; data: Uint8Array }[] = [];
  const iter = await c.fetch({ max_messages: end - start + 1, expires: 2_000 });
  for await (const m of iter as AsyncIterable<JsMsg>) {
    if (m.seq > end) break;
    // delete and purge markers carry no record
    const op = m.headers?.get("KV-Operation");
    if (!op && m.data.length > 0) out.push({ seq: m.seq, data: m.data });
    if (m.seq >= end || m.info.pending === 0) break;
  }
  iter.stop();
  return out;
}

function parse(data: Uint8Array): TaskState | undefined {
  try {
    return JSON.parse(decoder.decode(data)) as TaskState;
  } catch {
    return undefined;
  }
}

function summary(st: TaskState, revision: number): TaskSummary {
  const { result: _r, checkpoint: _c, task: _t, ...rest } = st;
  return { ...rest, revision };
}
