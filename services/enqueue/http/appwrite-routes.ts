import type { FastifyPluginAsync } from "fastify";
import { ErrorCodes, NotFoundError, SluiceError } from "../../../shared/errors.ts";
import type { AppwriteWebhook } from "../appwrite/config.ts";
import { tasksForDelivery, verifySignature } from "../appwrite/webhook.ts";
import type { EnqueueResult, Gateway } from "../gateway.ts";
import { parseJsonBody } from "../json-body.ts";

/** What the webhook route needs. */
export type AppwriteDeps = { gateway: Gateway; webhooks: ReadonlyMap<string, AppwriteWebhook> };

/**
 * `POST /v1/appwrite/webhooks/:name`: verify Appwrite's signature over the raw body, turn the
 * delivery's events into tasks by the webhook's rules, answer 202 as soon as they are stored.
 * Appwrite does not redeliver a failed webhook, so the answer must be fast and only 2xx once stored.
 * No API key: the signature is the authentication.
 */
export const appwriteRoutes: FastifyPluginAsync<AppwriteDeps> = async (app, deps) => {
  // Raw bytes for this route only (content-type parsers are scoped to this plugin): the signature is
  // over the body exactly as sent.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "buffer" }, (_req, body, done) => done(null, body));

  app.post<{ Params: { name: string } }>(
    "/v1/appwrite/webhooks/:name",
    { config: { scope: "public" } },
    async (req, reply) => {
      const w = deps.webhooks.get(req.params.name);
      if (!w) throw new NotFoundError(ErrorCodes.notFound, "no Appwrite webhook of that name is configured");
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const sig = req.headers["x-appwrite-webhook-signature"];
      if (!verifySignature(w, raw, typeof sig === "string" ? sig : undefined)) {
        throw new SluiceError(
          ErrorCodes.invalidSignature,
          sig === undefined ? "X-Appwrite-Webhook-Signature is missing" : "the signature does not match",
          { status: 401 },
        );
      }
      // fastify's parser is off here (raw bytes for the signature), so its refusals come from ours:
      // not UTF-8, not JSON, or a __proto__ / constructor.prototype key is a 400 invalid_json
      const body: unknown = raw.length === 0 ? null : parseJsonBody(raw);
      const tasks = tasksForDelivery(w, req.headers, raw, body);
      if (tasks.length === 0)
        return reply.code(200).send({ tasks: [], detail: "no rule matches these events" });
      const results: (EnqueueResult & { type: string })[] = await Promise.all(
        tasks.map(async (t) => ({ type: t.type, ...(await deps.gateway.enqueue(t, { transport: "http" })) })),
      );
      return reply.code(202).send({ tasks: results });
    },
  );
};
