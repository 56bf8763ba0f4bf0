import type { FastifyInstance, FastifyRequest } from "fastify";
import { ErrorCodes, SluiceError } from "../../../shared/errors.ts";
import type { Logger } from "../../../shared/logger.ts";
import { type ApiKey, findKey, hasScope, type Scope } from "../auth/keys.ts";

/** What a route needs: a key with this scope, or nothing (`public`: it authenticates itself, e.g. by signature). */
export type RouteScope = Scope | "public";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Scope a key needs for this route (default: `read` for GET/HEAD, `admin` for anything else). */
    scope?: RouteScope;
    /** Accept the key as `?access_token=` too: browsers cannot set headers on EventSource/WebSocket. */
    queryToken?: boolean;
  }
}

/** Options of {@link installAuth}. */
export type AuthOptions = {
  keys: readonly ApiKey[];
  /** Paths answered without a key; `/docs` also covers `/docs/…`. */
  exemptPaths: readonly string[];
  log: Logger;
};

/**
 * Routes other modules register without a `config.scope`, by `METHOD url-pattern`. Everything not here
 * and without its own scope needs `read` for GET/HEAD and `admin` otherwise: a control route added
 * later is closed to producer keys until someone decides otherwise.
 */
const KNOWN_SCOPES: Record<string, RouteScope> = {
  "POST /v1/tasks": "enqueue",
};

/**
 * Require an API key on every request except the exempt paths and CORS preflights: 401 without a
 * valid key, 403 when the key lacks the route's scope. Keys come as `Authorization: Bearer <key>` or
 * `X-API-Key: <key>`.
 */
export function installAuth(app: FastifyInstance, o: AuthOptions): void {
  // Registered as a plugin that shares the root context (what fastify-plugin does): it then runs after
  // the CORS and WebSocket plugins registered before it, so a 401 still carries CORS headers and a
  // refused WebSocket upgrade has its socket closed by the WebSocket plugin.
  const plugin = async (root: FastifyInstance) => addAuthHook(root, o);
  Object.assign(plugin, { [Symbol.for("skip-override")]: true });
  app.register(plugin);
}

function addAuthHook(app: FastifyInstance, o: AuthOptions): void {
  if (o.keys.length === 0) {
    o.log.warn("AUTH_ENABLED is on and no API keys are configured: every API request will be refused (401)");
  }
  const exempt = new Set(o.exemptPaths);
  const exemptPrefixes = o.exemptPaths.map((p) => `${p.replace(/\/$/, "")}/`);
  app.addHook("onRequest", async (req, reply) => {
    if (req.method === "OPTIONS") return;
    const path = pathOf(req.url);
    if (exempt.has(path) || exemptPrefixes.some((p) => path.startsWith(p))) return;
    const scope = routeScope(req);
    if (scope === "public") return;
    const presented = presentedKey(req);
    const key = presented === undefined ? undefined : findKey(o.keys, presented);
    if (!key) {
      reply.header("www-authenticate", 'Bearer realm="sluice"');
      throw new SluiceError(
        ErrorCodes.unauthorized,
        presented === undefined
          ? "an API key is required (Authorization: Bearer <key> or X-API-Key)"
          : "the API key is not valid",
        { status: 401 },
      );
    }
    if (!hasScope(key, scope)) {
      throw new SluiceError(ErrorCodes.forbidden, `the API key ${key.name} lacks the ${scope} scope`, {
        status: 403,
      });
    }
  });
}

/** The scope a request's route needs. */
export function routeScope(req: FastifyRequest): RouteScope {
  const own = req.routeOptions.config?.scope;
  if (own) return own;
  const known = KNOWN_SCOPES[`${req.method} ${req.routeOptions.url ?? ""}`];
  if (known) return known;
  return req.method === "GET" || req.method === "HEAD" ? "read" : "admin";
}

function presentedKey(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === "string") {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return m ? m[1] : auth.trim() || undefined;
  }
  const x = req.headers["x-api-key"];
  if (typeof x === "string" && x !== "") return x;
  if (req.routeOptions.config?.queryToken) {
    const q = (req.query as Record<string, unknown> | undefined)?.access_token;
    if (typeof q === "string" && q !== "") return q;
  }
  return undefined;
}

function pathOf(url: string): string {
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}
