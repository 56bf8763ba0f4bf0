import type { FastifyInstance } from "fastify";
import { z } from "zod";
import type { RouteScope } from "./auth.ts";
import { DOCS_PAGE } from "./docs-page.ts";
import { KNOWN_OPERATIONS, NAMED_SCHEMAS } from "./openapi-operations.ts";

/**
 * OpenAPI 3.1 for the whole HTTP API, generated at startup from the routes actually registered (an
 * `onRoute` hook sees every route, including those other modules add) and from zod schemas: request
 * bodies use the very schemas that validate them. A route documents itself with `config.openapi`;
 * the gateway's own routes are described in openapi-operations.ts; any other route still appears,
 * with a generic description, so the document never silently omits an endpoint.
 */

/** How one operation is described. */
export type OperationDoc = {
  summary: string;
  description?: string;
  tag: string;
  /** Path parameters, name → description. */
  params?: Record<string, string>;
  query?: z.ZodObject;
  body?: z.ZodType;
  /** Media type of the body (default application/json). */
  bodyType?: string;
  /** Status → description and schema (JSON unless `type` says otherwise). Errors are added from `errors`. */
  responses: Record<number, { description: string; schema?: z.ZodType; type?: string }>;
  /** Error statuses this operation may answer (problem+json). */
  errors?: number[];
};

declare module "fastify" {
  interface FastifyContextConfig {
    /** This route's OpenAPI description. */
    openapi?: OperationDoc;
  }
}

type RouteRecord = {
  method: string;
  url: string;
  doc: OperationDoc | undefined;
  scope: RouteScope | undefined;
};

const ERROR_TEXT: Record<number, string> = {
  400: "invalid request",
  401: "missing or invalid API key",
  403: "the key lacks the scope",
  404: "not found",
  409: "conflicts with the task's status",
  413: "body or payload too large",
  415: "not JSON",
  426: "WebSocket upgrade required",
  429: "too many (queue full or stream limit), see Retry-After",
  503: "NATS unavailable, see Retry-After",
};

/**
 * Start collecting routes (call before any route is added) and serve `/openapi.json` and `/docs`.
 * `authEnabled` adds the security schemes and per-operation requirements.
 */
export function installOpenApi(app: FastifyInstance, o: { authEnabled: boolean; version: string }): void {
  const routes: RouteRecord[] = [];
  app.addHook("onRoute", (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    for (const m of methods) {
      if (m === "HEAD" || m === "OPTIONS") continue;
      routes.push({ method: m, url: r.url, doc: r.config?.openapi, scope: r.config?.scope });
    }
  });
  let doc: string | undefined;
  app.get("/openapi.json", async (_req, reply) => {
    doc ??= JSON.stringify(buildDocument(routes, o));
    return reply.type("application/json; charset=utf-8").send(doc);
  });
  app.get("/docs", async (_req, reply) =>
    reply.type("text/html; charset=utf-8").header("content-security-policy", DOCS_CSP).send(DOCS_PAGE),
  );
}

/** The page is self-contained (inline script and style, nothing fetched but the API itself). */
const DOCS_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'";

/** Fastify's `/v1/tasks/:id` and `/v1/tasks::batch` as OpenAPI paths. */
export function openApiPath(url: string): string {
  return url
    .split("::")
    .map((part) => part.replace(/:([A-Za-z0-9_]+)/g, "{$1}"))
    .join(":");
}

function buildDocument(routes: RouteRecord[], o: { authEnabled: boolean; version: string }): unknown {
  const inputs = z.registry<{ id: string }>();
  const outputs = z.registry<{ id: string }>();
  for (const [schema, id, io] of NAMED_SCHEMAS) (io === "input" ? inputs : outputs).add(schema, { id });
  let anonymous = 0;
  const schemaRef = (s: z.ZodType, reg: typeof inputs, prefix: string) => {
    const known = reg.get(s);
    if (known) return { $ref: `#/components/schemas/${known.id}` };
    const id = `${prefix}${++anonymous}`;
    reg.add(s, { id });
    return { $ref: `#/components/schemas/${id}` };
  };
  const paths: Record<string, Record<string, unknown>> = {};
  const seen = new Set<string>();
  for (const r of routes) {
    const key = `${r.method} ${r.url}`;
    if (seen.has(key) || r.url === "*") continue;
    seen.add(key);
    const d = r.doc ?? KNOWN_OPERATIONS[key] ?? generic(r);
    const path = openApiPath(r.url);
    const op: Record<string, unknown> = { summary: d.summary, tags: [d.tag], operationId: operationId(r) };
    if (d.description) op.description = d.description;
    const params: unknown[] = [];
    for (const name of [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]!)) {
      params.push({
        name,
        in: "path",
        required: true,
        schema: { type: "string" },
        description: d.params?.[name],
      });
    }
    for (const [name, s] of Object.entries(d.query?.shape ?? {})) {
      const js = z.toJSONSchema(s as z.ZodType, {
        target: "draft-2020-12",
        io: "input",
        unrepresentable: "any",
      });
      const { $schema: _s, description, ...schema } = js as Record<string, unknown>;
      params.push({
        name,
        in: "query",
        required: !(s as z.ZodType).safeParse(undefined).success,
        schema,
        description,
      });
    }
    if (params.length > 0) op.parameters = params;
    if (d.body) {
      op.requestBody = {
        required: true,
        content: { [d.bodyType ?? "application/json"]: { schema: schemaRef(d.body, inputs, "Request") } },
      };
    }
    const responses: Record<string, unknown> = {};
    for (const [status, resp] of Object.entries(d.responses)) {
      responses[status] = {
        description: resp.description,
        ...(resp.schema || resp.type
          ? {
              content: {
                [resp.type ?? "application/json"]: resp.schema
                  ? { schema: schemaRef(resp.schema, outputs, "Response") }
                  : {},
              },
            }
          : {}),
      };
    }
    const scope = r.scope ?? defaultScope(r.method, key);
    const errors = new Set(d.errors ?? []);
    if (o.authEnabled && scope !== "public") {
      errors.add(401).add(403);
      op.security = [{ bearer: [] }, { apiKey: [] }];
      op["x-sluice-scope"] = scope;
    } else {
      op.security = [];
    }
    for (const status of [...errors].sort()) {
      responses[String(status)] = {
        description: ERROR_TEXT[status] ?? "error",
        content: { "application/problem+json": { schema: { $ref: "#/components/schemas/Problem" } } },
      };
    }
    op.responses = responses;
    paths[path] ??= {};
    paths[path][r.method.toLowerCase()] = op;
  }
  const schemas = {
    ...components(inputs, "input", "In"),
    ...components(outputs, "output", "Out"),
  };
  return {
    openapi: "3.1.0",
    info: {
      title: "Sluice enqueue gateway",
      version: o.version,
      description:
        "Priority task processing on NATS JetStream. Errors are application/problem+json with a stable `code`. " +
        "See docs/api.md in the repository for the full guide.",
    },
    paths,
    components: {
      schemas,
      ...(o.authEnabled
        ? {
            securitySchemes: {
              bearer: { type: "http", scheme: "bearer", description: "API key as a bearer token" },
              apiKey: { type: "apiKey", in: "header", name: "X-API-Key" },
            },
          }
        : {}),
    },
  };
}

function defaultScope(method: string, key: string): RouteScope {
  if (key === "POST /v1/tasks") return "enqueue";
  return method === "GET" ? "read" : "admin";
}

function generic(r: RouteRecord): OperationDoc {
  return {
    summary: `${r.method} ${openApiPath(r.url)}`,
    tag: r.url.split("/")[2] ?? "other",
    responses: { 200: { description: "success (see docs/api.md)" } },
  };
}

function operationId(r: RouteRecord): string {
  const words = openApiPath(r.url)
    .replace(/[{}]/g, "")
    .split(/[/:._-]+/)
    .filter(Boolean)
    .map((w, i) => (i === 0 ? w : w[0]!.toUpperCase() + w.slice(1)));
  return r.method.toLowerCase() + words.map((w) => w[0]!.toUpperCase() + w.slice(1)).join("");
}

/**
 * A registry's schemas as OpenAPI components. zod puts schemas shared between components (the
 * recursive JSON value) under `__shared`; they are hoisted to components of their own.
 */
function components(
  reg: z.core.$ZodRegistry<{ id: string }>,
  io: "input" | "output",
  prefix: string,
): Record<string, unknown> {
  const out = z.toJSONSchema(reg, {
    target: "draft-2020-12",
    io,
    unrepresentable: "any",
    uri: (id) => `#/components/schemas/${id}`,
  }).schemas;
  const result: Record<string, unknown> = {};
  const sharedName = (n: string) => `${prefix}Shared${n.replace(/^schema/, "")}`;
  const fix = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(fix);
    if (v && typeof v === "object") {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        if (k === "$schema" || k === "$id") continue;
        if (k === "$ref" && typeof x === "string") {
          const m =
            /^#\/components\/schemas\/__shared#\/\$defs\/(.+)$/.exec(x) ?? /^#\/\$defs\/(.+)$/.exec(x);
          o[k] = m ? `#/components/schemas/${sharedName(m[1]!)}` : x;
        } else o[k] = fix(x);
      }
      return o;
    }
    return v;
  };
  for (const [id, s] of Object.entries(out)) {
    if (id === "__shared") {
      for (const [n, d] of Object.entries((s as { $defs?: Record<string, unknown> }).$defs ?? {}))
        result[sharedName(n)] = fix(d);
    } else result[id] = fix(s);
  }
  return result;
}
