import { isUtf8 } from "node:buffer";
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  LogController,
} from "fastify";
import { register } from "prom-client";
import { ErrorCodes, ValidationError } from "../../../shared/errors.ts";
import type { Logger } from "../../../shared/logger.ts";
import { ENVELOPE_BYTES } from "../config.ts";
import type { TaskControl } from "../control.ts";
import type { DeadLetters } from "../dead-letters.ts";
import type { Gateway } from "../gateway.ts";
import { observeHttpRequest, recordRejected } from "../metrics.ts";
import { type ApiDeps, installApi } from "./api.ts";
import { PROBLEM_CONTENT_TYPE, type ProblemResponse, problem, toProblem } from "./problem.ts";
import { taskRoutes } from "./routes.ts";
import { controlRoutes } from "./tasks-control.ts";

/** What the HTTP API is built from. */
export type AppDeps = {
  gateway: Gateway;
  /** Readiness: NATS connected and the streams present. */
  isReady: () => boolean;
  log: Logger;
  /** Largest task payload, bytes; the body limit adds the envelope to it. */
  maxPayloadBytes: number;
  /** How long a request may take to arrive, ms. */
  requestTimeoutMs: number;
  /** Cancel/pause/resume of single tasks, and the dead-letter queue (routes off when absent). */
  control?: TaskControl;
  deadLetters?: DeadLetters;
  /** Serve `GET /metrics` (Prometheus text format) on this API (default true). */
  metrics?: boolean;
  /** API keys, CORS, OpenAPI, events, batch/list/retry, workers, compatibility and Appwrite routes (http/api.ts). */
  api?: ApiDeps;
};

/** The route whose refusals count as rejected tasks. */
const ENQUEUE_ROUTE = "/v1/tasks";

/** Build the enqueue HTTP API (not listening; `app.listen` or `app.inject` it). */
export function buildApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    // widened to fastify's logger type, which pino's satisfies but not structurally in fastify's typings
    loggerInstance: deps.log.child({ component: "http" }) as FastifyBaseLogger,
    // one line per request would cost more than the enqueue itself at full rate; failures are logged
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.maxPayloadBytes + ENVELOPE_BYTES,
    requestTimeout: deps.requestTimeoutMs,
    // Node swaps the two timeouts when headersTimeout (default 60 s) exceeds requestTimeout, so without
    // this a request body could take 60 s to arrive; and it checks them only every 30 s by default
    http: {
      headersTimeout: deps.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, deps.requestTimeoutMs),
    },
    return503OnClosing: true,
    // task ids may be up to 256 characters (KV keys); the default of 100 would 404 the longer ones
    routerOptions: { maxParamLength: 300 },
    // Malformed URLs and the like never reach a route: answer them as problems too.
    frameworkErrors: (err, _req, reply) => void sendProblem(reply, toProblem(err)),
  });
  // Only JSON: a text/plain body would reach the handler as a string and read as a schema error.
  app.removeContentTypeParser("text/plain");
  // JSON is UTF-8 (RFC 8259). The stock parser decodes invalid bytes to U+FFFD, so a payload would be
  // stored as something the caller never sent: check the raw bytes, then parse as before.
  const parseJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (req, body, done) => {
    const raw = body as Buffer;
    if (!isUtf8(raw)) {
      done(new ValidationError(ErrorCodes.invalidJson, "body is not valid UTF-8"), undefined);
      return;
    }
    parseJson(req, raw.toString("utf8"), done);
  });
  const waiter = deps.api ? installApi(app, deps.api) : undefined;

  app.setErrorHandler((err, req, reply) => {
    const p = toProblem(err);
    if (req.method === "POST" && req.routeOptions.url === ENQUEUE_ROUTE) recordRejected(p.body.code);
    if (p.body.code === ErrorCodes.internal) req.log.error({ err }, "request failed");
    else if (p.status >= 500) req.log.debug({ code: p.body.code, detail: p.body.detail }, "request refused");
    return sendProblem(reply, p);
  });
  app.setNotFoundHandler((req, reply) =>
    sendProblem(
      reply,
      problem(ErrorCodes.notFound, 404, `no route for ${req.method} ${req.url.slice(0, 200)}`),
    ),
  );

  // A request in flight when close() begins is answered, but over keep-alive its connection would
  // then sit idle until keepAliveTimeout (72 s): close() ends only idle connections it finds at the
  // start, so shutdown would hang. While closing, every answer ends its connection.
  let closing = false;
  app.addHook("preClose", (done) => {
    closing = true;
    done();
  });
  app.addHook("onSend", (_req, reply, payload, done) => {
    if (closing) reply.header("connection", "close");
    done(null, payload);
  });

  // Labelled by the route pattern, never the raw URL: `/v1/tasks/:id` is one series, not one per task.
  app.addHook("onResponse", (req, reply, done) => {
    observeHttpRequest(req.routeOptions.url, req.method, reply.statusCode, reply.elapsedTime / 1000);
    done();
  });

  app.get("/healthz", async () => ({ status: "ok" }));
  if (deps.metrics !== false) {
    app.get("/metrics", async (_req, reply) =>
      reply.type(register.contentType).send(await register.metrics()),
    );
  }
  app.get("/readyz", async (_req, reply) => {
    if (deps.isReady()) return { status: "ready" };
    return sendProblem(
      reply,
      problem(ErrorCodes.unavailable, 503, "NATS is not connected or the streams are missing", {
        headers: { "retry-after": "1" },
      }),
    );
  });
  app.register(taskRoutes, { gateway: deps.gateway, waiter });
  if (deps.control && deps.deadLetters)
    app.register(controlRoutes, { control: deps.control, deadLetters: deps.deadLetters });
  return app;
}

/** Send a problem response (used by the error and not-found handlers). */
export function sendProblem(reply: FastifyReply, p: ProblemResponse): FastifyReply {
  return reply.code(p.status).headers(p.headers).type(PROBLEM_CONTENT_TYPE).send(p.body);
}
