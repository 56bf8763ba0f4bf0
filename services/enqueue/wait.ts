import { ErrorCodes, ValidationError } from "../../shared/errors.ts";
import type { TaskState } from "../../shared/task.ts";
import { watchTask } from "./events/feed.ts";
import type { SessionSource } from "./link.ts";

/**
 * `POST /v1/tasks?wait=30s`: answer with the task's final record when it finishes in time, for callers
 * moving from synchronous code. Waiting is a watch of the task's state record (events/feed.ts), so it
 * costs the server one ordered consumer and no polling.
 */
export type TaskWaiter = {
  /** The wait a request asks for, ms (capped at the configured maximum); undefined without `wait`. 400 when unreadable. */
  parse(query: unknown): number | undefined;
  /** The final record if the task finishes within `ms`; undefined if not (or if watching fails). */
  wait(id: string, ms: number, signal?: AbortSignal): Promise<TaskState | undefined>;
  /** End every wait now (server shutdown): they answer 202 at once instead of holding the close. */
  close(): void;
};

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse `30s`, `500ms`, `2m`, `1h` or bare seconds (`30`) into ms. */
export function parseDuration(v: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.trim());
  if (!m) return undefined;
  const ms = Number(m[1]) * UNITS[m[2] ?? "s"]!;
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

/** Build the waiter over the gateway's NATS link; `maxMs` is WAIT_MAX_MS. */
export function createWaiter(link: SessionSource, maxMs: number): TaskWaiter {
  const waiting = new Set<{ stop(): void }>();
  let closed = false;
  return {
    close() {
      closed = true;
      for (const f of waiting) f.stop();
    },
    parse(query) {
      const v = (query as Record<string, unknown> | undefined)?.wait;
      if (v === undefined) return undefined;
      const ms = typeof v === "string" ? parseDuration(v) : undefined;
      if (ms === undefined) {
        throw new ValidationError(
          ErrorCodes.invalidRequest,
          "wait must be a duration such as 30s, 500ms or 2m",
          [{ path: "wait", message: "not a duration" }],
        );
      }
      return Math.min(ms, maxMs);
    },
    async wait(id, ms, signal) {
      if (ms <= 0 || closed) return undefined;
      let last: TaskState | undefined;
      let feed: Awaited<ReturnType<typeof watchTask>>;
      try {
        feed = await watchTask(link.session().state, id, {}, (e) => {
          if (e.kind === "state") last = e.state;
        });
      } catch {
        return undefined; // NATS went away after the task was stored: it is still accepted (202)
      }
      waiting.add(feed);
      // close() may have run while the watch was being opened: it could not stop this one
      if (closed) feed.stop();
      const timer = setTimeout(() => feed.stop(), ms);
      const onAbort = () => feed.stop();
      signal?.addEventListener("abort", onAbort, { once: true });
      const end = await feed.ended;
      waiting.delete(feed);
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      return end === "final" ? last : undefined;
    },
  };
}
