import type { EnqueueOptions, SluiceClient, Task, TaskEvent } from "../../client/index.ts";
import { isFinal } from "../../shared/task.ts";
import { type CommandLine, int, jsonArg, ms, str, word } from "./args.ts";
import { Exit, UsageError } from "./exit.ts";
import { bar, duration, fields, type Out, paint, short, statusText, table, when } from "./output.ts";

/** `sluice enqueue <type> [payload] [options]`: store a task; with --wait, wait for its outcome. */
export async function enqueue(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const type = word(c, 1, "task type (sluice enqueue <type> [payload])");
  const payloadText = c.words[2] ?? str(c.o, "payload");
  const payload = payloadText === undefined ? {} : jsonArg(payloadText, "the payload");
  const opts: EnqueueOptions = {};
  const priority = str(c.o, "priority");
  if (priority !== undefined)
    opts.priority = (/^\d$/.test(priority) ? Number(priority) : priority) as EnqueueOptions["priority"];
  const key = str(c.o, "key");
  if (key !== undefined) opts.idempotencyKey = key;
  const delay = ms(c.o, "delay");
  if (delay !== undefined) opts.delayMs = delay;
  const runAt = str(c.o, "run-at");
  if (runAt !== undefined) opts.runAt = /^\d+$/.test(runAt) ? Number(runAt) : runAt;
  const taskTimeout = ms(c.o, "task-timeout");
  if (taskTimeout !== undefined) opts.timeoutMs = taskTimeout;
  const attempts = int(c.o, "max-attempts", 1, 100);
  if (attempts !== undefined) opts.maxAttempts = attempts;
  const ck = str(c.o, "concurrency-key");
  if (ck !== undefined) opts.concurrencyKey = ck;
  const ref = await client.enqueue(type, payload, opts);
  if (!c.o.wait) {
    if (c.o.json) out.line(JSON.stringify(ref));
    else
      out.line(
        `${statusText(out, ref.status)}  ${ref.id}  ${paint(out, "dim", type)}${ref.duplicate ? paint(out, "yellow", "  (duplicate of an earlier enqueue)") : ""}`,
      );
    return Exit.ok;
  }
  if (!c.o.json) out.error(paint(out, "dim", `${ref.status}  ${ref.id}; waiting…`));
  return follow(client, ref.id, out, c.o.json, ms(c.o, "timeout") ?? 30_000, false);
}

/** `sluice task get|watch|cancel|retry <id>`, `sluice task list`. */
export async function task(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const sub = word(c, 1, "task command: get, watch, cancel, retry or list");
  if (sub === "list") return list(c, client, out);
  const id = word(c, 2, "task id");
  switch (sub) {
    case "get": {
      const t = await client.get(id);
      if (c.o.json) out.line(JSON.stringify(t));
      else showTask(out, t);
      return Exit.ok;
    }
    case "watch":
      return follow(client, id, out, c.o.json, ms(c.o, "timeout"), true);
    case "cancel": {
      const r = await client.cancel(id);
      if (c.o.json) out.line(JSON.stringify(r));
      else
        out.line(
          r.cancelRequested
            ? `cancel requested: ${id} is ${r.status}; its handler is being aborted`
            : `${statusText(out, r.status)}  ${id}`,
        );
      return Exit.ok;
    }
    case "retry": {
      const r = await client.retry(id);
      if (c.o.json) out.line(JSON.stringify(r));
      else
        out.line(
          `${statusText(out, r.status)}  ${r.id}  ${paint(out, "dim", `retry of ${id}${r.duplicate ? " (retried before)" : ""}`)}`,
        );
      return Exit.ok;
    }
    default:
      throw new UsageError(`unknown task command ${sub}: use get, watch, cancel, retry or list`);
  }
}

async function list(c: CommandLine, client: SluiceClient, out: Out): Promise<number> {
  const q: Parameters<SluiceClient["list"]>[0] = {};
  const type = str(c.o, "type");
  if (type) q.type = type;
  const status = str(c.o, "status");
  if (status) q.status = status as never;
  const limit = int(c.o, "limit", 1, 500);
  if (limit) q.limit = limit;
  const cursor = str(c.o, "cursor");
  if (cursor) q.cursor = cursor;
  const page = await client.list(q);
  if (c.o.json) {
    out.line(JSON.stringify(page));
    return Exit.ok;
  }
  const now = Date.now();
  table(
    out,
    ["ID", "TYPE", "STATUS", "PRIORITY", "ATTEMPTS", "CHANGED"],
    page.tasks.map((t) => [
      t.id,
      t.type,
      statusText(out, t.status),
      t.priority,
      String(t.attempts),
      `${duration(now - t.updatedAt)} ago`,
    ]),
  );
  if (page.cursor) out.line(paint(out, "dim", `more: --cursor ${page.cursor}`));
  return Exit.ok;
}

/** A task's record as key/value lines. */
export function showTask(out: Out, t: Task): void {
  const took =
    t.startedAt !== undefined && t.finishedAt !== undefined
      ? duration(t.finishedAt - t.startedAt)
      : undefined;
  fields(out, [
    ["id", t.id],
    ["type", t.type],
    ["status", statusText(out, t.status)],
    ["priority", t.priority],
    ["attempts", t.maxAttempts ? `${t.attempts} of ${t.maxAttempts}` : String(t.attempts)],
    ["enqueued", when(t.enqueuedAt)],
    ["due", when(t.runAt)],
    ["started", when(t.startedAt)],
    ["finished", when(t.finishedAt)],
    ["took", took],
    ["worker", t.workerId],
    [
      "progress",
      t.progress ? `${bar(t.progress.percent, 16)} ${t.progress.message ?? ""}`.trimEnd() : undefined,
    ],
    ["error", t.error ? `${t.error.code}: ${t.error.message}` : undefined],
    ["retry of", t.replayOf],
    ["retried as", t.replayedBy],
    ["result", t.result === undefined ? undefined : short(t.result, 200)],
  ]);
}

/**
 * Follow a task to its end: a progress bar on a terminal, a line per change otherwise, one JSON line
 * per event with --json. Exit 0 when it completed, 1 when it ended otherwise, 7 when waiting timed out.
 */
async function follow(
  client: SluiceClient,
  id: string,
  out: Out,
  json: boolean,
  timeoutMs: number | undefined,
  showEvents: boolean,
): Promise<number> {
  const ctrl = new AbortController();
  const timer = timeoutMs === undefined ? undefined : setTimeout(() => ctrl.abort(), timeoutMs);
  const started = Date.now();
  let last: TaskEvent | undefined;
  try {
    for await (const e of client.events(id, { signal: ctrl.signal })) {
      last = e;
      if (json) {
        if (showEvents || (e.event !== "deleted" && isFinal(e.event)))
          out.line(JSON.stringify(showEvents ? e : e.task));
      } else if (showEvents && !(e.event !== "deleted" && isFinal(e.event))) {
        const p = e.task.progress;
        const text =
          `${statusText(out, e.event)}  ${p ? `${bar(p.percent)} ${p.message ?? ""}` : ""}`.trimEnd();
        out.status(`${text}  ${paint(out, "dim", duration(Date.now() - started))}`);
      }
    }
  } finally {
    clearTimeout(timer);
  }
  if (!last || last.event === "deleted" || !isFinal(last.event)) {
    if (!json) out.error(`still ${last?.event ?? "waiting"} after ${duration(Date.now() - started)}: ${id}`);
    return last?.event === "deleted" ? Exit.notFound : Exit.waitTimeout;
  }
  if (!json) showTask(out, last.task);
  return last.event === "completed" ? Exit.ok : Exit.taskFailed;
}
