import type { HttpLimits } from "./hostile-http.ts";
import { message } from "./http-message.ts";
import type { Rng } from "./rng.ts";

const BAD_IDS = ["a%20b", "*", "%3E", "a..b", "%00", "x".repeat(300), "%E2%82%AC%E2%82%AC", "..%2F..%2Fetc"];
const NONEXISTENT = "00000000-0000-4000-8000-000000000000";
const deep = (d: number) => `${"[".repeat(d)}${"]".repeat(d)}`;

/** An invalid request to one of the other routes (variant, bytes): none of them may change anything. */
export function routeCase(rng: Rng, l: HttpLimits, valid: string): [string, Buffer] {
  const id = rng.pick(BAD_IDS);
  const q = (path: string, method: string, body = "", contentType: string | null = "application/json") =>
    message(body, { method, path, contentType: body ? contentType : null });
  const cases: [string, () => Buffer][] = [
    [
      "queue-patch-invalid",
      () =>
        q(
          `/v1/queues/${l.type}`,
          "PATCH",
          rng.pick([
            '{"maxDepth":-1}',
            '{"concurrency":0}',
            '{"rateLimit":{"max":0,"intervalMs":1}}',
            '{"unknown":1}',
            "[]",
            '"x"',
            '{"paused":"yes"}',
            "{bad",
            '{"aging":{"afterMs":1}}',
            '{"backoff":{"type":"x"}}',
          ]),
        ),
    ],
    [
      "queue-bad-type",
      () => q(`/v1/queues/${rng.pick(["Bad%20Type", "a..b", "*", "x".repeat(80)])}`, "PATCH", "{}"),
    ],
    ["queue-pause-bad-type", () => q(`/v1/queues/${rng.pick(["A", "a..b", "%3E"])}/pause`, "POST")],
    ["task-control-bad-id", () => q(`/v1/tasks/${id}/${rng.pick(["cancel", "pause", "resume"])}`, "POST")],
    [
      "task-control-unknown-id",
      () => q(`/v1/tasks/${NONEXISTENT}/${rng.pick(["cancel", "pause", "resume"])}`, "POST"),
    ],
    ["task-get-bad-id", () => q(`/v1/tasks/${id}`, "GET")],
    ["task-retry-bad-id", () => q(`/v1/tasks/${id}/retry`, "POST")],
    ["dlq-bad-id", () => q(`/v1/dlq/${id}`, rng.pick(["GET", "DELETE"]))],
    [
      "dlq-replay-invalid",
      () =>
        q(
          "/v1/dlq/replay",
          "POST",
          rng.pick([
            '{"ids":[5]}',
            "{}",
            '{"ids":["a b"]}',
            `{"ids":["${NONEXISTENT}"]}`,
            '{"type":"**"}',
            "nope",
          ]),
        ),
    ],
    ["dlq-list-invalid", () => q(`/v1/dlq?${rng.pick(["type=**", "limit=0", "cursor=-1", "x=1"])}`, "GET")],
    [
      "schedule-invalid",
      () =>
        q(
          "/v1/schedules",
          "POST",
          rng.pick([
            '{"name":"x"}',
            "{}",
            `{"name":"a b","every":"1s","task":{"type":"${l.type}"}}`,
            `{"name":"bad-cron","cron":"61 * * * *","task":{"type":"${l.type}"}}`,
            `{"name":"both","cron":"* * * * *","every":"1s","task":{"type":"${l.type}"}}`,
            `{"name":"too-fast","every":"0s","task":{"type":"${l.type}"}}`,
            '{"name":"bad-task","every":"1s","task":{"type":5}}',
          ]),
        ),
    ],
    [
      "list-invalid",
      () =>
        q(
          `/v1/tasks?${rng.pick(["status=bogus", "limit=-5", "limit=abc", "cursor=%FF%FE", "type=**"])}`,
          "GET",
        ),
    ],
    [
      "batch-invalid",
      () =>
        q(
          "/v1/tasks:batch",
          "POST",
          rng.pick([
            "[]",
            '{"tasks":"x"}',
            '{"tasks":[]}',
            `{"tasks":[${valid},{"type":5}]}`,
            `{"tasks":[${valid}],"extra":1}`,
            `{"tasks":[${Array.from({ length: 1001 }, () => valid).join(",")}]}`,
            `{"tasks":[${valid},${valid.slice(0, 20)}`,
          ]),
        ),
    ],
    [
      "wait-invalid",
      () => q(`/v1/tasks?wait=${rng.pick(["abc", "-1s", "1y", "%FF", "1e9999"])}`, "POST", valid),
    ],
    [
      "compat-invalid",
      () => q("/tasks/enqueue", "POST", rng.pick(['{"x":1}', "{}", '{"task_type":"A B"}', "nope"])),
    ],
    [
      "compat-deep",
      () =>
        q("/tasks/enqueue", "POST", `{"task_type":"${l.type}","task_data":${deep(rng.int(300, 30_000))}}`),
    ],
    [
      "queue-patch-deep",
      () => q(`/v1/queues/${l.type}`, "PATCH", `{"rateLimit":${deep(rng.int(300, 30_000))}}`),
    ],
    [
      "schedule-deep",
      () =>
        q(
          "/v1/schedules",
          "POST",
          `{"name":"deep","every":"1m","task":{"type":"${l.type}","payload":${deep(rng.int(300, 30_000))}}}`,
        ),
    ],
    [
      "unknown-route",
      () => q(`/v1/${rng.pick(["taskz", "tasks/x/y/z", "../../etc/passwd", "%2e%2e/admin"])}`, "GET"),
    ],
    ["wrong-method", () => q("/v1/tasks", rng.pick(["PUT", "DELETE", "PATCH"]), valid)],
  ];
  const [variant, build] = rng.pick(cases);
  return [variant, build()];
}
