/**
 * Appwrite Function (Node runtime) that hands event executions to Sluice and returns at once, so the
 * work runs outside Appwrite's execution time limits. Deploy it with an event trigger (for example
 * `databases.*.collections.mistakes.documents.*.create`); see ../README.md.
 *
 * Variables (Function settings → Variables):
 *   SLUICE_URL          base URL of the Sluice gateway, e.g. https://sluice.example.com (required)
 *   SLUICE_API_KEY      an API key with the `enqueue` scope (required when the gateway has auth on)
 *   SLUICE_TASK_TYPE    task type to enqueue, e.g. mistake.analyze (unless SLUICE_RULES is set)
 *   SLUICE_PRIORITY     urgent|high|normal|low|bulk (default normal)
 *   SLUICE_RULES        optional JSON [{"events": "pattern", "type": "t", "priority": "high"}]; `*` matches
 *                       one segment of the event name; the first matching rule wins
 *   SLUICE_TIMEOUT_MS   how long to wait for the gateway, ms (default 3000)
 *
 * The execution id (`x-appwrite-execution-id`) is the task's idempotency key: if Appwrite runs the same
 * execution twice, Sluice keeps one task.
 */

const PRIORITIES = ["urgent", "high", "normal", "low", "bulk"];

/** The function. `context` is Appwrite's: `{ req, res, log, error }`. */
export default async function forwardToSluice({ req, res, log, error }) {
  const env = process.env;
  const url = (env.SLUICE_URL || "").replace(/\/+$/, "");
  if (!url) {
    error("SLUICE_URL is not set");
    return res.json({ error: "SLUICE_URL is not set" }, 500);
  }
  const headers = req.headers || {};
  const event = headers["x-appwrite-event"] || "";
  const rule = pickRule(env, event);
  if (!rule) {
    log(`no rule for event ${event || "(none)"}; nothing enqueued`);
    return res.json({ ignored: true, event }, 200);
  }
  const executionId = headers["x-appwrite-execution-id"];
  const task = {
    type: rule.type,
    priority: rule.priority,
    payload: {
      source: "appwrite-function",
      event,
      trigger: headers["x-appwrite-trigger"] || null,
      userId: headers["x-appwrite-user-id"] || null,
      executionId: executionId || null,
      body: readBody(req),
    },
  };
  if (executionId) task.idempotencyKey = `appwrite-execution:${executionId}`;

  const timeoutMs = Number(env.SLUICE_TIMEOUT_MS) > 0 ? Number(env.SLUICE_TIMEOUT_MS) : 3000;
  let answer;
  try {
    answer = await fetch(`${url}/v1/tasks`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(env.SLUICE_API_KEY ? { authorization: `Bearer ${env.SLUICE_API_KEY}` } : {}),
      },
      body: JSON.stringify(task),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    error(
      `Sluice unreachable at ${url}: ${e && e.name === "TimeoutError" ? `no answer in ${timeoutMs} ms` : e}`,
    );
    return res.json({ error: "sluice_unreachable" }, 502);
  }
  const text = await answer.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: reported below as is
  }
  if (answer.status === 202) {
    log(`enqueued ${task.type} as ${body.id}${body.duplicate ? " (duplicate execution)" : ""}`);
    return res.json({ taskId: body.id, status: body.status, duplicate: body.duplicate === true }, 202);
  }
  error(
    `Sluice refused the task: ${answer.status} ${body && body.code ? `${body.code}: ${body.detail}` : text.slice(0, 200)}`,
  );
  // 4xx: our request is wrong (key, payload); 5xx: Sluice is unavailable — both fail the execution
  return res.json(
    { error: (body && body.code) || "sluice_error", status: answer.status },
    answer.status >= 500 ? 503 : answer.status,
  );
}

function pickRule(env, event) {
  const priority = PRIORITIES.includes(env.SLUICE_PRIORITY) ? env.SLUICE_PRIORITY : "normal";
  if (env.SLUICE_RULES) {
    const rules = JSON.parse(env.SLUICE_RULES);
    for (const r of rules) {
      const patterns = Array.isArray(r.events) ? r.events : [r.events];
      if (patterns.some((p) => matches(p, event))) {
        return { type: r.type, priority: PRIORITIES.includes(r.priority) ? r.priority : priority };
      }
    }
    return undefined;
  }
  return env.SLUICE_TASK_TYPE ? { type: env.SLUICE_TASK_TYPE, priority } : undefined;
}

function matches(pattern, event) {
  const p = String(pattern).split(".");
  const e = String(event).split(".");
  return p.length === e.length && p.every((seg, i) => seg === "*" || seg === e[i]);
}

function readBody(req) {
  try {
    if (req.bodyJson !== undefined) return req.bodyJson;
  } catch {
    // newer runtimes throw from bodyJson when the body is not JSON
  }
  const text = req.bodyText ?? req.body ?? "";
  if (typeof text !== "string") return text;
  if (text === "") return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
